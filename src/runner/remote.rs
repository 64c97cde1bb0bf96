//! Running a processor through a launcher (`crate::launcher`): the `srun` or `ssh` command
//! that starts it on the remote side below `launch.sh`, what that wrapper says on stderr, how
//! a graceful stop reaches the remote process, and how the launcher's own failures are told
//! apart from the processor's.
//!
//! The local guard runs `srun` or `ssh` as it would run a processor, so the host's side is
//! unchanged: the pipes, the poll loop, the hard kill (SIGKILL to srun or ssh) and what dies
//! with the host. Only these differ:
//! - a graceful stop: SIGTERM to srun would make it SIGKILL the task at once, and ssh forwards
//!   no signal, so a stop sends `scancel --signal=TERM JOB.STEP` or `ssh HOST kill -TERM PID`
//!   once the wrapper has said which step or pid it is (before that, it kills). Over ssh the
//!   job's connection is a control master (`ControlMaster=yes`, a socket of its own in
//!   [`socket_dir`]), and the stop is a second channel over it: no new TCP connection, key
//!   exchange or authentication. The grace period starts once the stop command has ended
//!   ([`Delivery`]), so a slow network or a loaded host does not eat it;
//! - after a hard kill, Slurm kills a step whose srun died, and over ssh the wrapper's watcher
//!   kills the processor's group once the connection is gone;
//! - the peak memory and the resource limits of the host's kernel do not apply (Slurm gets
//!   `--mem` for a memory limit; an ssh host gets none);
//! - a launch that fails (no step, no connection, no processor on that host) is
//!   [`FailureKind::LaunchFailed`], with srun's or ssh's words; a host that ssh cannot reach is
//!   marked down, and the job runs on another.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::job::Job;
use crate::launcher::{self, Launcher};
use crate::outcome::{FailureKind, JobError};

/// The remote-side wrapper, without its comment lines (they would travel with every job).
fn script() -> &'static str {
    static SCRIPT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| {
        include_str!("launch.sh")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// What the wrapper's lines on stderr start with.
const MARKER: &[u8] = b"offload-launch: ";

/// How long a remote stop command (`scancel`, `ssh HOST kill`) may take; a stop that has not
/// arrived by then is given up, and the grace period runs from then.
pub(super) const STOP_COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

/// One process started through a launcher: its place, and what its wrapper said.
pub(crate) struct Remote {
    launcher: Arc<Launcher>,
    host: usize,
    host_name: String,
    /// Over ssh: the socket through which the job's connection carries its stop.
    control: Option<ControlSocket>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// "started HOST PID [JOB.STEP]".
    started: Option<Started>,
    /// "ended CODE" (ssh).
    ended: Option<i32>,
    /// "unavailable HOST: WHY".
    unavailable: Option<String>,
    /// The launch failed in a way that takes the host down.
    host_down: bool,
    /// srun's own last lines.
    said: Vec<String>,
}

#[derive(Clone)]
struct Started {
    host: String,
    pid: String,
    step: Option<String>,
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.launcher.release(self.host);
    }
}

impl Remote {
    /// Takes a place on one of the launcher's hosts, or says none is up.
    pub(super) fn place(launcher: &Arc<Launcher>) -> Result<Arc<Self>, JobError> {
        let Some((host, host_name)) = launcher.place() else {
            return Err(JobError::new(
                FailureKind::LaunchFailed,
                launcher.all_down_message(),
            ));
        };
        let control = launcher
            .slurm_job()
            .is_none()
            .then(ControlSocket::create)
            .flatten();
        Ok(Arc::new(Self {
            launcher: launcher.clone(),
            host,
            host_name,
            control,
            state: Mutex::new(State::default()),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The command that runs `job`'s processor with `args` there: `srun` or `ssh`, its
    /// arguments, and its environment (the host's own, which srun passes on to the step).
    pub(super) fn command(&self, job: &Job, args: &[OsString]) -> (PathBuf, Vec<OsString>) {
        let program = launcher::program(&self.launcher);
        let processor = job.processor.remote_spec();
        let mut out: Vec<OsString> = Vec::new();
        if self.launcher.slurm_job().is_some() {
            out.extend(["--exact", "-N1", "-n1", "--quiet", "--unbuffered"].map(OsString::from));
            out.push(format!("--job-name=offload-{}", job.processor.name()).into());
            if let Some(bytes) = job.limits.max_memory_bytes {
                out.push(format!("--mem={}M", bytes.div_ceil(1 << 20).max(1)).into());
            }
            out.extend(self.launcher.args().iter().cloned());
            out.extend(["sh", "-c", script(), "offload-launch", "slurm"].map(OsString::from));
            out.push(processor);
            out.extend(args.iter().cloned());
            // srun passes its environment on to the step: the job's settings go there.
            return (program, out);
        }
        out.extend(
            [
                "-T",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "ServerAliveInterval=10",
                "-o",
                "ServerAliveCountMax=3",
            ]
            .map(OsString::from),
        );
        if let Some(control) = &self.control {
            // This connection alone, in the foreground (so that killing this ssh drops it):
            // ControlPersist would fork a master that outlives it. Before the caller's
            // arguments, as ssh takes the first value it is given.
            out.extend(
                ["-o", "ControlMaster=yes", "-o", "ControlPersist=no", "-o"].map(OsString::from),
            );
            out.push(control.option());
        }
        out.extend(self.launcher.args().iter().cloned());
        out.push("--".into());
        out.push(self.host_name.clone().into());
        // One string for the remote shell: exec env K=V... sh -c SCRIPT offload-launch ssh P A...
        let mut remote: Vec<u8> = b"exec env".to_vec();
        for (key, value) in &job.env {
            let mut pair = key.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            remote.push(b' ');
            remote.extend(quote(&pair));
        }
        remote.extend_from_slice(b" sh -c ");
        remote.extend(quote(script().as_bytes()));
        remote.extend_from_slice(b" offload-launch ssh ");
        remote.extend(quote(processor.as_bytes()));
        for arg in args {
            remote.push(b' ');
            remote.extend(quote(arg.as_bytes()));
        }
        out.push(OsString::from_vec(remote));
        (program, out)
    }

    /// Takes one of the wrapper's stderr lines (without the marker).
    fn note(&self, line: &str) {
        let mut state = self.lock();
        if let Some(rest) = line.strip_prefix("started ") {
            let mut words = rest.split_whitespace();
            let host = words.next().unwrap_or_default().to_owned();
            let pid = words.next().unwrap_or_default().to_owned();
            let step = words.next().filter(|s| *s != ".").map(str::to_owned);
            state.started = Some(Started { host, pid, step });
        } else if let Some(rest) = line.strip_prefix("ended ") {
            state.ended = rest.trim().parse().ok();
        } else if let Some(rest) = line.strip_prefix("unavailable ") {
            state.unavailable = Some(rest.trim().to_owned());
        }
    }

    /// Takes one of srun's own lines.
    fn said(&self, line: &str) {
        let mut state = self.lock();
        if state.said.len() >= 8 {
            state.said.remove(0);
        }
        state.said.push(line.to_owned());
    }

    /// Where it ran: the ssh host as the caller named it, or the Slurm node the wrapper named.
    pub(crate) fn host(&self) -> String {
        if self.launcher.slurm_job().is_none() {
            return self.host_name.clone();
        }
        self.lock()
            .started
            .as_ref()
            .map(|s| s.host.clone())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| self.host_name.clone())
    }

    /// Asks the remote processor to stop (SIGTERM there) from a thread of its own, and says
    /// when the stop has arrived; `None` when the wrapper has not said where it runs yet (or
    /// no thread could be started), and the caller should stop the local srun or ssh instead.
    pub(super) fn terminate(&self) -> Option<Delivery> {
        let started = self.lock().started.clone()?;
        let mut command = match (&started.step, self.launcher.slurm_job()) {
            (Some(step), Some(_)) => {
                let mut c = Command::new("scancel");
                c.args(["--quiet", "--signal=TERM", step]);
                c
            }
            _ => {
                let mut c = Command::new(launcher::program(&self.launcher));
                c.args(["-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]);
                if let Some(control) = &self.control {
                    // A channel over the job's own connection; should its master be gone,
                    // ssh falls back to a connection of its own.
                    c.args(["-o", "ControlMaster=no", "-o"])
                        .arg(control.option());
                }
                c.args(self.launcher.args())
                    .arg("--")
                    .arg(&self.host_name)
                    .arg(format!("kill -TERM {}", started.pid));
                c
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let delivery = Delivery::default();
        let settled = delivery.clone();
        std::thread::Builder::new()
            .name("offload-remote-stop".into())
            .spawn(move || {
                // Best effort: if it fails, the grace period ends in a kill all the same.
                let _ = launcher::run_with_timeout(command, STOP_COMMAND_TIMEOUT);
                settled.settle();
            })
            .ok()
            .map(|_| delivery)
    }

    /// After a hard kill of srun: makes sure the step's processes get SIGKILL now, not after
    /// Slurm's KillWait (over ssh, the wrapper's watcher does it once the connection is gone).
    pub(super) fn kill(&self) {
        let step = self.lock().started.as_ref().and_then(|s| s.step.clone());
        if let (Some(step), Some(_)) = (step, self.launcher.slurm_job()) {
            let mut command = Command::new("scancel");
            command
                .args(["--quiet", "--signal=KILL", &step])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = std::thread::Builder::new()
                .name("offload-remote-stop".into())
                .spawn(move || {
                    let _ = launcher::run_with_timeout(command, STOP_COMMAND_TIMEOUT);
                });
        }
    }

    /// The processor's exit code or signal, from what srun or ssh ended with (`code`,
    /// `signal`) and what the wrapper said: over ssh, the wrapper's "ended" line is the
    /// processor's; a code of 128 + N is taken as signal N, as a shell reports it.
    pub(super) fn ending(
        &self,
        code: Option<i32>,
        signal: Option<i32>,
    ) -> (Option<i32>, Option<i32>) {
        let ended = self.lock().ended;
        match ended {
            Some(rc) => super::sandbox::unwrap_status(Some(rc), None),
            None => super::sandbox::unwrap_status(code, signal),
        }
    }

    /// The launcher's own failure, if the launch failed: no step, no connection, no
    /// processor on that host, or a connection lost while the job ran. Marks an ssh host
    /// that could not be reached as down.
    pub(super) fn launch_failure(&self, code: Option<i32>, stderr_tail: &str) -> Option<JobError> {
        let slurm = self.launcher.slurm_job().is_some();
        let mut state = self.lock();
        let words = match state.said.last() {
            Some(line) => format!(": {line}"),
            None => launcher_words(stderr_tail),
        };
        let message = if let Some(why) = &state.unavailable {
            format!("the processor cannot run on {why}")
        } else if state.started.is_none() && slurm {
            format!("srun could not start a job step{words}")
        } else if state.started.is_none() {
            if code == Some(255) {
                state.host_down = true;
            }
            format!(
                "ssh could not run the processor on {}{words}",
                self.host_name
            )
        } else if !slurm && state.ended.is_none() && code == Some(255) {
            state.host_down = true;
            format!(
                "the connection to {} was lost while the job ran{words}",
                self.host_name
            )
        } else {
            return None;
        };
        if state.host_down {
            self.launcher.mark_down(self.host, &message);
        }
        Some(JobError {
            kind: FailureKind::LaunchFailed,
            message,
            exit_code: code,
            signal: None,
            stderr_tail: state
                .said
                .iter()
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                + stderr_tail,
            reported: None,
        })
    }

    /// Whether a failed launch should be tried again on another host: this one went down and
    /// another is up.
    pub(super) fn retry_elsewhere(&self) -> bool {
        self.lock().host_down && self.launcher.any_up()
    }
}

/// A graceful stop on its way to the remote side: settled when its command (`scancel`, `ssh
/// HOST kill`) has ended, which is when the signal was delivered (or could not be).
#[derive(Clone, Default)]
pub(super) struct Delivery(Arc<OnceLock<Instant>>);

impl Delivery {
    /// When the stop command ended, once it has.
    pub(super) fn settled_at(&self) -> Option<Instant> {
        self.0.get().copied()
    }

    fn settle(&self) {
        let _ = self.0.set(Instant::now());
    }
}

/// The control socket of one ssh job's connection: a stop travels over the job's connection
/// instead of a new one. It lives in this process's socket directory ([`socket_dir`]); ssh
/// removes it when it exits, and this when the job ends (a killed ssh leaves it).
struct ControlSocket {
    path: PathBuf,
}

impl ControlSocket {
    /// A name for a new socket, or `None` without a socket directory (then a stop opens a
    /// connection of its own, as it would without one).
    fn create() -> Option<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Some(Self {
            path: socket_dir()?.join(n.to_string()),
        })
    }

    /// `ControlPath=...`, for `-o`.
    fn option(&self) -> OsString {
        let mut option = OsString::from("ControlPath=");
        option.push(&self.path);
        option
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// This process's directory of control sockets, once made.
static SOCKET_DIR: OnceLock<Option<PathBuf>> = OnceLock::new();

/// What the socket directories are called: `offload-ssh-PID`.
const SOCKET_DIR_PREFIX: &str = "offload-ssh-";

/// This process's directory of control sockets: `offload-ssh-PID` under `$TMPDIR` (under
/// `/tmp` where that path is too long or odd for ssh), mode 0700, made on first use. It goes
/// when the process exits (an `atexit` handler: jobs still running then die with it), and one
/// left by a process that was killed goes when the next process makes its own.
fn socket_dir() -> Option<&'static Path> {
    SOCKET_DIR
        .get_or_init(|| {
            // A socket's path is at most 107 bytes, and ssh binds a name 17 bytes longer
            // first. Spaces, quotes and % would need quoting in ssh's options: /tmp has none.
            let plain = |p: &Path| {
                p.as_os_str().len() <= 48
                    && p.as_os_str()
                        .as_bytes()
                        .iter()
                        .all(|b| b.is_ascii_graphic() && !b"%\"'\\".contains(b))
            };
            let base = Some(std::env::temp_dir())
                .filter(|p| plain(p))
                .unwrap_or_else(|| PathBuf::from("/tmp"));
            remove_stale_socket_dirs(&base);
            let dir = base.join(format!("{SOCKET_DIR_PREFIX}{}", std::process::id()));
            let make = || std::fs::DirBuilder::new().mode(0o700).create(&dir);
            if let Err(err) = make() {
                // One of ours, left by a process that had this pid: made again. Not ours
                // (another user's, a link): none.
                if err.kind() != std::io::ErrorKind::AlreadyExists
                    || !is_own_directory(&dir)
                    || std::fs::remove_dir_all(&dir).and_then(|()| make()).is_err()
                {
                    return None;
                }
            }
            // SAFETY: registering a function without arguments, which only removes files.
            unsafe { libc::atexit(remove_socket_dir) };
            Some(dir)
        })
        .as_deref()
}

extern "C" fn remove_socket_dir() {
    if let Some(Some(dir)) = SOCKET_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A directory (not a link to one) of this user's.
fn is_own_directory(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir() && m.uid() == me)
}

/// Removes the socket directories under `base` of this user's processes that no longer run.
fn remove_stale_socket_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(SOCKET_DIR_PREFIX))
            .filter(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|pid| pid.parse::<libc::pid_t>().ok());
        let Some(pid) = pid.filter(|pid| *pid > 0) else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone && is_own_directory(&entry.path()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The last line of stderr as ": LINE", for a launcher's failure.
fn launcher_words(stderr_tail: &str) -> String {
    launcher::last_words(stderr_tail.as_bytes())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `bytes` quoted for a POSIX shell: in single quotes, each `'` as `'\''`.
fn quote(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.push(b'\'');
    for &b in bytes {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// Splits a remote job's stderr into the wrapper's lines (to `remote`) and the processor's
/// (kept): whole lines only, so a partial line waits for its end (at most `MAX_LINE` bytes).
pub(super) struct Markers {
    remote: Arc<Remote>,
    line: Vec<u8>,
}

const MAX_LINE: usize = 4096;

/// How srun's own messages start.
const SRUN_SAYS: &[u8] = b"srun: ";

impl Markers {
    pub(super) fn new(remote: Arc<Remote>) -> Self {
        Self {
            remote,
            line: Vec::new(),
        }
    }

    /// Passes on what is the processor's to `keep`.
    pub(super) fn push(&mut self, chunk: &[u8], mut keep: impl FnMut(&[u8])) {
        let slurm = self.remote.launcher.slurm_job().is_some();
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            self.line.extend_from_slice(piece);
            if !piece.ends_with(b"\n") && self.line.len() < MAX_LINE {
                continue;
            }
            // srun's own words share the pipe with the task's stderr and may land in the
            // middle of one of its lines: cut them out; the task's line goes on.
            if let Some(at) = find(&self.line, SRUN_SAYS).filter(|_| slurm) {
                let words = self.line.split_off(at);
                self.remote.said(String::from_utf8_lossy(&words).trim_end());
                continue;
            }
            // A processor's last words may lack their newline: the marker may follow them.
            match find(&self.line, MARKER) {
                Some(at) => {
                    if at > 0 {
                        keep(&self.line[..at]);
                        keep(b"\n");
                    }
                    let rest = &self.line[at + MARKER.len()..];
                    self.remote.note(String::from_utf8_lossy(rest).trim_end());
                }
                None => keep(&self.line),
            }
            self.line.clear();
        }
    }

    /// What is left of a last line without its end.
    pub(super) fn rest(&self) -> &[u8] {
        &self.line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(quote(b"it's a b"), b"'it'\\''s a b'".to_vec());
        let quoted = String::from_utf8(quote(b"a'b \"c\" $d")).unwrap_or_default();
        let out = Command::new("sh")
            .args(["-c", &format!("printf %s {quoted}")])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        assert_eq!(out, b"a'b \"c\" $d");
    }

    #[test]
    fn control_sockets_live_in_a_private_directory_and_stale_ones_go() {
        use std::os::unix::fs::PermissionsExt;
        let socket = ControlSocket::create().expect("a socket directory");
        let dir = socket.path.parent().expect("a directory").to_path_buf();
        let mode = std::fs::metadata(&dir).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o700));
        let option = socket.option();
        let path = option.to_string_lossy();
        let path = path.strip_prefix("ControlPath=").unwrap_or_default();
        // ssh binds PATH plus 17 bytes first; a socket's path holds at most 107.
        assert!(path.len() + 17 <= 107, "{path}");
        assert!(!path.contains(['%', ' ', '"']), "{path}");
        // A socket left by a killed ssh goes with its job.
        std::fs::write(&socket.path, b"").expect("a stale socket file");
        let file = socket.path.clone();
        drop(socket);
        assert!(!file.exists() && dir.exists());
        // A directory of a process that no longer runs goes; a running one's stays.
        let base = dir.parent().expect("a base");
        let dead = base.join(format!("{SOCKET_DIR_PREFIX}{}", i32::MAX - 7));
        let _ = std::fs::create_dir(&dead);
        remove_stale_socket_dirs(base);
        assert!(!dead.exists(), "{}", dead.display());
        assert!(dir.exists());
    }

    #[test]
    fn the_script_has_no_comment_lines() {
        assert!(script().lines().all(|l| !l.starts_with('#')));
        assert!(script().contains("offload-launch: started"));
    }
}
