//! The optional sandbox: a processor run under bubblewrap (`bwrap`), the way glycin confines
//! GNOME's image loaders.
//!
//! Inside, the processor has no network (its own network namespace), a read-only view of the
//! system, a private `/tmp` (and `/var/tmp`, `/run`), no home directory (an empty one in its
//! place), its own IPC and host name, and only the descriptors offload passes (stdio, the
//! progress pipe). It dies with the guard above it (`--die-with-parent`). It keeps the host's
//! process-ID namespace, so that its pid means the same to the host, and the guard above it
//! still kills whatever it leaves behind.
//!
//! The processor's own directory stays visible when it lies in what the sandbox hides (the
//! home, `/tmp`, ...), and so do the paths a job binds (`Sandbox::bind`), read-only.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::job::Sandbox;

/// Where `bwrap` is, and whether it can make a sandbox here; asked once per process.
fn bwrap() -> Result<&'static Path, &'static str> {
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
            let probe = std::process::Command::new(&path)
                .args(["--ro-bind", "/", "/", "--unshare-net", "--", "/bin/true"])
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

/// The command that runs `program args` in `sandbox`: bwrap's path and its arguments, with
/// `--info-fd info_fd` so that bwrap says the processor's pid.
pub(crate) fn wrap(
    sandbox: &Sandbox,
    program: &Path,
    args: &[OsString],
    info_fd: i32,
) -> Result<(PathBuf, Vec<OsString>), String> {
    let bwrap = bwrap()?;
    let mut out: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| out.extend(items.iter().map(OsString::from));
    push(&[
        "--unshare-user-try",
        "--unshare-ipc",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
        "--tmpfs",
        "/var/tmp",
        "--tmpfs",
        "/run",
    ]);
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute() && h != Path::new("/"));
    if let Some(home) = &home {
        out.extend(["--tmpfs".into(), home.clone().into_os_string()]);
    }
    // What stays visible in what the sandbox hides (the home, /tmp, /var/tmp, /run): the
    // processor's own directory, and the job's binds.
    let hidden: Vec<PathBuf> = [Path::new("/tmp"), Path::new("/var/tmp"), Path::new("/run")]
        .into_iter()
        .map(Path::to_path_buf)
        .chain(home.clone())
        .collect();
    let mut binds: Vec<PathBuf> = sandbox.binds.clone();
    if let Some(dir) = program
        .canonicalize()
        .ok()
        .as_deref()
        .and_then(Path::parent)
    {
        if hidden.iter().any(|h| dir.starts_with(h)) {
            binds.push(dir.to_path_buf());
        }
    }
    for path in binds {
        let path = path.canonicalize().unwrap_or(path);
        out.extend([
            "--ro-bind-try".into(),
            path.clone().into_os_string(),
            path.into_os_string(),
        ]);
    }
    out.extend(["--chdir".into(), "/".into()]);
    out.extend(["--info-fd".into(), info_fd.to_string().into()]);
    out.push("--".into());
    out.push(program.as_os_str().to_owned());
    out.extend(args.iter().cloned());
    Ok((bwrap.to_path_buf(), out))
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
    if code != Some(1) {
        return None;
    }
    stderr_tail
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("bwrap: "))
        .map(|l| format!("the sandbox could not start the processor: {}", l.trim()))
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
    fn bwraps_signal_codes_become_signals() {
        assert_eq!(unwrap_status(Some(139), None), (None, Some(11)));
        assert_eq!(unwrap_status(Some(3), None), (Some(3), None));
        assert_eq!(unwrap_status(None, Some(9)), (None, Some(9)));
    }
}
