//! The optional sandbox: a processor run under bubblewrap (`bwrap`), the way glycin confines
//! GNOME's image loaders, whoever runs the host (a user, or root, as CI and containers do).
//!
//! Inside, the processor has:
//! - its own pid namespace (it sees and can signal only its own processes) and its own
//!   session (no terminal to type into);
//! - no network (its own network namespace), its own IPC and host name;
//! - a read-only view of the system, a private `/tmp` (and `/var/tmp`, `/run`, `/dev`), no
//!   home directory (an empty one in its place);
//! - no capabilities and no new privileges; started by root, it runs as `nobody` (the guard's
//!   `--exec-as`, below), so root's files are not its files;
//! - a system-call filter (`seccomp.rs`) refusing mount, ptrace, keyctl, bpf, new namespaces
//!   and the like;
//! - only the descriptors offload passes (stdio, the progress pipe).
//!
//! It dies with the guard above it (`--die-with-parent`), which kills whatever it leaves.
//!
//! The processor's own directory stays visible when it lies in what the sandbox hides (the
//! home, `/tmp`, ...), and so do its interpreter and packages (`needs.rs`) and the paths a
//! job binds (`Sandbox::bind`), read-only.

mod needs;
mod seccomp;

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::job::Sandbox;

/// Who a processor sandboxed by root runs as: `nobody` and `nogroup` (65534, the overflow
/// ids of every Linux distribution).
const UNPRIVILEGED: u32 = 65534;

/// Whether this process runs as root (the sandbox then drops to [`UNPRIVILEGED`]).
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Where `bwrap` is, and whether it can make a sandbox here; asked once per process.
pub(crate) fn bwrap() -> Result<&'static Path, &'static str> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let path = which::which("bwrap").map_err(|_| {
                "the sandbox needs bubblewrap, which is not installed: install it \
                 (Debian, Ubuntu: apt install bubblewrap; Fedora: dnf install bubblewrap)"
                    .to_owned()
            })?;
            // A sandbox that cannot be made here (no user namespaces for this user) says so
            // on stderr: try once.
            let mut probe = std::process::Command::new(&path);
            if !is_root() {
                probe.arg("--unshare-user-try");
            }
            let probe = probe
                .args([
                    "--unshare-pid",
                    "--unshare-net",
                    "--ro-bind",
                    "/",
                    "/",
                    "--",
                    "/bin/true",
                ])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .output();
            match probe {
                Ok(out) if out.status.success() => Ok(path),
                Ok(out) => Err(format!(
                    "the sandbox cannot be made here: bwrap says {:?}; enable unprivileged user \
                     namespaces (sysctl kernel.unprivileged_userns_clone=1, or on Ubuntu \
                     kernel.apparmor_restrict_unprivileged_userns=0) or install bwrap setuid",
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(err) => Err(format!("cannot run {}: {err}", path.display())),
            }
        })
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(String::as_str)
}

/// The command that runs a processor in a sandbox, and the descriptors its guard passes on.
pub(crate) struct Wrapped {
    /// bwrap.
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Descriptors bwrap reads or the sandbox needs, which keep their numbers: the filter's
    /// pipe (ours, closed once the child has its copy) and, for root, the guard's memfd.
    pub pass: Vec<RawFd>,
    /// Our copies of descriptors in `pass` to close after the spawn.
    pub owned: Vec<OwnedFd>,
}

/// The command that runs `program args` in `sandbox` with the environment `env`: bwrap's path
/// and its arguments, with `--info-fd info_fd` so that bwrap says the sandbox's pid.
pub(crate) fn wrap(
    sandbox: &Sandbox,
    program: &Path,
    args: &[OsString],
    env: &[(OsString, OsString)],
    info_fd: RawFd,
) -> Result<Wrapped, String> {
    let bwrap = bwrap()?;
    let root = is_root();
    // bwrap starts the processor in / : a relative path means the host's directory.
    let program = std::path::absolute(program)
        .map_err(|err| format!("cannot find {}: {err}", program.display()))?;
    let mut out: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| out.extend(items.iter().map(OsString::from));
    if !root {
        // A user namespace lets an unprivileged user make the others; root needs none, and
        // one would map the sandbox's user to root outside.
        push(&["--unshare-user-try"]);
    }
    push(&[
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        // Private and writable by whoever the processor runs as (root's runs as nobody):
        // its /tmp, /var/tmp and /dev/shm (Python's multiprocessing needs the last).
        "--perms",
        "01777",
        "--tmpfs",
        "/tmp",
        "--perms",
        "01777",
        "--tmpfs",
        "/var/tmp",
        "--perms",
        "01777",
        "--tmpfs",
        "/dev/shm",
        "--tmpfs",
        "/run",
    ]);
    if !root {
        // Root's are dropped inside, by the guard's --exec-as, which needs them until then.
        push(&["--cap-drop", "ALL"]);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        // A home that does not exist (nobody's /nonexistent) has nothing to hide, and bwrap
        // could not make its mount point in the read-only root.
        .filter(|h| h.is_absolute() && h != Path::new("/") && h.is_dir());
    if let Some(home) = &home {
        out.extend([
            "--perms".into(),
            "01777".into(),
            "--tmpfs".into(),
            home.clone().into_os_string(),
        ]);
    }
    // What stays visible in what the sandbox hides (the home, /tmp, /var/tmp, /run): what
    // the processor needs to run, and the job's binds.
    let mut hidden: Vec<PathBuf> = [Path::new("/tmp"), Path::new("/var/tmp"), Path::new("/run")]
        .into_iter()
        .map(Path::to_path_buf)
        .chain(home.clone())
        .collect();
    // Root's own home, whatever HOME says: root's processor runs as nobody, who could not
    // pass through it to an interpreter installed there (pyenv under /root).
    let root_home = Path::new("/root");
    if root && root_home.is_dir() && !hidden.iter().any(|h| h == root_home) {
        out.extend([
            "--perms".into(),
            "0755".into(),
            "--tmpfs".into(),
            root_home.into(),
        ]);
        hidden.push(root_home.to_path_buf());
    }
    let needs = needs::needs(&program, env, &hidden)?;
    let mut binds: Vec<PathBuf> = sandbox.binds.clone();
    binds.extend(needs.binds);
    binds.sort();
    binds.dedup();
    let binds: Vec<PathBuf> = binds
        .into_iter()
        .map(|path| path.canonicalize().unwrap_or(path))
        .collect();
    // The directories leading to a bind in what the sandbox hides, made traversable by
    // anyone (bwrap would make them 0700, root's: a processor that root's sandbox runs as
    // nobody could not reach its own interpreter).
    let mut leading: Vec<PathBuf> = Vec::new();
    for path in binds.iter().filter(|p| p.exists()) {
        let Some(top) = hidden.iter().find(|h| path.starts_with(h)) else {
            continue;
        };
        let mut at = top.clone();
        let below: Vec<_> = path
            .strip_prefix(top)
            .map(|rest| rest.components().collect())
            .unwrap_or_default();
        for part in below.iter().take(below.len().saturating_sub(1)) {
            at.push(part);
            if !leading.contains(&at) {
                leading.push(at.clone());
            }
        }
    }
    leading.sort_by_key(|p| p.components().count());
    for dir in leading {
        out.extend([
            "--perms".into(),
            "0755".into(),
            "--dir".into(),
            dir.into_os_string(),
        ]);
    }
    for path in binds {
        out.extend([
            "--ro-bind-try".into(),
            path.clone().into_os_string(),
            path.into_os_string(),
        ]);
    }
    let (filter_read, filter_write) = super::child::pipe()
        .map_err(|err| format!("cannot create a pipe for the system-call filter: {err}"))?;
    {
        use std::io::Write;
        // A few kilobytes: the pipe holds them all, so this cannot block.
        std::fs::File::from(filter_write)
            .write_all(seccomp::filter_bytes())
            .map_err(|err| format!("cannot pass the system-call filter: {err}"))?;
    }
    let mut pass = vec![filter_read.as_raw_fd()];
    out.extend(["--chdir".into(), "/".into()]);
    out.extend(["--info-fd".into(), info_fd.to_string().into()]);
    out.extend([
        "--add-seccomp-fd".into(),
        filter_read.as_raw_fd().to_string().into(),
    ]);
    out.push("--".into());
    if root {
        let guard = super::guard::executable().map_err(|err| err.to_string())?;
        pass.push(guard);
        let id = UNPRIVILEGED.to_string();
        out.extend([
            format!("/proc/self/fd/{guard}").into(),
            "--exec-as".into(),
            id.clone().into(),
            id.into(),
            guard.to_string().into(),
        ]);
    }
    out.push(needs.program.into_os_string());
    out.extend(needs.leading);
    out.extend(args.iter().cloned());
    Ok(Wrapped {
        program: bwrap.to_path_buf(),
        args: out,
        pass,
        owned: vec![filter_read],
    })
}

/// The processor's pid from bwrap's `--info-fd` JSON (`"child-pid": N`).
pub(crate) fn child_pid(info: &str) -> Option<u32> {
    let rest = info.split_once("\"child-pid\"")?.1;
    let digits: String = rest
        .trim_start_matches(|c: char| c == ':' || c.is_whitespace())
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Whether a sandboxed job's stderr says that bwrap itself failed (it could not make the
/// sandbox or execute the processor, and exited 1): its message, for a `could_not_start`.
pub(crate) fn launch_failure(code: Option<i32>, stderr_tail: &str) -> Option<String> {
    if !matches!(code, Some(1 | 127)) {
        return None;
    }
    stderr_tail
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("bwrap: ") || l.starts_with("offload-sandbox: "))
        .map(|l| {
            format!(
                "the sandbox could not start the processor: {}",
                with_error_text(l.trim())
            )
        })
}

/// The guard's `--exec-as` says "(errno N)": the system's words for N instead.
fn with_error_text(line: &str) -> String {
    let Some((said, rest)) = line.rsplit_once(" (errno ") else {
        return line.to_owned();
    };
    match rest.strip_suffix(')').and_then(|n| n.parse::<i32>().ok()) {
        Some(errno) => format!("{said}: {}", std::io::Error::from_raw_os_error(errno)),
        None => line.to_owned(),
    }
}

/// A sandboxed processor's end as bwrap reports it: death by signal N is exit code 128 + N.
pub(crate) fn unwrap_status(code: Option<i32>, signal: Option<i32>) -> (Option<i32>, Option<i32>) {
    match code {
        Some(code) if (129..=128 + 64).contains(&code) => (None, Some(code - 128)),
        _ => (code, signal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_pid_is_read_from_bwrap_info() {
        let info = "{\n    \"child-pid\": 8307,\n    \"mnt-namespace\": 4026532177\n}\n";
        assert_eq!(child_pid(info), Some(8307));
        assert_eq!(child_pid("{}"), None);
    }

    #[test]
    fn the_guards_error_numbers_are_said_in_words() {
        let said = launch_failure(Some(127), "offload-sandbox: cannot execute /x (errno 13)\n")
            .expect("a launch failure");
        assert!(
            said.ends_with("cannot execute /x: Permission denied (os error 13)"),
            "{said}"
        );
        assert_eq!(
            launch_failure(Some(3), "offload-sandbox: x (errno 1)"),
            None
        );
    }

    #[test]
    fn bwraps_signal_codes_become_signals() {
        assert_eq!(unwrap_status(Some(139), None), (None, Some(11)));
        assert_eq!(unwrap_status(Some(3), None), (Some(3), None));
        assert_eq!(unwrap_status(None, Some(9)), (None, Some(9)));
    }
}
