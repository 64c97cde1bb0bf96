//! The plumbing of a child process that both one-shot runs and persistent workers use: pipes,
//! starting it below a guard (`guard.rs`), stopping it, and what the kernel tells of a process
//! (CPU time, resident and peak memory).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use offload_sdk::protocol::PROGRESS_FD_ENV;

use std::sync::Arc;

use super::guard::{Guard, Report, Request};
use super::remote::{Delivery, Markers, Remote};
use crate::job::Job;
use crate::outcome::{FailureKind, JobError};

/// A started processor, its guard, and our ends of its pipes (non-blocking).
pub(super) struct Spawned {
    /// The processor and its guard.
    pub guarded: Guarded,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// The progress pipe, for one-shot runs.
    pub progress: Option<OwnedFd>,
}

/// Where a job's processor runs, as far as stopping it and reading its figures go.
#[derive(Clone)]
pub(super) enum Placement {
    /// On this machine, the guard's child.
    Local,
    /// In a bubblewrap sandbox, below bwrap: in a pid namespace and a session of its own,
    /// whose leader (bwrap's pid 1 there) is `session`, as the host numbers it. A death by
    /// signal N comes back as exit code 128 + N.
    Sandboxed { session: libc::pid_t },
    /// Through a launcher: the local process is srun or ssh.
    Remote(Arc<Remote>),
}

/// A processor process and the guard it runs below (the host's child).
#[derive(Clone)]
pub(super) struct Guarded {
    /// The guard, lent to this process until the last clone goes: the host's child, which
    /// reports the processor's start and end and stops it when told.
    pub guard: Arc<Guard>,
    /// The processor (its CPU clock and memory are the job's), or the local srun or ssh.
    pub processor: libc::pid_t,
    pub placement: Placement,
    /// How its nice value was made to count (its autogroup's), if it was.
    pub cpu_share: Option<crate::outcome::CpuShare>,
}

impl Guarded {
    /// The launcher's side of it, when it runs elsewhere.
    pub(super) fn remote(&self) -> Option<&Arc<Remote>> {
        match &self.placement {
            Placement::Remote(remote) => Some(remote),
            _ => None,
        }
    }

    /// The processor's end from its wait status (in the sandbox, bwrap's): its exit code or
    /// signal.
    pub(super) fn ending(&self, status: libc::c_int) -> (Option<i32>, Option<i32>) {
        let (code, signal) = if libc::WIFSIGNALED(status) {
            (None, Some(libc::WTERMSIG(status)))
        } else {
            (Some(libc::WEXITSTATUS(status)), None)
        };
        match &self.placement {
            Placement::Local => (code, signal),
            Placement::Sandboxed { .. } => super::sandbox::unwrap_status(code, signal),
            Placement::Remote(remote) => remote.ending(code, signal),
        }
    }

    /// Asks the processor to stop: SIGTERM to its group (the guard forwards it), to the
    /// sandbox's session (not to bwrap, which would die of it and take the processor with it
    /// at once), or to the remote process through its launcher. A local signal arrives at
    /// once (`None`); a remote one says when it arrived.
    pub(super) fn terminate(&self) -> Option<Delivery> {
        match &self.placement {
            Placement::Remote(remote) => {
                if let Some(delivery) = remote.terminate() {
                    return Some(delivery);
                }
            }
            Placement::Sandboxed { session } => {
                // SAFETY: a signal to a process group; bwrap's pid 1 leads it while the
                // guard waits for bwrap (it has not reported the job's end).
                unsafe { libc::kill(-*session, libc::SIGTERM) };
                return None;
            }
            Placement::Local => {}
        }
        // The guard forwards it to the processor's group (which it has not reaped yet).
        self.guard.terminate();
        None
    }

    /// Kills the job now: its process group and everything left below the guard (in the
    /// sandbox, its whole pid namespace goes with bwrap).
    pub(super) fn kill(&self) {
        self.guard.kill();
        if let Placement::Remote(remote) = &self.placement {
            remote.kill();
        }
    }
}

/// How long a guard may take to say that its processor runs (or could not be executed).
const GUARD_START: Duration = Duration::from_secs(10);

/// How to start a job's processor.
pub(super) struct Launch<'a> {
    /// Arguments after the job's own (`--persistent` for a worker): after, so that a job
    /// whose processor is an interpreter and whose first argument is its script works.
    pub trailing_args: &'a [&'a str],
    /// Whether to give it a progress pipe (one-shot runs; workers report progress in frames).
    pub progress_pipe: bool,
    /// `RLIMIT_CPU` from the start (one-shot runs; workers get theirs per job).
    pub cpu_limit: Option<Duration>,
    /// `RLIMIT_DATA` from the start (a memory limit without a cgroup, one-shot).
    pub data_limit: Option<u64>,
    /// The `cgroup.procs` file of the cgroup the processor joins.
    pub cgroup: Option<&'a Path>,
}

/// Starts `job`'s processor as `launch` says.
pub(super) fn spawn(job: &Job, launch: &Launch<'_>) -> Result<Spawned, JobError> {
    let path = job.processor.path();
    let cannot_start = |message: String| JobError::new(FailureKind::CouldNotStart, message);
    let remote = match &job.launcher {
        Some(_) if job.sandbox.is_some() => {
            return Err(cannot_start(
                "the sandbox confines processors on this machine only; run remote jobs \
                 without it"
                    .into(),
            ))
        }
        Some(launcher) => Some(Remote::place(launcher)?),
        None => None,
    };
    let pipes = || -> io::Result<[(OwnedFd, OwnedFd); 3]> { Ok([pipe()?, pipe()?, pipe()?]) };
    let [stdin, stdout, stderr] =
        pipes().map_err(|err| cannot_start(format!("cannot create pipes: {err}")))?;
    let progress = (launch.progress_pipe && remote.is_none())
        .then(pipe)
        .transpose()
        .map_err(|err| cannot_start(format!("cannot create pipes: {err}")))?;
    let mut env = match &remote {
        // srun and ssh need the host's whole environment (the allocation, the agent).
        Some(_) => std::env::vars_os()
            .filter(|(k, _)| k != PROGRESS_FD_ENV)
            .chain(job.env.iter().cloned())
            .collect(),
        None => job.environment(),
    };
    if let Some((_, write)) = &progress {
        env.push((PROGRESS_FD_ENV.into(), write.as_raw_fd().to_string().into()));
    }
    // The limits of this machine's kernel would hold srun or ssh, not the processor.
    let local = remote.is_none();
    let mut args = job.args.clone();
    args.extend(launch.trailing_args.iter().map(|a| (*a).into()));
    if job.sandbox.is_some() {
        // Inside, bwrap would only say so on stderr: tell a missing processor apart here.
        let missing = match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => Some(io::ErrorKind::IsADirectory.into()),
            Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
                Some(io::Error::from(io::ErrorKind::PermissionDenied))
            }
            Ok(_) => None,
            Err(err) => Some(err),
        };
        if let Some(err) = missing {
            return Err(cannot_start(spawn_error_message(path, &err)));
        }
    }
    // In the sandbox, the guard runs bwrap, which runs the processor and says its pid.
    let info = match &job.sandbox {
        Some(_) => Some(pipe().map_err(|err| cannot_start(format!("cannot create pipes: {err}")))?),
        None => None,
    };
    let mut pass: Vec<RawFd> = Vec::new();
    let mut passed: Vec<OwnedFd> = Vec::new();
    let (program, args) = match (&job.sandbox, &info, &remote) {
        (_, _, Some(remote)) => remote.command(job, &args),
        (Some(sandbox), Some((_, write)), None) => {
            // What it needs inside depends on its environment, less the progress pipe's
            // number (which changes every time).
            let plain: Vec<(OsString, OsString)> = env
                .iter()
                .filter(|(k, _)| k != PROGRESS_FD_ENV)
                .cloned()
                .collect();
            let wrapped = super::sandbox::wrap(sandbox, path, &args, &plain, write.as_raw_fd())
                .map_err(cannot_start)?;
            pass.push(write.as_raw_fd());
            pass.extend(wrapped.pass);
            passed = wrapped.owned;
            (wrapped.program, wrapped.args)
        }
        _ => (path.to_path_buf(), args),
    };
    // Stdio as 0, 1 and 2; the rest keep their numbers, which the environment (the progress
    // pipe's) and bwrap's arguments say.
    let mut fds = vec![
        (stdin.0.as_raw_fd(), 0),
        (stdout.1.as_raw_fd(), 1),
        (stderr.1.as_raw_fd(), 2),
    ];
    fds.extend(
        progress
            .iter()
            .map(|(_, write)| (write.as_raw_fd(), write.as_raw_fd())),
    );
    fds.extend(pass.iter().map(|fd| (*fd, *fd)));
    let request = Request {
        program: &program,
        args: &args,
        env: &env,
        fds: &fds,
        nice: job.nice,
        cpu_limit_secs: launch.cpu_limit.filter(|_| local).map(whole_seconds),
        data_limit_bytes: launch.data_limit.filter(|_| local),
        cgroup_procs: launch.cgroup.filter(|_| local),
    };
    let guard =
        Guard::run(&request).map_err(|err| cannot_start(spawn_error_message(&program, &err)))?;
    // The child's ends close here (the guard has its copies); ours stay.
    let ((_, stdin), (stdout, _), (stderr, _)) = (stdin, stdout, stderr);
    let progress = progress.map(|(read, _)| read);
    drop(passed);
    let info = info.map(|(read, write)| {
        drop(write);
        read
    });
    let (processor, placement) = match guard.first_report(GUARD_START) {
        Some(Report::Started(pid)) => match info {
            None => (
                pid as libc::pid_t,
                remote.map_or(Placement::Local, Placement::Remote),
            ),
            Some(info) => match sandboxed_pid(info) {
                Some(session) => (
                    // The processor is bwrap's pid 1's child there; its figures are the job's.
                    sandboxed_processor(session).unwrap_or(session),
                    Placement::Sandboxed { session },
                ),
                None => {
                    // bwrap could not make the sandbox: it says why on stderr, as the job's.
                    guard.kill();
                    guard.wait_end();
                    return Err(cannot_start(format!(
                        "cannot start {} in its sandbox: bwrap did not start it{}",
                        path.display(),
                        drain_now(&stderr)
                            .map(|text| format!(" ({})", text.trim()))
                            .unwrap_or_default()
                    )));
                }
            },
        },
        Some(Report::NoExec(errno)) => {
            let err = io::Error::from_raw_os_error(errno);
            return Err(cannot_start(spawn_error_message(path, &err)));
        }
        Some(Report::NoCgroup(errno)) => {
            let err = io::Error::from_raw_os_error(errno);
            return Err(cannot_start(format!(
                "cannot put {} in the cgroup of its memory limit: {err}",
                path.display()
            )));
        }
        Some(Report::Ended(_)) | None => {
            return Err(cannot_start(format!(
                "cannot start {}: its guard process did not start it",
                path.display()
            )));
        }
    };
    // A processor leads a session of its own (the guard's setsid; bwrap's in the sandbox):
    // with autogroups, its nice counts only as its group's.
    let cpu_share = match placement {
        Placement::Remote(_) => None,
        _ if job.nice <= 0 => None,
        _ if set_autogroup_nice(processor, job.nice) => Some(crate::outcome::CpuShare::Autogroup),
        _ => Some(crate::outcome::CpuShare::Nice),
    };
    let spawned = Spawned {
        guarded: Guarded {
            guard,
            processor,
            placement,
            cpu_share,
        },
        stdin,
        stdout,
        stderr,
        progress,
    };
    for fd in [&spawned.stdin, &spawned.stdout, &spawned.stderr]
        .into_iter()
        .chain(spawned.progress.as_ref())
    {
        set_nonblocking(fd.as_raw_fd());
    }
    // Larger pipes mean fewer wake-ups for big inputs and results; best effort.
    for fd in [&spawned.stdin, &spawned.stdout] {
        // SAFETY: fcntl on descriptors we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    }
    Ok(spawned)
}

/// The processor's pid from bwrap's `--info-fd`: read until the JSON object is whole (or the
/// pipe ends, as when bwrap fails), at most [`GUARD_START`].
fn sandboxed_pid(info: OwnedFd) -> Option<libc::pid_t> {
    let until = std::time::Instant::now() + GUARD_START;
    let mut text = Vec::new();
    let mut chunk = [0u8; 512];
    while !text.contains(&b'}') && text.len() < 64 * 1024 {
        let left = until.saturating_duration_since(std::time::Instant::now());
        let mut pollfd = libc::pollfd {
            fd: info.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut pollfd, 1, ms) } <= 0 {
            break;
        }
        // SAFETY: reading into a live buffer of its length.
        let n = unsafe { libc::read(info.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
        match usize::try_from(n) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.extend_from_slice(&chunk[..n]),
        }
    }
    super::sandbox::child_pid(&String::from_utf8_lossy(&text))
        .and_then(|pid| libc::pid_t::try_from(pid).ok())
}

/// The processor in a sandbox whose pid 1 is `session`: pid 1's child (bwrap forks it once
/// the sandbox is made, so it may take a moment to appear), at most [`GUARD_START`]. `None` if
/// the sandbox ended first.
fn sandboxed_processor(session: libc::pid_t) -> Option<libc::pid_t> {
    let until = std::time::Instant::now() + GUARD_START;
    let children = format!("/proc/{session}/task/{session}/children");
    loop {
        let found = match std::fs::read_to_string(&children) {
            Ok(text) => text.split_whitespace().next().and_then(|p| p.parse().ok()),
            // Not built into this kernel (CONFIG_PROC_CHILDREN): look for it by its parent.
            Err(_) if Path::new(&format!("/proc/{session}")).exists() => child_of(session),
            Err(_) => return None,
        };
        if found.is_some() {
            return found;
        }
        if std::time::Instant::now() > until {
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A child of `parent`, found by reading every process's parent in /proc.
fn child_of(parent: libc::pid_t) -> Option<libc::pid_t> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: libc::pid_t = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            let ppid: libc::pid_t = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent).then_some(pid)
        })
}

/// What can be read from `fd` now without waiting (a failed start's stderr).
fn drain_now(fd: &OwnedFd) -> Option<String> {
    set_nonblocking(fd.as_raw_fd());
    let mut bytes = vec![0u8; 4096];
    // SAFETY: reading into a live buffer of its length.
    let n = unsafe { libc::read(fd.as_raw_fd(), bytes.as_mut_ptr().cast(), bytes.len()) };
    let n = usize::try_from(n).ok().filter(|n| *n > 0)?;
    Some(String::from_utf8_lossy(&bytes[..n]).into_owned())
}

/// A duration in whole seconds, rounded up, as `RLIMIT_CPU` counts.
pub(super) fn whole_seconds(t: Duration) -> u64 {
    t.as_secs() + u64::from(t.subsec_nanos() > 0)
}

fn spawn_error_message(path: &Path, err: &io::Error) -> String {
    let shown = path.display();
    if path.is_dir() {
        return format!("{shown} is a directory, not a processor executable");
    }
    match err.kind() {
        io::ErrorKind::NotFound if path.exists() => {
            format!("cannot run {shown}: its interpreter or loader was not found ({err})")
        }
        io::ErrorKind::NotFound => format!("{shown} does not exist"),
        io::ErrorKind::PermissionDenied => {
            format!("{shown} is not executable (permission denied); try chmod +x")
        }
        _ if err.raw_os_error() == Some(libc::ENOEXEC) => {
            format!("{shown} is not in an executable format (a script without a #! line?)")
        }
        _ => format!("cannot start {shown}: {err}"),
    }
}

pub(super) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The resident memory of a process, from /proc/PID/statm.
pub(super) fn resident_bytes(pid: libc::pid_t) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    Some(pages * page)
}

pub(super) fn last_line(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
}

/// A signal's name for messages: "SIGSEGV (signal 11)".
pub(crate) fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT (abort)",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL (perhaps out of memory)",
        libc::SIGSEGV => "SIGSEGV (segmentation fault)",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU (CPU time limit)",
        libc::SIGXFSZ => "SIGXFSZ (file size limit)",
        _ => "a signal",
    };
    format!("{name}, signal {signal}")
}

/// The last `cap` bytes of a stream, kept in bounded memory.
/// For a process started through a launcher, the launch wrapper's own lines are taken out.
pub(super) struct Tail {
    cap: usize,
    bytes: Vec<u8>,
    markers: Option<Markers>,
}

impl Tail {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            cap,
            bytes: Vec::new(),
            markers: None,
        }
    }

    /// A tail of `process`'s stderr.
    pub(super) fn of(process: &Guarded, cap: usize) -> Self {
        Self {
            markers: process.remote().cloned().map(Markers::new),
            ..Self::new(cap)
        }
    }

    pub(super) fn push(&mut self, chunk: &[u8]) {
        match self.markers.as_mut() {
            Some(markers) => {
                let (bytes, cap) = (&mut self.bytes, self.cap);
                markers.push(chunk, |line| keep(bytes, cap, line));
            }
            None => keep(&mut self.bytes, self.cap, chunk),
        }
    }

    pub(super) fn text(&self) -> String {
        let rest = self.markers.as_ref().map_or(&[][..], Markers::rest);
        let start = self.bytes.len().saturating_sub(self.cap);
        let mut text = String::from_utf8_lossy(&self.bytes[start..]).into_owned();
        text.push_str(&String::from_utf8_lossy(rest));
        text
    }
}

fn keep(bytes: &mut Vec<u8>, cap: usize, chunk: &[u8]) {
    bytes.extend_from_slice(chunk);
    if bytes.len() > 2 * cap.max(1) {
        let cut = bytes.len() - cap;
        bytes.drain(..cut);
    }
}

pub(super) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the two-element array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub(super) fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags != -1 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// Whether the kernel schedules by autogroup (each session a group of its own); asked once.
fn autogroups() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled")
            .is_ok_and(|v| v.trim() == "1")
    })
}

/// Sets the nice value of `pid`'s autogroup (Linux 2.6.38), where autogroups are on; whether it
/// did. A nice of 1 to 19 only lowers a group's weight, which needs no privilege.
fn set_autogroup_nice(pid: libc::pid_t, nice: i32) -> bool {
    autogroups() && std::fs::write(format!("/proc/{pid}/autogroup"), nice.to_string()).is_ok()
}

/// Whether process `pid` lives and is not exiting (`PF_EXITING` in its /proc flags: set
/// before the kernel closes a dying process's files).
pub(super) fn lives_on(pid: libc::pid_t) -> bool {
    const PF_EXITING: u64 = 0x4;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    // After the name: state (1), ppid, pgrp, session, tty, tpgid, flags (7).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first().copied().unwrap_or("X");
    let flags: u64 = fields
        .get(6)
        .and_then(|f| f.parse().ok())
        .unwrap_or(PF_EXITING);
    !matches!(state, "Z" | "X" | "x") && flags & PF_EXITING == 0
}

/// Reaps the child and returns its wait status and resource usage.
pub(super) fn reap(pid: libc::pid_t) -> (libc::c_int, libc::rusage) {
    // SAFETY: wait4 on our own child, with live out-parameters.
    unsafe {
        let mut status: libc::c_int = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        loop {
            let r = libc::wait4(pid, &mut status, 0, &mut usage);
            if r == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        (status, usage)
    }
}

pub(super) fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(u64::try_from(tv.tv_sec).unwrap_or(0))
        + Duration::from_micros(u64::try_from(tv.tv_usec).unwrap_or(0))
}

/// The CPU time (user and system, all threads) a live child has used so far, from its CPU
/// clock: nanosecond resolution, unlike /proc's clock ticks.
pub(super) fn cpu_time(pid: libc::pid_t) -> Option<Duration> {
    // SAFETY: clock_getcpuclockid and clock_gettime fill live out-parameters.
    unsafe {
        let mut clock: libc::clockid_t = 0;
        if libc::clock_getcpuclockid(pid, &mut clock) != 0 {
            return None;
        }
        let mut ts: libc::timespec = std::mem::zeroed();
        if libc::clock_gettime(clock, &mut ts) != 0 {
            return None;
        }
        Some(Duration::new(
            u64::try_from(ts.tv_sec).ok()?,
            u32::try_from(ts.tv_nsec).ok()?,
        ))
    }
}

/// A live process's peak resident memory, per job: `reset` starts a new peak (writing 5 to
/// /proc/PID/clear_refs, Linux 4.0 and later) and `peak` reads VmHWM. Both files stay open for
/// the process's life, so a job costs two system calls, not four opens and closes.
pub(super) struct PeakMemory {
    status: Option<File>,
    clear_refs: Option<File>,
}

impl PeakMemory {
    pub(super) fn open(pid: libc::pid_t) -> Self {
        Self {
            status: File::open(format!("/proc/{pid}/status")).ok(),
            clear_refs: std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/proc/{pid}/clear_refs"))
                .ok(),
        }
    }

    /// Measures nothing (a process that is not on this machine).
    pub(super) fn none() -> Self {
        Self {
            status: None,
            clear_refs: None,
        }
    }

    /// Starts measuring a new peak from the present resident size.
    pub(super) fn reset(&mut self) {
        if let Some(file) = self.clear_refs.as_mut() {
            let _ = file.write(b"5");
        }
    }

    /// The peak resident memory since the last reset, in bytes.
    pub(super) fn peak(&mut self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let file = self.status.as_ref()?;
        let mut text = [0u8; 4096];
        let n = file.read_at(&mut text, 0).ok()?;
        let text = std::str::from_utf8(&text[..n]).ok()?;
        let kib: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }
}

/// Sets a live process's soft limit of `resource` (`RLIMIT_CPU` in seconds, `RLIMIT_DATA` in
/// bytes) to `value`, or lifts it with `None`. The hard limit is left as it is: lowering it
/// could not be undone without privileges, and a worker's next job may have no limit.
pub(super) fn set_soft_limit(
    pid: libc::pid_t,
    resource: libc::__rlimit_resource_t,
    value: Option<u64>,
) -> io::Result<()> {
    // SAFETY: prlimit reads into a live rlimit.
    let mut current: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::prlimit(pid, resource, std::ptr::null(), &mut current) } == -1 {
        return Err(io::Error::last_os_error());
    }
    let wanted = value.map_or(libc::RLIM_INFINITY, |v| v as libc::rlim_t);
    let limit = libc::rlimit {
        rlim_cur: wanted.min(current.rlim_max),
        rlim_max: current.rlim_max,
    };
    // SAFETY: prlimit on a process of ours with a live rlimit.
    if unsafe { libc::prlimit(pid, resource, &limit, std::ptr::null_mut()) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How many bytes written to a pipe nobody has read yet (from our write end).
pub(super) fn unread_bytes(fd: RawFd) -> Option<usize> {
    let mut count: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut count) };
    (r == 0).then(|| usize::try_from(count).unwrap_or(0))
}

/// The identity of an executable file, to notice when it is replaced, rebuilt or changed
/// (its content, or its mode: the change time moves with both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileId {
    pub(super) fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        })
    }
}
