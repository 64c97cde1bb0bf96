//! One job's run, on a runner thread of its own while it lasts (threads are pooled): spawn the
//! processor, feed stdin while draining stdout, stderr and the progress fd, enforce the timeout
//! and cancellation, reap, decode, report.
//!
//! Everything here may block, so none of it runs on the main context. The thread talks to the
//! queue only through small [`RunnerEvent`]s on an async channel, and listens only to its
//! [`Control`].
//!
//! A single `poll(2)` loop serves all pipes, a pidfd (readable when the child exits) and an
//! eventfd (written on cancel). The child (started by [`crate::spawn`]) leads its own process
//! group, so a signal reaches all of its descendants; it gets `PR_SET_PDEATHSIG` so it dies if
//! this thread (and so the host) dies; it inherits no descriptor but stdio and the progress
//! pipe.

use std::any::Any;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use offload_sdk::decode::{decode_one, hex_preview, DecodeError, DecodeLimits};
use offload_sdk::protocol::{ErrorReport, ProgressItem, PROGRESS_FD_ENV};

use crate::job::{Job, JobId};
use crate::outcome::{FailureKind, JobError, RunStats};
use crate::spawn::{ChildFds, ChildSettings};

/// A decoded result of the caller's type, or why there is none.
pub(crate) type RawResult = Result<Box<dyn Any + Send>, JobError>;

/// Decodes a processor's stdout into the caller's result type, on the runner thread.
pub(crate) type Decoder =
    Box<dyn FnOnce(&[u8], DecodeLimits) -> Result<Box<dyn Any + Send>, DecodeError> + Send>;

/// How long pipes may stay open after the processor exited and its group was killed.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// The least time between two progress events of one job.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(30);
/// Progress bytes buffered without a complete item before the stream is taken as broken.
const MAX_PROGRESS_BUFFER: usize = 64 * 1024;

/// What a runner tells the queue.
pub(crate) enum RunnerEvent {
    Started {
        id: JobId,
        pid: u32,
    },
    Progress {
        id: JobId,
        item: ProgressItem,
    },
    Finished {
        id: JobId,
        result: RawResult,
        stats: RunStats,
    },
}

/// The queue's way to stop a running job: a flag and an eventfd that wakes the runner's poll.
pub(crate) struct Control {
    wake: OwnedFd,
    cancelled: AtomicBool,
    /// Skip the grace period: SIGKILL at once.
    hard: AtomicBool,
}

impl Control {
    pub(crate) fn new() -> io::Result<Arc<Self>> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Arc::new(Self {
            // SAFETY: fd is a fresh descriptor that nothing else owns.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
            cancelled: AtomicBool::new(false),
            hard: AtomicBool::new(false),
        }))
    }

    /// Asks the runner to stop its job (SIGTERM, SIGKILL after the grace period). Never blocks.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Asks the runner to kill its job's process group now. Never blocks.
    pub(crate) fn kill(&self) {
        self.hard.store(true, Ordering::SeqCst);
        self.cancel();
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    fn is_hard(&self) -> bool {
        self.hard.load(Ordering::SeqCst)
    }
}

/// Everything a runner needs; moved onto its thread.
pub(crate) struct RunRequest {
    pub id: JobId,
    pub job: Job,
    pub input: Arc<Vec<u8>>,
    pub decode: Decoder,
    pub control: Arc<Control>,
    pub events: async_channel::Sender<RunnerEvent>,
}

/// How long a runner thread with no job waits for one before it ends.
const IDLE_THREAD_LIFETIME: Duration = Duration::from_secs(5);

/// Runner threads, kept between jobs: creating and ending a thread per job cost 10-30 µs of
/// the host's CPU per tiny job (BENCHMARKS.md, suite 1). A thread takes one request at a
/// time and runs it to the end; a request never waits for a busy thread, because `start`
/// creates a thread whenever there are more requests than idle threads. Idle threads end
/// after [`IDLE_THREAD_LIFETIME`], so an idle host keeps none.
struct Pool {
    state: Mutex<PoolState>,
    wake: Condvar,
}

#[derive(Default)]
struct PoolState {
    requests: VecDeque<RunRequest>,
    /// Threads waiting for a request.
    idle: usize,
    /// Threads alive.
    threads: usize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        state: Mutex::new(PoolState::default()),
        wake: Condvar::new(),
    })
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // The state stays consistent at every unlock; a panic elsewhere cannot break it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts one job's runner on a pooled thread (a new one if none is idle).
pub(crate) fn start(request: RunRequest) -> io::Result<()> {
    let pool = pool();
    let control = request.control.clone();
    let mut state = pool.lock();
    state.requests.push_back(request);
    if state.requests.len() <= state.idle {
        pool.wake.notify_one();
        return Ok(());
    }
    state.threads += 1;
    drop(state);
    let spawned = std::thread::Builder::new()
        .name("offload-runner".into())
        .spawn(move || runner_thread(pool));
    let Err(err) = spawned else {
        return Ok(());
    };
    let mut state = pool.lock();
    state.threads -= 1;
    if state.threads > 0 {
        // A busy thread takes the request when its job ends.
        return Ok(());
    }
    // Nobody will run it: take it back, and the caller reports the job as not started.
    if let Some(at) = state
        .requests
        .iter()
        .position(|r| Arc::ptr_eq(&r.control, &control))
    {
        state.requests.remove(at);
    }
    Err(err)
}

fn runner_thread(pool: &Pool) {
    let mut state = pool.lock();
    state.idle += 1;
    loop {
        if let Some(request) = state.requests.pop_front() {
            state.idle -= 1;
            drop(state);
            let events = request.events.clone();
            let finished = run(request);
            // Count this thread as idle before the queue hears of the end: the queue may start
            // the next job at once, and should find this thread rather than make another.
            pool.lock().idle += 1;
            let _ = events.try_send(finished);
            state = pool.lock();
            continue;
        }
        let (next, waited) = pool
            .wake
            .wait_timeout(state, IDLE_THREAD_LIFETIME)
            .unwrap_or_else(PoisonError::into_inner);
        state = next;
        if waited.timed_out() && state.requests.is_empty() {
            state.idle -= 1;
            state.threads -= 1;
            return;
        }
    }
}

/// Runs one job to its end; gives the event that reports it.
fn run(request: RunRequest) -> RunnerEvent {
    let RunRequest {
        id,
        job,
        input,
        decode,
        control,
        events,
    } = request;
    let started = Instant::now();
    let (result, stats) = match spawn(&job) {
        Err(error) => (Err(error), RunStats::default()),
        Ok(child) => {
            let _ = events.try_send(RunnerEvent::Started { id, pid: child.pid });
            let ended = supervise(id, &job, child, input, &control, &events);
            let stats = RunStats {
                pid: Some(ended.pid),
                wall: started.elapsed(),
                cpu: ended.cpu,
                peak_rss_bytes: ended.peak_rss_bytes,
            };
            (classify(ended, &job, decode), stats)
        }
    };
    // Close our last descriptor (the cancel eventfd, shared with the queue's record) before
    // reporting, so that a delivered result means the job holds no descriptor any more.
    drop(control);
    RunnerEvent::Finished { id, result, stats }
}

/// A started processor and our ends of its pipes.
struct Spawned {
    pid: u32,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    progress: OwnedFd,
}

fn spawn(job: &Job) -> Result<Spawned, JobError> {
    let path = job.processor.path();
    let cannot_start = |message: String| JobError::new(FailureKind::CouldNotStart, message);
    let pipes =
        || -> io::Result<[(OwnedFd, OwnedFd); 4]> { Ok([pipe()?, pipe()?, pipe()?, pipe()?]) };
    let [stdin, stdout, stderr, progress] =
        pipes().map_err(|err| cannot_start(format!("cannot create pipes: {err}")))?;
    let mut env = job.environment();
    env.push((
        PROGRESS_FD_ENV.into(),
        progress.1.as_raw_fd().to_string().into(),
    ));
    let fds = ChildFds {
        stdin: stdin.0.as_raw_fd(),
        stdout: stdout.1.as_raw_fd(),
        stderr: stderr.1.as_raw_fd(),
        progress: progress.1.as_raw_fd(),
    };
    let settings = ChildSettings {
        nice: job.nice,
        cpu_limit_secs: job
            .limits
            .max_cpu_time
            .map(|t| t.as_secs() + u64::from(t.subsec_nanos() > 0)),
    };
    let pid = crate::spawn::spawn(path, &job.args, &env, fds, &settings)
        .map_err(|err| cannot_start(spawn_error_message(path, &err)))?;
    // The child's ends close here; ours stay.
    let spawned = Spawned {
        pid: pid as u32,
        stdin: stdin.1,
        stdout: stdout.0,
        stderr: stderr.0,
        progress: progress.0,
    };
    for fd in [
        &spawned.stdin,
        &spawned.stdout,
        &spawned.stderr,
        &spawned.progress,
    ] {
        set_nonblocking(fd.as_raw_fd());
    }
    // Larger pipes mean fewer wake-ups for big inputs and results; best effort.
    for fd in [&spawned.stdin, &spawned.stdout] {
        // SAFETY: fcntl on descriptors we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    }
    Ok(spawned)
}

fn spawn_error_message(path: &std::path::Path, err: &io::Error) -> String {
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

/// Why the runner stopped a job itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Cancelled,
    TimedOut,
    OutputTooLarge,
    /// Resident memory reached this many bytes, over the limit.
    MemoryLimit(u64),
}

/// How often resident memory is sampled when a job has a memory limit.
const MEMORY_SAMPLE: Duration = Duration::from_millis(20);

/// What the supervision loop saw.
struct Ended {
    pid: u32,
    stop: Option<Stop>,
    /// From waitpid: exit code or signal.
    exit_code: Option<i32>,
    signal: Option<i32>,
    /// Whether SIGKILL was needed after SIGTERM.
    escalated: bool,
    stdout: Vec<u8>,
    stderr_tail: String,
    cpu: Duration,
    peak_rss_bytes: u64,
}

fn supervise(
    id: JobId,
    job: &Job,
    child: Spawned,
    input: Arc<Vec<u8>>,
    control: &Control,
    events: &async_channel::Sender<RunnerEvent>,
) -> Ended {
    let limits = job.limits;
    let started = Instant::now();
    let pgid = child.pid as libc::pid_t;
    let pidfd = pidfd_open(pgid);

    let mut stdin = Some(File::from(child.stdin));
    let mut stdout = Some(File::from(child.stdout));
    let mut stderr = Some(File::from(child.stderr));
    let mut progress = Some(File::from(child.progress));
    let mut input = Some(input);
    let mut written = 0usize;
    let mut out = Vec::new();
    let mut tail = Tail::new(limits.stderr_tail_bytes);
    let mut progress_parser = ProgressParser::default();
    let mut scratch = vec![0u8; 64 * 1024];

    let deadline = limits.timeout.map(|t| started + t);
    let mut stop: Option<Stop> = None;
    let mut kill_at: Option<Instant> = None;
    let mut escalated = false;
    let mut exited = false;
    let mut drain_until: Option<Instant> = None;
    let mut last_progress = Instant::now() - PROGRESS_INTERVAL;
    let mut next_memory_sample = Instant::now();

    let request_stop = |reason: Stop, stop: &mut Option<Stop>, kill_at: &mut Option<Instant>| {
        if stop.is_none() {
            *stop = Some(reason);
            if matches!(reason, Stop::OutputTooLarge | Stop::MemoryLimit(_)) {
                signal_group(pgid, libc::SIGKILL);
            } else {
                signal_group(pgid, libc::SIGTERM);
                *kill_at = Some(Instant::now() + limits.grace);
            }
        }
    };
    let on_cancel = |stop: &mut Option<Stop>, kill_at: &mut Option<Instant>| {
        request_stop(Stop::Cancelled, stop, kill_at);
        if control.is_hard() {
            signal_group(pgid, libc::SIGKILL);
        }
    };
    if control.is_cancelled() {
        on_cancel(&mut stop, &mut kill_at);
    }

    loop {
        if exited && stdout.is_none() && stderr.is_none() && progress.is_none() {
            break;
        }
        let now = Instant::now();
        if drain_until.is_some_and(|t| now >= t) {
            break;
        }
        if !exited {
            if deadline.is_some_and(|d| now >= d) {
                request_stop(Stop::TimedOut, &mut stop, &mut kill_at);
            }
            if kill_at.is_some_and(|t| now >= t) {
                signal_group(pgid, libc::SIGKILL);
                escalated = true;
                kill_at = None;
            }
        }
        if let (Some(limit), false) = (limits.max_memory_bytes, exited) {
            if now >= next_memory_sample {
                next_memory_sample = now + MEMORY_SAMPLE;
                if let Some(rss) = resident_bytes(pgid).filter(|rss| *rss > limit) {
                    request_stop(Stop::MemoryLimit(rss), &mut stop, &mut kill_at);
                }
            }
        }
        if let Some(item) = progress_parser.latest.take() {
            if now >= last_progress + PROGRESS_INTERVAL {
                last_progress = now;
                let _ = events.try_send(RunnerEvent::Progress { id, item });
            } else {
                progress_parser.latest = Some(item);
            }
        }

        // Build the poll set.
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(6);
        let mut push = |fd: RawFd, events: libc::c_short| {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
        };
        let waiting_for_input = input.is_some() && stdin.is_some();
        push(
            raw(stdin.as_ref().filter(|_| waiting_for_input)),
            libc::POLLOUT,
        );
        push(raw(stdout.as_ref()), libc::POLLIN);
        push(raw(stderr.as_ref()), libc::POLLIN);
        push(raw(progress.as_ref()), libc::POLLIN);
        push(
            if exited {
                -1
            } else {
                pidfd.as_ref().map_or(-1, AsRawFd::as_raw_fd)
            },
            libc::POLLIN,
        );
        push(control.wake.as_raw_fd(), libc::POLLIN);

        let mut wake_at = [
            if stop.is_none() && !exited {
                deadline
            } else {
                None
            },
            kill_at.filter(|_| !exited),
            drain_until,
            progress_parser
                .latest
                .as_ref()
                .map(|_| last_progress + PROGRESS_INTERVAL),
            // Without a pidfd, look at the child every 20 ms.
            if pidfd.is_none() && !exited {
                Some(now + Duration::from_millis(20))
            } else {
                None
            },
            limits
                .max_memory_bytes
                .filter(|_| !exited)
                .map(|_| next_memory_sample),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.saturating_duration_since(now));
        if let Some(t) = wake_at.as_mut() {
            // Round up so that the loop does not spin just before a deadline.
            *t += Duration::from_micros(500);
        }
        let timeout_ms = wake_at.map_or(-1, |t| {
            libc::c_int::try_from(t.as_millis()).unwrap_or(libc::c_int::MAX)
        });
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // poll itself failing is not recoverable: stop the job and finish.
            request_stop(Stop::Cancelled, &mut stop, &mut kill_at);
            signal_group(pgid, libc::SIGKILL);
            break;
        }
        let has = |i: usize| fds[i].revents != 0;

        if has(0) {
            if let (Some(pipe), Some(bytes)) = (stdin.as_mut(), input.as_ref()) {
                match write_some(pipe, &bytes[written..]) {
                    Ok(n) => written += n,
                    // EPIPE: the processor closed stdin; it is judged by its output.
                    Err(_) => written = bytes.len(),
                }
                if written >= bytes.len() {
                    // All sent (or refused): close stdin and free the input.
                    stdin = None;
                    input = None;
                }
            }
        }
        if has(1) {
            if let Some(pipe) = stdout.as_mut() {
                let cap = limits
                    .max_output_bytes
                    .saturating_add(1)
                    .saturating_sub(out.len());
                match pipe.take(cap as u64).read_to_end(&mut out) {
                    Ok(_) if out.len() > limits.max_output_bytes => {
                        stdout = None;
                        request_stop(Stop::OutputTooLarge, &mut stop, &mut kill_at);
                    }
                    Ok(_) => stdout = None,
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::Interrupted =>
                    {
                        if out.len() > limits.max_output_bytes {
                            stdout = None;
                            request_stop(Stop::OutputTooLarge, &mut stop, &mut kill_at);
                        }
                    }
                    Err(_) => stdout = None,
                }
            }
        }
        if has(2) && drain(&mut stderr, &mut scratch, |chunk| tail.push(chunk)) {
            stderr = None;
        }
        if has(3)
            && drain(&mut progress, &mut scratch, |chunk| {
                progress_parser.push(chunk)
            })
        {
            progress = None;
        }
        if has(4) {
            exited = true;
        } else if pidfd.is_none() && !exited {
            exited = has_exited(pgid);
        }
        if exited && drain_until.is_none() {
            // Take the rest of the group down with the processor, then drain what is left.
            signal_group(pgid, libc::SIGKILL);
            drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
            stdin = None;
            input = None;
        }
        if has(5) {
            let mut counter = [0u8; 8];
            // SAFETY: reading 8 bytes from our nonblocking eventfd into a live buffer.
            unsafe { libc::read(control.wake.as_raw_fd(), counter.as_mut_ptr().cast(), 8) };
            if !exited {
                on_cancel(&mut stop, &mut kill_at);
            }
        }
    }

    if !exited {
        // Only reached when poll failed; the group was sent SIGKILL.
        signal_group(pgid, libc::SIGKILL);
    }
    drop(pidfd);
    let (status, usage) = reap(pgid);
    let (exit_code, signal) = if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (Some(libc::WEXITSTATUS(status)), None)
    };
    Ended {
        pid: child.pid,
        stop,
        exit_code,
        signal,
        escalated,
        stdout: out,
        stderr_tail: tail.text(),
        cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
        peak_rss_bytes: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
    }
}

fn classify(ended: Ended, job: &Job, decode: Decoder) -> RawResult {
    let limits = job.limits;
    let fail = |kind: FailureKind, message: String| JobError {
        kind,
        message,
        exit_code: ended.exit_code,
        signal: ended.signal,
        stderr_tail: ended.stderr_tail.clone(),
    };
    let after_term = if ended.escalated {
        format!(
            "; it ignored SIGTERM and was killed after {:?}",
            limits.grace
        )
    } else {
        String::new()
    };
    match ended.stop {
        Some(Stop::Cancelled) => return Err(fail(FailureKind::Cancelled, format!("cancelled while running{after_term}"))),
        Some(Stop::TimedOut) => {
            let timeout = limits.timeout.unwrap_or_default();
            return Err(fail(
                FailureKind::TimedOut,
                format!("ran longer than its timeout of {timeout:?} and was stopped{after_term}"),
            ));
        }
        Some(Stop::MemoryLimit(rss)) => {
            return Err(fail(
                FailureKind::ResourceLimit,
                format!(
                    "went over its memory limit of {} (resident memory reached {}) and was killed",
                    mib(limits.max_memory_bytes.unwrap_or(0)),
                    mib(rss)
                ),
            ));
        }
        Some(Stop::OutputTooLarge) => {
            return Err(fail(
                FailureKind::BadOutput,
                format!(
                    "result over the limit of {} bytes; the processor was stopped (raise the output limit if this is expected)",
                    limits.max_output_bytes
                ),
            ))
        }
        None => {}
    }
    if let (Some(limit), Some(signal)) = (limits.max_cpu_time, ended.signal) {
        // RLIMIT_CPU sends SIGXCPU at the limit and SIGKILL a second later.
        if signal == libc::SIGXCPU || (signal == libc::SIGKILL && ended.cpu >= limit) {
            return Err(fail(
                FailureKind::ResourceLimit,
                format!(
                    "went over its CPU-time limit of {limit:?} (used {:.2} s) and was killed",
                    ended.cpu.as_secs_f64()
                ),
            ));
        }
    }
    if let Some(signal) = ended.signal {
        return Err(fail(
            FailureKind::Killed,
            format!("killed by {}", signal_name(signal)),
        ));
    }
    let code = ended.exit_code.unwrap_or(-1);
    if code != 0 {
        let limits = DecodeLimits {
            max_bytes: 1 << 20,
            max_depth: 16,
        };
        let reason = decode_one::<ErrorReport>(&ended.stdout, limits)
            .map(|report| report.error)
            .ok()
            .or_else(|| last_line(&ended.stderr_tail))
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        return Err(fail(
            FailureKind::Failed,
            format!("exited with code {code}{reason}"),
        ));
    }
    let limits = DecodeLimits {
        max_bytes: limits.max_output_bytes,
        max_depth: limits.max_output_depth,
    };
    decode(&ended.stdout, limits).map_err(|err| {
        fail(
            FailureKind::BadOutput,
            format!(
                "{err}; stdout began with {}",
                hex_preview(&ended.stdout, 16)
            ),
        )
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The resident memory of a process, from /proc/PID/statm.
fn resident_bytes(pid: libc::pid_t) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    Some(pages * page)
}

fn last_line(text: &str) -> Option<String> {
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
struct Tail {
    cap: usize,
    bytes: Vec<u8>,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            bytes: Vec::new(),
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * self.cap.max(1) {
            let cut = self.bytes.len() - self.cap;
            self.bytes.drain(..cut);
        }
    }

    fn text(&self) -> String {
        let start = self.bytes.len().saturating_sub(self.cap);
        String::from_utf8_lossy(&self.bytes[start..]).into_owned()
    }
}

/// Splits the progress pipe's CBOR sequence into items; ignores what it cannot read.
#[derive(Default)]
struct ProgressParser {
    buffer: Vec<u8>,
    broken: bool,
    latest: Option<ProgressItem>,
}

impl ProgressParser {
    fn push(&mut self, chunk: &[u8]) {
        if self.broken {
            return;
        }
        self.buffer.extend_from_slice(chunk);
        loop {
            let mut rest = &self.buffer[..];
            match ciborium::de::from_reader_with_recursion_limit::<ciborium::Value, _>(
                &mut rest, 16,
            ) {
                Ok(value) => {
                    let used = self.buffer.len() - rest.len();
                    self.buffer.drain(..used);
                    if let Ok(item) = value.deserialized::<ProgressItem>() {
                        if item.fraction.is_finite() {
                            self.latest = Some(item);
                        }
                    }
                }
                Err(ciborium::de::Error::Io(_)) => break, // incomplete: wait for more
                Err(_) => {
                    self.broken = true;
                    self.buffer = Vec::new();
                    return;
                }
            }
        }
        if self.buffer.len() > MAX_PROGRESS_BUFFER {
            self.broken = true;
            self.buffer = Vec::new();
        }
    }
}

fn raw(file: Option<&File>) -> RawFd {
    file.map_or(-1, AsRawFd::as_raw_fd)
}

/// Reads everything available; returns true at end of file or on error.
fn drain(file: &mut Option<File>, scratch: &mut [u8], mut sink: impl FnMut(&[u8])) -> bool {
    let Some(f) = file.as_mut() else {
        return false;
    };
    // Bounded rounds, so that a flood on one pipe cannot starve the others.
    for _ in 0..16 {
        match f.read(scratch) {
            Ok(0) => return true,
            Ok(n) => sink(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    false
}

fn write_some(pipe: &mut File, bytes: &[u8]) -> io::Result<usize> {
    let mut total = 0;
    while total < bytes.len() {
        match pipe.write(&bytes[total..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the two-element array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags != -1 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative result is a fresh descriptor.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Whether the child has exited, without reaping it (so its group id stays reserved).
fn has_exited(pid: libc::pid_t) -> bool {
    // SAFETY: waitid with WNOWAIT only inspects the child's state.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) == 0 && info.si_pid() != 0
    }
}

fn signal_group(pgid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: the group leader is our unreaped child, so the group id cannot have been reused.
    unsafe { libc::kill(-pgid, signal) };
}

/// Reaps the child and returns its wait status and resource usage.
fn reap(pid: libc::pid_t) -> (libc::c_int, libc::rusage) {
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

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(u64::try_from(tv.tv_sec).unwrap_or(0))
        + Duration::from_micros(u64::try_from(tv.tv_usec).unwrap_or(0))
}
