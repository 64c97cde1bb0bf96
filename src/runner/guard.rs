//! The guard (`guard.c`) on the host's side: the embedded executable, kept in a sealed memfd so
//! that an embedder needs nothing installed; the guards each thread keeps; and the messages
//! between a guard and the host.
//!
//! Every processor process, one-shot or persistent, runs below a guard: the host's child, which
//! forks the processor from its few pages (so the processor's peak memory is its own, not the
//! host's), forwards a stop to the processor's group, and as a child subreaper kills whatever
//! the processor left behind (a `setsid` daemon included) before it reports the job's end. A
//! guard serves one thread of the host, one job at a time, for as long as the thread lives:
//! starting a process per job between the host and the processor cost a trivial one-shot job
//! a fifth of its time (docs/ARCHITECTURE.md, "The guard").

use std::cell::RefCell;
use std::ffi::{CStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// The guard executable, built by build.rs from `guard.c`.
static GUARD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/offload-guard"));

/// The guard's parent-death signal: the thread that started it ended, so its job goes, and so
/// does the guard.
pub(crate) const KILL_JOB: libc::c_int = libc::SIGUSR2;

/// `memfd_create`'s flag for an executable memfd (Linux 6.3; older kernels refuse the flag,
/// and their memfds are executable anyway).
const MFD_EXEC: libc::c_uint = 0x0010;

/// A descriptor of the guard executable for `execveat(fd, "", .., AT_EMPTY_PATH)`, created at
/// the first call; an error says why it could not be.
pub(crate) fn executable() -> io::Result<RawFd> {
    static FD: OnceLock<Result<OwnedFd, String>> = OnceLock::new();
    match FD.get_or_init(|| load().map_err(|err| err.to_string())) {
        Ok(fd) => Ok(fd.as_raw_fd()),
        Err(why) => Err(io::Error::other(format!(
            "cannot prepare offload's guard process: {why}"
        ))),
    }
}

fn load() -> io::Result<OwnedFd> {
    let name: &CStr = c"offload-guard";
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create with a valid name returns a new descriptor or -1.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), base | MFD_EXEC) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), base) };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(GUARD)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our own memfd.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(file))
}

/// The messages between a guard and the host: `struct request` and `struct report` in guard.c,
/// field for field.
mod wire {
    /// How many descriptors a request carries at most.
    pub(super) const MAX_FDS: usize = 16;

    // Request kinds, host to guard.
    pub(super) const RUN: u32 = 1;
    pub(super) const TERM: u32 = 2;
    pub(super) const KILL: u32 = 3;
    // Report kinds, guard to host.
    pub(super) const STARTED: u32 = 1;
    pub(super) const NO_EXEC: u32 = 2;
    pub(super) const NO_CGROUP: u32 = 3;
    pub(super) const ENDED: u32 = 4;
    // Request limits.
    pub(super) const LIMIT_CPU: u32 = 1;
    pub(super) const LIMIT_DATA: u32 = 2;

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    pub(super) struct Request {
        pub kind: u32,
        pub fds: u32,
        pub bytes: u32,
        pub argc: u32,
        pub envc: u32,
        pub limits: u32,
        pub nice: i32,
        pub unused: i32,
        pub cpu_limit: u64,
        pub data_limit: u64,
        pub targets: [i32; MAX_FDS],
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    pub(super) struct Report {
        pub kind: u32,
        pub value: i32,
        pub peak_kib: u64,
        pub cpu_us: u64,
    }

    const _: () = assert!(std::mem::size_of::<Request>() == 112);
    const _: () = assert!(std::mem::size_of::<Report>() == 24);
}

/// A processor to start below a guard.
pub(crate) struct Request<'a> {
    pub program: &'a Path,
    pub args: &'a [OsString],
    pub env: &'a [(OsString, OsString)],
    /// Our descriptors, each with the number it gets in the processor (0, 1 and 2 for its
    /// stdio; others keep theirs, which its arguments or environment name).
    pub fds: &'a [(RawFd, RawFd)],
    /// Added to the processor's nice value (0: as the host's thread).
    pub nice: i32,
    /// `RLIMIT_CPU` in seconds: SIGXCPU at this many, SIGKILL a second later.
    pub cpu_limit_secs: Option<u64>,
    /// `RLIMIT_DATA` in bytes.
    pub data_limit_bytes: Option<u64>,
    /// A `cgroup.procs` file the processor joins before it runs.
    pub cgroup_procs: Option<&'a Path>,
}

/// What a guard said of its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    /// The processor runs, with this pid (its process group and session too).
    Started(u32),
    /// The processor could not be executed: this errno.
    NoExec(i32),
    /// The processor could not join its cgroup: this errno.
    NoCgroup(i32),
    /// The processor and everything below it are gone.
    Ended(Ended),
}

/// How a job ended, as its guard saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ended {
    /// The processor's wait status (or, when the guard itself died, the guard's).
    pub status: libc::c_int,
    /// The peak resident memory of the processor and of every descendant it or its guard
    /// reaped, in bytes.
    pub peak_bytes: u64,
    /// Their CPU time, user and system.
    pub cpu: Duration,
}

impl Ended {
    /// The end of a job whose guard broke without reporting it: killed, nothing measured.
    pub(crate) fn killed() -> Self {
        Self {
            // A wait status: killed by SIGKILL.
            status: libc::SIGKILL,
            peak_bytes: 0,
            cpu: Duration::ZERO,
        }
    }
}

/// The strings of a request that a guard keeps in its own static buffers (guard.c: 64 KiB of
/// strings, 4,096 pointers): a larger request grows its high-water memory, which every
/// processor it forks later would report as part of its peak, so that guard serves only that
/// job.
const GUARD_KEEPS_BYTES: usize = 64 * 1024;
const GUARD_KEEPS_STRINGS: usize = 4096 - 2;
/// Idle guards a thread keeps (one is what a thread running one job at a time needs).
const IDLE_GUARDS: usize = 2;

/// A guard process and our end of its socket.
struct GuardProcess {
    pid: libc::pid_t,
    socket: OwnedFd,
    /// It was reaped: its pid is not ours any more (another child of ours may have it now),
    /// so it is neither signalled nor waited for again.
    reaped: AtomicBool,
}

impl GuardProcess {
    fn start() -> io::Result<Self> {
        let guard = executable()?;
        let mut ends = [0 as RawFd; 2];
        // SAFETY: socketpair fills the two-element array on success.
        let made = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                ends.as_mut_ptr(),
            )
        };
        if made == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors are fresh and owned by nobody else.
        let (ours, mut theirs) =
            unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
        if theirs.as_raw_fd() < 3 {
            // A host without stdio (0, 1 or 2 closed): the guard's /dev/null stdio would
            // replace its socket.
            // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor or -1.
            let high = unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
            if high == -1 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a fresh descriptor that nothing else owns.
            theirs = unsafe { OwnedFd::from_raw_fd(high) };
        }
        let pid = crate::spawn::start_guard(guard, theirs.as_raw_fd())?;
        Ok(Self {
            pid,
            socket: ours,
            reaped: AtomicBool::new(false),
        })
    }

    /// Reaps it, once: its wait status and resource usage; `None` if it was reaped already.
    fn reap(&self) -> Option<(libc::c_int, libc::rusage)> {
        (!self.reaped.swap(true, Ordering::SeqCst)).then(|| super::child::reap(self.pid))
    }

    /// SIGKILLs it, unless it was reaped (then its pid may be another process's).
    fn kill(&self) {
        if !self.reaped.load(Ordering::SeqCst) {
            // SAFETY: our unreaped child: its pid cannot have been reused.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }

    /// Sends `head` and `strings`, with `fds` attached; blocks until the socket takes it all.
    fn send(&self, head: &wire::Request, strings: &[u8], fds: &[RawFd]) -> io::Result<()> {
        // SAFETY: a plain-data structure viewed as its bytes.
        let head_bytes = unsafe {
            std::slice::from_raw_parts(
                (head as *const wire::Request).cast::<u8>(),
                size_of_val(head),
            )
        };
        let space = unsafe { libc::CMSG_SPACE(size_of_val(fds) as u32) } as usize;
        let mut control = vec![0u64; space.div_ceil(8)];
        let mut sent = 0;
        let total = head_bytes.len() + strings.len();
        while sent < total {
            let (a, b) = if sent < head_bytes.len() {
                (&head_bytes[sent..], strings)
            } else {
                (&[][..], &strings[sent - head_bytes.len()..])
            };
            let mut iov = [
                libc::iovec {
                    iov_base: a.as_ptr() as *mut libc::c_void,
                    iov_len: a.len(),
                },
                libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                },
            ];
            // SAFETY: a zeroed msghdr is valid; its pointers are set below to live buffers.
            let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
            message.msg_iov = iov.as_mut_ptr();
            message.msg_iovlen = 2;
            if sent == 0 && !fds.is_empty() {
                message.msg_control = control.as_mut_ptr().cast();
                message.msg_controllen = space as _;
                // SAFETY: the control buffer has room for one header and `fds` (CMSG_SPACE).
                unsafe {
                    let header = libc::CMSG_FIRSTHDR(&message);
                    (*header).cmsg_level = libc::SOL_SOCKET;
                    (*header).cmsg_type = libc::SCM_RIGHTS;
                    (*header).cmsg_len = libc::CMSG_LEN(size_of_val(fds) as u32) as _;
                    std::ptr::copy_nonoverlapping(
                        fds.as_ptr(),
                        libc::CMSG_DATA(header).cast::<RawFd>(),
                        fds.len(),
                    );
                }
            }
            // SAFETY: message points to live buffers for the duration of the call.
            let n = unsafe { libc::sendmsg(self.socket.as_raw_fd(), &message, libc::MSG_NOSIGNAL) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            sent += n as usize;
        }
        Ok(())
    }

    /// Reads one report; `None` at the end of the socket (the guard died).
    fn receive(&self) -> Option<wire::Report> {
        let mut report = wire::Report::default();
        let size = size_of_val(&report);
        let mut got = 0;
        while got < size {
            // SAFETY: reading into the rest of a live plain-data structure.
            let n = unsafe {
                libc::read(
                    self.socket.as_raw_fd(),
                    (&raw mut report).cast::<u8>().add(got).cast(),
                    size - got,
                )
            };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if n <= 0 {
                return None;
            }
            got += n as usize;
        }
        Some(report)
    }
}

impl Drop for GuardProcess {
    /// Lets the guard go: it sees the socket's end (killing the job it may still run), exits,
    /// and is reaped here, before our end closes, so that no descriptor of ours outlives it.
    fn drop(&mut self) {
        // SAFETY: shutdown on our own socket.
        unsafe { libc::shutdown(self.socket.as_raw_fd(), libc::SHUT_WR) };
        self.reap();
    }
}

thread_local! {
    /// This thread's guards between jobs.
    static IDLE: RefCell<Vec<GuardProcess>> = const { RefCell::new(Vec::new()) };
}

/// Where a guard is with the job it was lent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Running it (or starting it).
    Busy = 0,
    /// Its end was reported: the guard may serve another.
    Free = 1,
    /// The guard died or would not answer: it serves no more.
    Broken = 2,
}

/// A guard lent to one job: the job's processor runs below it. When the last handle goes, the
/// guard goes back to its thread for the next job (or, if it broke, or the job is not over,
/// or this is not its thread, it is let go).
pub(crate) struct Guard {
    process: Option<GuardProcess>,
    owner: ThreadId,
    phase: AtomicU8,
    /// Whether it may serve another job (it took no large request).
    reusable: bool,
}

impl Guard {
    /// Starts `request`'s processor below one of this thread's guards (a new one if none is
    /// free); then [`Guard::first_report`] says whether it runs.
    pub(crate) fn run(request: &Request<'_>) -> io::Result<Arc<Self>> {
        let (head, strings, fds) = encode(request)?;
        let reusable = strings.len() <= GUARD_KEEPS_BYTES
            && (head.argc + head.envc) as usize <= GUARD_KEEPS_STRINGS;
        let mut fresh = false;
        loop {
            let process = match IDLE.with(|idle| idle.borrow_mut().pop()) {
                Some(process) => process,
                None => {
                    fresh = true;
                    GuardProcess::start()?
                }
            };
            match process.send(&head, &strings, &fds) {
                Ok(()) => {
                    return Ok(Arc::new(Self {
                        process: Some(process),
                        owner: std::thread::current().id(),
                        phase: AtomicU8::new(Phase::Busy as u8),
                        reusable,
                    }))
                }
                // An idle guard that died meanwhile (killed from outside): another one.
                Err(_) if !fresh => drop(process),
                Err(err) => return Err(err),
            }
        }
    }

    /// The guard's pid.
    pub(crate) fn pid(&self) -> libc::pid_t {
        self.process().pid
    }

    /// The socket to poll for its reports.
    pub(crate) fn fd(&self) -> RawFd {
        self.process().socket.as_raw_fd()
    }

    fn process(&self) -> &GuardProcess {
        self.process
            .as_ref()
            .expect("a guard has its process until it is dropped")
    }

    /// Waits (up to `timeout`) for the guard's first report: the processor's pid, or why it
    /// could not start. `None`: the guard said nothing (it died or hangs; it serves no more).
    pub(crate) fn first_report(&self, timeout: Duration) -> Option<Report> {
        let mut pollfd = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
            // SAFETY: one valid pollfd for the duration of the call.
            let ready = unsafe { libc::poll(&mut pollfd, 1, ms) };
            if ready > 0 {
                break;
            }
            let interrupted =
                ready < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted;
            if !interrupted || left.is_zero() {
                self.abandon();
                return None;
            }
        }
        let report = self.report();
        if report.is_none() {
            self.abandon();
        }
        report
    }

    /// Reads its next report (blocking; poll [`Guard::fd`] first). At the end of the socket
    /// (the guard died), the guard is reaped and its own wait status is the job's end.
    pub(crate) fn report(&self) -> Option<Report> {
        let Some(raw) = self.process().receive() else {
            return self.died();
        };
        let report = match raw.kind {
            wire::STARTED => Report::Started(u32::try_from(raw.value).ok()?),
            wire::NO_EXEC => Report::NoExec(raw.value),
            wire::NO_CGROUP => Report::NoCgroup(raw.value),
            wire::ENDED => Report::Ended(Ended {
                status: raw.value,
                peak_bytes: raw.peak_kib.saturating_mul(1024),
                cpu: Duration::from_micros(raw.cpu_us),
            }),
            _ => return None,
        };
        if matches!(
            report,
            Report::NoExec(_) | Report::NoCgroup(_) | Report::Ended(_)
        ) {
            self.phase.store(Phase::Free as u8, Ordering::SeqCst);
        }
        Some(report)
    }

    /// The guard died under a job: reap it, and give its own end as the job's (once: `None`
    /// after, and if it was reaped already).
    fn died(&self) -> Option<Report> {
        self.phase.store(Phase::Broken as u8, Ordering::SeqCst);
        let process = self.process();
        // In case it only closed its end: it serves no more.
        process.kill();
        let (status, usage) = process.reap()?;
        Some(Report::Ended(Ended {
            status,
            peak_bytes: 0,
            cpu: super::child::timeval(usage.ru_utime) + super::child::timeval(usage.ru_stime),
        }))
    }

    /// Reads reports until the job's end (after [`Guard::kill`], say); `None` if the guard
    /// died without one.
    pub(crate) fn wait_end(&self) -> Option<Ended> {
        loop {
            match self.report()? {
                Report::Ended(ended) => return Some(ended),
                // A job that could not start has ended too.
                Report::NoExec(_) | Report::NoCgroup(_) => return None,
                Report::Started(_) => {}
            }
        }
    }

    /// Forwards SIGTERM to the processor's group.
    pub(crate) fn terminate(&self) {
        self.command(wire::TERM);
    }

    /// Kills the job now: the processor's group, then whatever is left below the guard.
    pub(crate) fn kill(&self) {
        self.command(wire::KILL);
    }

    fn command(&self, kind: u32) {
        let head = wire::Request {
            kind,
            ..wire::Request::default()
        };
        // A guard that is gone has nothing left to stop; its end is read from the socket.
        let _ = self.process().send(&head, &[], &[]);
    }

    /// Gives up on a guard that does not answer: killed, it serves no more.
    fn abandon(&self) {
        self.phase.store(Phase::Broken as u8, Ordering::SeqCst);
        // It is reaped when dropped.
        self.process().kill();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(process) = self.process.take() else {
            return;
        };
        let free = self.phase.load(Ordering::SeqCst) == Phase::Free as u8;
        if !(free && self.reusable && std::thread::current().id() == self.owner) {
            return;
        }
        // Back to this thread, unless it is ending (its guards go with it then).
        let _ = IDLE.try_with(|idle| {
            let mut idle = idle.borrow_mut();
            if idle.len() < IDLE_GUARDS {
                idle.push(process);
            }
        });
    }
}

/// The request's head, its strings (the working directory, the cgroup.procs file, the
/// program and arguments, the environment, each NUL-terminated) and its descriptors.
fn encode(request: &Request<'_>) -> io::Result<(wire::Request, Vec<u8>, Vec<RawFd>)> {
    if request.fds.len() > wire::MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "more descriptors than a guard passes on",
        ));
    }
    let mut strings = Vec::with_capacity(256);
    // One NUL-terminated string of `parts`.
    let mut push = |parts: &[&[u8]]| -> io::Result<()> {
        if parts.iter().any(|part| part.contains(&0)) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        for part in parts {
            strings.extend_from_slice(part);
        }
        strings.push(0);
        Ok(())
    };
    // The host's working directory now: processors run where the host is, as when they were
    // its own children (a guard started earlier may be elsewhere).
    let cwd = std::env::current_dir().unwrap_or_default();
    push(&[cwd.as_os_str().as_bytes()])?;
    push(&[request
        .cgroup_procs
        .map_or(&[][..], |p| p.as_os_str().as_bytes())])?;
    push(&[request.program.as_os_str().as_bytes()])?;
    for arg in request.args {
        push(&[arg.as_bytes()])?;
    }
    for (key, value) in request.env {
        push(&[key.as_bytes(), b"=", value.as_bytes()])?;
    }
    let count =
        |n: usize| u32::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let mut head = wire::Request {
        kind: wire::RUN,
        fds: count(request.fds.len())?,
        bytes: count(strings.len())?,
        argc: count(request.args.len() + 1)?,
        envc: count(request.env.len())?,
        nice: request.nice,
        ..wire::Request::default()
    };
    if let Some(secs) = request.cpu_limit_secs {
        head.limits |= wire::LIMIT_CPU;
        head.cpu_limit = secs;
    }
    if let Some(bytes) = request.data_limit_bytes {
        head.limits |= wire::LIMIT_DATA;
        head.data_limit = bytes;
    }
    for (slot, (_, target)) in head.targets.iter_mut().zip(request.fds) {
        *slot = *target;
    }
    let fds = request.fds.iter().map(|(ours, _)| *ours).collect();
    Ok((head, strings, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_guard_is_loaded_once() {
        let first = executable().expect("a memfd");
        assert_eq!(executable().expect("the same"), first);
    }
}
