//! One persistent worker (PROTOCOL.md, section 18): a processor process started with
//! `--persistent` that serves job after job over frames on its stdin and stdout, and the
//! supervision of each job it runs.
//!
//! The job loop is the one-shot loop's twin: one `poll(2)` over stdin (the request, written
//! as the pipe takes it), stdout (frames, split as they arrive), stderr (a tail per job), a
//! pidfd and the job's cancel eventfd, with the same [`Watch`] over timeout, cancel, memory
//! and grace. What differs is the end: a `result` or `error` frame ends the job and leaves the
//! worker serving; the worker's death, a broken frame stream or a stop by the runner ends the
//! job and the worker with it. A request the worker never read a byte of was not delivered:
//! the caller may give it to a fresh worker.

use std::any::Any;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use offload_sdk::decode::{hex_preview, DecodeError, DecodeLimits};
use offload_sdk::frame::{self, Frame, PERSISTENT_FLAG, PERSISTENT_PROTOCOL};
use offload_sdk::protocol::ProgressItem;
use offload_sdk::sequence::SequenceBuffer;

use super::child::{
    cpu_time, last_line, pidfd_open, reap, set_soft_limit, spawn, timeval, unread_bytes,
    whole_seconds, FileId, JobProcess, Launch, PeakMemory, Tail,
};
use super::memory::Enforcement;
use super::oneshot::poll_timeout;
use super::stop::{Stop, Watch};
use super::{Control, Decoder, RawResult, RunRequest, RunnerEvent};
use crate::job::{Job, JobId, RunLimits};
use crate::outcome::{FailureKind, JobError};

/// How long a job's `Started` event waits, so that a job that ends sooner reaches the main loop
/// as one wake-up (`Started` and `Finished` together) rather than two.
const ANNOUNCE_AFTER: Duration = Duration::from_millis(2);

/// Room for a frame's own fields around its payload.
const FRAME_OVERHEAD: usize = 1024;

/// What the loop waits for.
enum Expect {
    /// The worker's `hello`.
    Hello,
    /// The answer to job `id`, whose result `decode` turns into the caller's type.
    Answer {
        id: u64,
        decode: Option<Decoder>,
        limits: DecodeLimits,
    },
    /// Nothing more: the worker is being stopped; frames are ignored until it exits.
    Exit,
}

/// How an exchange with the worker ended.
enum Exchange {
    Hello(u64),
    Result(Result<Box<dyn Any + Send>, String>),
    Error(crate::outcome::Reported),
    /// The frame stream is unusable: why.
    Broken(String),
    /// A second answer to a job this worker answered before: the earlier job's fault, not
    /// the running one's. The worker is out of step.
    Stray(u64),
    /// It closed its stdin (a write failed with EPIPE) before the request was all written:
    /// it cannot have read the request whole.
    Refused,
    /// It closed its stdout and lives on: it can answer nothing any more.
    StdoutClosed,
    /// The process exited (it is not reaped yet).
    Exited,
}

/// What became of the worker after a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Still serving.
    Serving,
    /// Dead and reaped.
    Gone,
    /// Dead and reaped without having read a byte of the request: the job was not delivered.
    Undelivered,
    /// Replaced for another job's fault (it answered an earlier job again), or unable to
    /// take the request (it closed its stdin): this job is innocent and runs again on a fresh
    /// worker.
    Innocent,
}

/// One job's end on a worker.
pub(super) struct JobEnd {
    pub result: RawResult,
    /// How its memory limit held, if it had one.
    pub memory_limit: Option<crate::outcome::MemoryLimitKind>,
    pub cpu: Duration,
    pub peak_rss_bytes: u64,
    pub fate: Fate,
}

/// What woke an idle worker.
pub(super) enum Idle {
    /// Its slot's eventfd: a request or a retirement.
    Woken,
    /// Nothing happened until the deadline.
    TimedOut,
    /// The worker ended (and was reaped), or broke the protocol between jobs and was killed.
    Ended,
}

/// A request being written: the frame's head, then the job's input as it is.
struct Outgoing {
    head: Vec<u8>,
    body: Option<Arc<Vec<u8>>>,
    sent: usize,
    /// The worker closed its stdin (EPIPE): nothing more can be sent.
    refused: bool,
}

impl Outgoing {
    fn new(head: Vec<u8>, body: Option<Arc<Vec<u8>>>) -> Self {
        Self {
            head,
            body,
            sent: 0,
            refused: false,
        }
    }

    fn len(&self) -> usize {
        self.head.len() + self.body.as_ref().map_or(0, |b| b.len())
    }

    fn pending(&self) -> bool {
        !self.refused && self.sent < self.len()
    }

    /// Writes what the pipe takes; an error means the worker closed its stdin.
    fn write_to(&mut self, fd: RawFd) -> io::Result<()> {
        while self.pending() {
            let body: &[u8] = self.body.as_deref().map_or(&[], Vec::as_slice);
            let (head, body) = if self.sent < self.head.len() {
                (&self.head[self.sent..], body)
            } else {
                (&[][..], &body[self.sent - self.head.len()..])
            };
            let slices = [
                libc::iovec {
                    iov_base: head.as_ptr() as *mut libc::c_void,
                    iov_len: head.len(),
                },
                libc::iovec {
                    iov_base: body.as_ptr() as *mut libc::c_void,
                    iov_len: body.len(),
                },
            ];
            // SAFETY: both iovecs point into live buffers of the stated lengths.
            let n = unsafe { libc::writev(fd, slices.as_ptr(), 2) };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::WouldBlock => return Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(err),
                }
            }
            self.sent += n as usize;
        }
        self.body = None;
        Ok(())
    }
}

/// One job for [`WorkerProcess::run`].
pub(super) struct Order<'a> {
    pub id: JobId,
    pub job: &'a Job,
    pub input: Arc<Vec<u8>>,
    pub control: &'a Control,
    pub events: &'a async_channel::Sender<RunnerEvent>,
}

/// A live worker process and our ends of its pipes.
pub(super) struct WorkerProcess {
    number: u64,
    /// The processor (the worker) and its guard.
    job: JobProcess,
    /// The processor's pid.
    pid: u32,
    pidfd: Option<OwnedFd>,
    stdin: Option<File>,
    stdout: Option<File>,
    stderr: Option<File>,
    frames: SequenceBuffer,
    /// Stdout ended (the worker closed it, or died).
    stdout_ended: bool,
    /// The worker closed its stdin (its end of the pipe): no request can reach it any more.
    stdin_closed: bool,
    /// The ids of the last jobs sent, to tell a late second answer to one of them.
    sent: std::collections::VecDeque<u64>,
    /// Stderr since the current job's request (or since the start).
    tail: Tail,
    peak: PeakMemory,
    exe: Option<FileId>,
    jobs: u64,
    cpu_limited: bool,
    data_limited: bool,
    /// How jobs' memory limits hold on this worker (jobs of a key all have one, or none).
    memory: Option<Enforcement>,
    exited: bool,
    reaped: bool,
    last_exit: Option<Exit>,
    scratch: Vec<u8>,
    /// Where the next job comes from while this one runs, for a worker that pipelines.
    pipeline: Option<Pipeline>,
    /// The next job, whose request is written while the current one runs (see [`Pipeline`]).
    ahead: Option<Ahead>,
}

/// Pipelining, for a worker behind a launcher: while a job runs, the job on deck at the
/// worker's slot is taken and its request written behind the running one's, so that the
/// worker finds it in its stdin when it answers, instead of waiting for a round trip through
/// srun or ssh. The worker still runs one job at a time, in order.
pub(super) struct Pipeline {
    /// Readable when a job was put on deck.
    pub wake: RawFd,
    /// Empties `wake`.
    pub clear: Box<dyn Fn() + Send>,
    /// Takes the job on deck, if any.
    pub take: Box<dyn Fn() -> Option<RunRequest> + Send>,
    /// No job goes ahead once the worker has run this many (it retires after them).
    pub max_jobs: u64,
}

/// A job whose request went (or is going) out ahead of its turn.
struct Ahead {
    id: JobId,
    out: Outgoing,
    /// Until the worker thread takes it, to run it next.
    request: Option<RunRequest>,
}

fn frame_limits(limits: &RunLimits) -> DecodeLimits {
    DecodeLimits {
        max_bytes: limits.max_output_bytes.saturating_add(FRAME_OVERHEAD),
        max_depth: limits.max_output_depth.saturating_add(1),
    }
}

/// How a worker process ended, from `wait4`.
#[derive(Debug, Clone, Copy)]
struct Exit {
    code: Option<i32>,
    signal: Option<i32>,
    /// CPU time over the process's whole life.
    cpu: Duration,
}

impl WorkerProcess {
    /// Starts `job`'s processor as worker number `number` and waits for its hello, at most
    /// `timeout` (a cancel of job `id` stops the start too). On failure the process is gone and
    /// the error says why, with the same kinds as a job's failures.
    pub(super) fn start(
        job: &Job,
        id: JobId,
        number: u64,
        timeout: Duration,
        control: &Control,
    ) -> Result<Self, JobError> {
        loop {
            match Self::start_once(job, id, number, timeout, control) {
                Err((error, true)) if error.kind == FailureKind::LaunchFailed => {}
                Err((error, _)) => return Err(error),
                Ok(worker) => return Ok(worker),
            }
        }
    }

    /// One try of [`WorkerProcess::start`]; on failure, also whether to try another host.
    fn start_once(
        job: &Job,
        id: JobId,
        number: u64,
        timeout: Duration,
        control: &Control,
    ) -> Result<Self, (JobError, bool)> {
        let exe = FileId::of(job.processor.path());
        let memory = Enforcement::for_job(job);
        let procs = memory.as_ref().and_then(Enforcement::procs_file);
        let launch = Launch {
            trailing_args: &[PERSISTENT_FLAG],
            progress_pipe: false,
            // Per job, on the running worker.
            cpu_limit: None,
            data_limit: None,
            cgroup: procs.as_deref(),
        };
        let child = spawn(job, &launch).map_err(|error| (error, false))?;
        let process = child.job;
        let pid = process.processor;
        let remote = process.remote().cloned();
        let mut worker = Self {
            number,
            job: process.clone(),
            pid: pid as u32,
            // The guard: it ends once the worker and everything below it are gone.
            pidfd: pidfd_open(process.guard),
            stdin: Some(File::from(child.stdin)),
            stdout: Some(File::from(child.stdout)),
            stderr: Some(File::from(child.stderr)),
            frames: SequenceBuffer::new(frame_limits(&job.limits)),
            stdout_ended: false,
            stdin_closed: false,
            sent: std::collections::VecDeque::new(),
            tail: Tail::of(&process, job.limits.stderr_tail_bytes),
            // Of srun or ssh, for a remote worker: not measured.
            peak: if remote.is_some() {
                PeakMemory::none()
            } else {
                PeakMemory::open(pid)
            },
            exe,
            jobs: 0,
            cpu_limited: false,
            data_limited: false,
            memory,
            exited: false,
            reaped: false,
            last_exit: None,
            scratch: vec![0u8; 64 * 1024],
            pipeline: None,
            ahead: None,
        };
        let limits = RunLimits {
            timeout: Some(timeout),
            max_memory_bytes: None,
            ..job.limits
        };
        let mut watch = Watch::new(id, process, limits, control, Instant::now());
        let mut hello = Outgoing::new(frame::hello(PERSISTENT_PROTOCOL, None, None), None);
        let not_ready = |why: &str| format!("the persistent worker did not start: {why}");
        let broken = match worker.exchange(&mut hello, &mut Expect::Hello, &mut watch, None) {
            Exchange::Hello(_) if watch.stopped().is_some() => None,
            // A worker answers with a version the host's hello allows (PROTOCOL.md 18.4): this
            // host speaks exactly one.
            Exchange::Hello(protocol) if protocol == u64::from(PERSISTENT_PROTOCOL) => {
                return Ok(worker);
            }
            Exchange::Hello(protocol) => Some(format!(
                "its hello says protocol {protocol}; this host speaks protocol \
                 {PERSISTENT_PROTOCOL} and said so in its hello"
            )),
            Exchange::Broken(why) => Some(why),
            Exchange::Stray(id) => Some(format!("an answer to job {id} before its hello")),
            // Judged by how it ended, below.
            Exchange::StdoutClosed
            | Exchange::Result(_)
            | Exchange::Error(_)
            | Exchange::Refused
            | Exchange::Exited => None,
        };
        if broken.is_none() && watch.stopped().is_some() {
            // Cancelled or timed out: it gets its grace period, as a job would.
            worker.exchange(&mut hello, &mut Expect::Exit, &mut watch, None);
        }
        let exit = worker.end();
        // Killed by us, not ended by itself: it closed its stdout and lived on.
        let broken = broken.or_else(|| {
            (worker.stdout_ended && exit.signal == Some(libc::SIGKILL) && watch.stopped().is_none())
                .then(|| "it closed its stdout before its hello".to_owned())
        });
        let tail = worker.tail.text();
        let ending = watch.ending(exit.code, exit.signal, exit.cpu);
        if let Some(remote) = remote.as_ref().filter(|_| watch.stopped().is_none()) {
            if let Some(mut error) = remote.launch_failure(exit.code, &tail) {
                error.message = not_ready(&error.message);
                return Err((error, remote.retry_elsewhere()));
            }
        }
        let fail = |error: JobError| Err((error, false));
        if let Some(why) = broken {
            return fail(ending.fail(FailureKind::BadOutput, not_ready(&why), &tail));
        }
        let sandbox_failure = job
            .sandbox
            .as_ref()
            .and_then(|_| super::sandbox::launch_failure(exit.code, &tail));
        fail(match ending.failure(&limits, &tail) {
            Some(mut error) => {
                error.message = if watch.stopped() == Some(Stop::TimedOut) {
                    not_ready(&format!("no hello within {timeout:?}"))
                } else {
                    not_ready(&error.message)
                };
                error
            }
            None if sandbox_failure.is_some() => ending.fail(
                FailureKind::CouldNotStart,
                sandbox_failure.unwrap_or_default(),
                &tail,
            ),
            None => {
                let code = exit.code.unwrap_or(-1);
                let reason = last_line(&tail)
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default();
                let kind = if code == 0 {
                    FailureKind::BadOutput
                } else {
                    FailureKind::Failed
                };
                let why = format!("it exited with code {code} before its hello{reason}");
                ending.fail(kind, not_ready(&why), &tail)
            }
        })
    }

    /// Lets this worker take the job on deck while a job runs (see [`Pipeline`]).
    pub(super) fn set_pipeline(&mut self, pipeline: Pipeline) {
        self.pipeline = Some(pipeline);
    }

    /// Takes the job on deck to write its request ahead, unless one is ahead already or the
    /// worker retires after the running job.
    fn take_ahead(&mut self) {
        let Some(pipeline) = self.pipeline.as_ref() else {
            return;
        };
        if self.ahead.is_some() || self.exited || self.jobs >= pipeline.max_jobs {
            return;
        }
        if let Some(request) = (pipeline.take)() {
            self.ahead = Some(Ahead {
                id: request.id,
                out: Outgoing::new(frame::job_head(request.id.0), Some(request.input.clone())),
                request: Some(request),
            });
        }
    }

    /// The job whose request went ahead, to run next (its request stays with this worker).
    pub(super) fn next_ahead(&mut self) -> Option<RunRequest> {
        self.ahead.as_mut().and_then(|a| a.request.take())
    }

    /// Whether it may take jobs ahead.
    pub(super) fn pipelines(&self) -> bool {
        self.pipeline.is_some()
    }

    /// Whether a job's request went ahead to this worker.
    pub(super) fn has_ahead(&self) -> bool {
        self.ahead.is_some()
    }

    /// Where it runs, when a launcher started it elsewhere.
    pub(super) fn host(&self) -> Option<String> {
        self.job.remote().map(|r| r.host())
    }

    /// The worker's number.
    pub(super) fn number(&self) -> u64 {
        self.number
    }

    /// The worker's process id.
    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// How many jobs it has been given.
    pub(super) fn jobs(&self) -> u64 {
        self.jobs
    }

    /// Whether the executable it was started from has changed on disk since.
    pub(super) fn executable_changed(&self, path: &Path) -> bool {
        FileId::of(path) != self.exe
    }

    /// Runs a job on the worker: sends the request and supervises it to its answer. `decode`
    /// is taken when a result arrives (left in place when the job was not delivered), and
    /// `started` is sent once the job has run a little (see [`ANNOUNCE_AFTER`]).
    pub(super) fn run(
        &mut self,
        order: Order<'_>,
        decode: &mut Option<Decoder>,
        started: RunnerEvent,
    ) -> JobEnd {
        let Order {
            id,
            job,
            input,
            control,
            events,
        } = order;
        let pid = self.pid as libc::pid_t;
        let limits = job.limits;
        // Its request went out ahead (while the job before it ran): it runs whatever happens.
        let sent_ahead = match self.ahead.take() {
            Some(ahead) if ahead.id == id => Some(ahead.out),
            other => {
                self.ahead = other;
                None
            }
        };
        if control.is_cancelled() && sent_ahead.is_none() {
            // Cancelled before its request went out: the worker stays out of it.
            return JobEnd {
                result: Err(JobError::new(
                    FailureKind::Cancelled,
                    "cancelled before it started",
                )),
                memory_limit: None,
                cpu: Duration::ZERO,
                peak_rss_bytes: 0,
                fate: Fate::Serving,
            };
        }
        if self.stdin_closed && sent_ahead.is_none() && !self.exited {
            // It closed its stdin after its last answer: this request cannot reach it.
            self.end();
            return JobEnd {
                result: Err(JobError::new(
                    FailureKind::BadOutput,
                    "its worker had closed its stdin",
                )),
                memory_limit: self.memory_limit(),
                cpu: Duration::ZERO,
                peak_rss_bytes: 0,
                fate: Fate::Innocent,
            };
        }
        self.jobs += 1;
        self.sent.push_back(id.0);
        if self.sent.len() > 1024 {
            self.sent.pop_front();
        }
        self.tail = Tail::of(&self.job, limits.stderr_tail_bytes);
        let local = self.job.remote().is_none();
        self.frames.set_limits(frame_limits(&limits));
        let cpu_start = cpu_time(pid).unwrap_or_default();
        if local && (limits.max_cpu_time.is_some() || self.cpu_limited) {
            // RLIMIT_CPU counts the process's whole life: this job's limit starts from now.
            let total = limits
                .max_cpu_time
                .map(|limit| whole_seconds(cpu_start + limit));
            self.cpu_limited =
                set_soft_limit(pid, libc::RLIMIT_CPU, total).is_ok() && total.is_some();
        }
        if let Some(memory) = self.memory.as_mut() {
            memory.next_job(limits.max_memory_bytes.unwrap_or(u64::MAX));
        }
        let data = limits.max_memory_bytes.filter(|_| {
            self.memory
                .as_ref()
                .is_some_and(|m| m.data_limit().is_some())
        });
        if data.is_some() || self.data_limited {
            self.data_limited =
                set_soft_limit(pid, libc::RLIMIT_DATA, data).is_ok() && data.is_some();
        }
        self.peak.reset();
        let mut request =
            sent_ahead.unwrap_or_else(|| Outgoing::new(frame::job_head(id.0), Some(input)));
        let mut expect = Expect::Answer {
            id: id.0,
            decode: decode.take(),
            limits: DecodeLimits {
                max_bytes: limits.max_output_bytes,
                max_depth: limits.max_output_depth,
            },
        };
        let began = Instant::now();
        // A cgroup holds the memory limit by itself; without one, sampling backs it up.
        let watched = RunLimits {
            max_memory_bytes: limits
                .max_memory_bytes
                .filter(|_| local && self.memory.as_ref().is_none_or(Enforcement::samples)),
            ..limits
        };
        let mut watch = Watch::new(id, self.job.clone(), watched, control, began);
        watch.announce_at(started, began + ANNOUNCE_AFTER);
        let exchange = self.exchange(&mut request, &mut expect, &mut watch, Some(events));
        // Whatever happens next, the queue hears that the job started before that it ended.
        watch.announce(events);
        if let Expect::Answer { decode: unused, .. } = &mut expect {
            // Still there unless a result was decoded: a fresh worker may need it.
            *decode = unused.take();
        }

        // The answer, unless the runner stopped the job (then the stop decides, as for a
        // one-shot run); a broken frame stream ends the worker.
        let stopped = watch.stopped().is_some();
        let innocent = !stopped && matches!(exchange, Exchange::Stray(_) | Exchange::Refused);
        let stdout_closed = !stopped && matches!(exchange, Exchange::StdoutClosed);
        let (answer, broken) = match exchange {
            _ if stopped => (None, None),
            Exchange::Result(Ok(value)) => (Some(Ok(value)), None),
            // The frame was sound, only the result was not what the caller asked for.
            Exchange::Result(Err(why)) => {
                (Some(Err(JobError::new(FailureKind::BadOutput, why))), None)
            }
            Exchange::Error(reported) => {
                let mut error = JobError::new(FailureKind::Failed, reported.error.clone());
                error.reported = Some(Box::new(reported));
                (Some(Err(error)), None)
            }
            Exchange::Broken(why) => (None, Some(why)),
            Exchange::Hello(_) => (None, Some("a second hello".to_owned())),
            Exchange::Stray(_) | Exchange::Refused | Exchange::StdoutClosed | Exchange::Exited => {
                (None, None)
            }
        };
        if let Some(result) = answer {
            let tail = self.tail.text();
            let result = result.map_err(|mut error| {
                error.stderr_tail = tail;
                error
            });
            let ahead_refused = self.ahead.as_ref().is_some_and(|a| a.out.refused);
            if self.exited || ahead_refused {
                // It answered, then ended (as a processor does after a panic), or it cannot
                // take the request written ahead of its turn: that job runs elsewhere.
                let exit = self.end();
                return JobEnd {
                    result: self.judge(result),
                    memory_limit: self.memory_limit(),
                    cpu: exit.cpu.saturating_sub(cpu_start),
                    peak_rss_bytes: 0,
                    fate: Fate::Gone,
                };
            }
            return JobEnd {
                result: self.judge(result),
                memory_limit: self.memory_limit(),
                // Of srun or ssh, for a remote worker: unknown.
                cpu: cpu_time(pid)
                    .filter(|_| local)
                    .map(|now| now.saturating_sub(cpu_start))
                    .unwrap_or_default(),
                peak_rss_bytes: self.peak.peak().unwrap_or(0),
                fate: Fate::Serving,
            };
        }
        if innocent {
            // Another job's fault, or a request it could not take: this one runs again on a
            // fresh worker. What it left on stderr is the worker's, not this job's.
            self.end();
            return JobEnd {
                result: Err(JobError::new(
                    FailureKind::BadOutput,
                    "its worker was replaced before it answered (the worker answered an \
                     earlier job again, or closed its stdin)",
                )),
                memory_limit: self.memory_limit(),
                cpu: Duration::ZERO,
                peak_rss_bytes: 0,
                fate: Fate::Innocent,
            };
        }
        // The job ends with the worker: it died, broke the protocol, or was stopped.
        if watch.stopped().is_some() && !self.exited {
            self.exchange(&mut request, &mut Expect::Exit, &mut watch, None);
        }
        let undelivered = broken.is_none()
            && watch.stopped().is_none()
            && self
                .stdin
                .as_ref()
                .and_then(|stdin| unread_bytes(stdin.as_raw_fd()))
                .is_some_and(|unread| {
                    unread == request.sent + self.ahead.as_ref().map_or(0, |a| a.out.sent)
                });
        let exit = self.end();
        let tail = self.tail.text();
        let ending = watch.ending(exit.code, exit.signal, exit.cpu.saturating_sub(cpu_start));
        let result = if let Some(why) = broken {
            Err(ending.fail(
                FailureKind::BadOutput,
                format!("the worker broke the frame protocol and was stopped: {why}"),
                &tail,
            ))
        } else if stdout_closed && exit.signal == Some(libc::SIGKILL) {
            // Killed by us (it had not ended by itself): it closed its stdout and lived on.
            Err(ending.fail(
                FailureKind::BadOutput,
                "the worker closed its stdout without answering and was replaced".to_owned(),
                &tail,
            ))
        } else if let Some(error) = self
            .job
            .remote()
            .filter(|_| watch.stopped().is_none())
            .and_then(|remote| remote.launch_failure(exit.code, &tail))
        {
            Err(error)
        } else if let Some(error) = ending.failure(&limits, &tail) {
            Err(error)
        } else {
            let code = exit.code.unwrap_or(-1);
            let reason = last_line(&tail)
                .map(|l| format!(": {l}"))
                .unwrap_or_default();
            Err(if code == 0 {
                ending.fail(
                    FailureKind::BadOutput,
                    format!("the worker exited (code 0) without answering the job{reason}"),
                    &tail,
                )
            } else {
                ending.fail(
                    FailureKind::Failed,
                    format!("exited with code {code}{reason}"),
                    &tail,
                )
            })
        };
        JobEnd {
            result: self.judge(result),
            memory_limit: self.memory_limit(),
            cpu: ending.cpu,
            peak_rss_bytes: 0,
            fate: if undelivered {
                Fate::Undelivered
            } else {
                Fate::Gone
            },
        }
    }

    /// A failure the memory limit caused, said as such (see [`Enforcement::judge`]).
    fn judge(&self, result: RawResult) -> RawResult {
        match &self.memory {
            Some(memory) => result.map_err(|error| memory.judge(error)),
            None => result,
        }
    }

    fn memory_limit(&self) -> Option<crate::outcome::MemoryLimitKind> {
        self.memory.as_ref().map(|m| m.kind)
    }

    /// Waits, between jobs, for `wake` to be readable or `until` to pass. Drains stderr
    /// meanwhile; a worker that exits is reaped, and one that writes to stdout between jobs
    /// (nothing may arrive then) is killed.
    pub(super) fn wait_idle(&mut self, wake: RawFd, until: Option<Instant>) -> Idle {
        loop {
            if self.reaped {
                return Idle::Ended;
            }
            if !self.only_late_progress() {
                // A frame after the job's answer (not a late progress frame, which is
                // harmless): the worker is out of step.
                self.end();
                return Idle::Ended;
            }
            let now = Instant::now();
            if until.is_some_and(|t| now >= t) {
                return Idle::TimedOut;
            }
            let mut fds = [
                pollfd(wake),
                pollfd(self.pidfd.as_ref().map_or(-1, AsRawFd::as_raw_fd)),
                pollfd(raw(self.stdout.as_ref())),
                pollfd(raw(self.stderr.as_ref())),
                // Asked for nothing: POLLERR once the worker has closed its stdin.
                libc::pollfd {
                    fd: raw(self.stdin.as_ref()),
                    events: 0,
                    revents: 0,
                },
            ];
            // Without a pidfd, look at the process every 100 ms.
            let until = match &self.pidfd {
                Some(_) => until,
                None => Some(until.map_or(now + Duration::from_millis(100), |t| {
                    t.min(now + Duration::from_millis(100))
                })),
            };
            // SAFETY: fds is a valid array of pollfd for the duration of the call.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), 5, poll_timeout(until, now)) };
            if ready < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.end();
                return Idle::Ended;
            }
            if fds[3].revents != 0 {
                self.read_stderr();
            }
            if fds[2].revents != 0 {
                self.read_stdout();
                if self.stdout_ended || !self.only_late_progress() {
                    // End of file, or more than late progress, on stdout between jobs: over.
                    self.end();
                    return Idle::Ended;
                }
            }
            if fds[4].revents != 0 {
                // It closed its stdin: it can take no more requests.
                self.end();
                return Idle::Ended;
            }
            if fds[1].revents != 0 || (self.pidfd.is_none() && has_exited(self.job.guard)) {
                self.exited = true;
                self.end();
                return Idle::Ended;
            }
            if fds[0].revents != 0 {
                return Idle::Woken;
            }
        }
    }

    /// Drops the complete progress frames waiting (progress after a job's answer, or for
    /// another job, is harmless: PROTOCOL.md 18.3); whether nothing else waits.
    fn only_late_progress(&mut self) -> bool {
        loop {
            match self.frames.next_range() {
                Ok(Some(range)) => {
                    let progress = Frame::parse(self.frames.get(range))
                        .is_ok_and(|frame| frame.kind() == frame::PROGRESS);
                    if !progress {
                        return false;
                    }
                }
                Ok(None) => return self.frames.is_empty(),
                Err(_) => return false,
            }
        }
    }

    /// Ends the worker gracefully: closes its stdin (a worker exits at end of input) and
    /// waits up to `grace` before SIGKILL.
    pub(super) fn retire(mut self, grace: Duration) {
        self.stdin = None;
        let until = Instant::now() + grace;
        while !self.exited {
            let now = Instant::now();
            if now >= until {
                break;
            }
            let mut fds = [
                pollfd(self.pidfd.as_ref().map_or(-1, AsRawFd::as_raw_fd)),
                pollfd(raw(self.stderr.as_ref())),
            ];
            let wake = Some(match &self.pidfd {
                Some(_) => until,
                None => until.min(now + Duration::from_millis(20)),
            });
            // SAFETY: fds is a valid array of pollfd for the duration of the call.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, poll_timeout(wake, now)) };
            if ready < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break;
            }
            if fds[1].revents != 0 {
                self.read_stderr();
            }
            if fds[0].revents != 0 || (self.pidfd.is_none() && has_exited(self.job.guard)) {
                self.exited = true;
            }
        }
        self.end();
    }

    /// Kills the worker's process group (the worker first, unless it has exited), reaps it,
    /// and gives its exit status. Idempotent.
    fn end(&mut self) -> Exit {
        let guard = self.job.guard;
        if !self.reaped {
            // The guard is unreaped until below, so its pid is still ours to signal; it kills
            // the worker's group and whatever the worker left behind, then exits as it did.
            self.job.kill();
            let (status, usage) = reap(guard);
            self.reaped = true;
            self.exited = true;
            let (code, signal) = self.job.ending(status);
            self.last_exit = Some(Exit {
                code,
                signal,
                cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
            });
            self.stdin = None;
            self.pidfd = None;
            // Keep what the group wrote to stderr, but never wait for leftover writers.
            self.read_stderr();
            self.stdout = None;
            self.stderr = None;
        }
        self.last_exit.unwrap_or(Exit {
            code: None,
            signal: None,
            cpu: Duration::ZERO,
        })
    }

    /// Talks to the worker until `expect` is met or the worker exits: writes `out`, splits
    /// stdout into frames, keeps stderr's tail, and lets `watch` act on deadlines and cancel.
    fn exchange(
        &mut self,
        out: &mut Outgoing,
        expect: &mut Expect,
        watch: &mut Watch<'_>,
        events: Option<&async_channel::Sender<RunnerEvent>>,
    ) -> Exchange {
        // When a pipe ended while the worker lived: it may be on its way out (a process closes
        // its pipes as it exits, or just before), so it has the grace period to end by itself.
        let mut pipe_ended_at: Option<Instant> = None;
        loop {
            // Frames already here (from an earlier read) come first.
            if let Some(exchange) = self.take_frames(expect, watch) {
                return exchange;
            }
            if self.exited {
                return Exchange::Exited;
            }
            let now = Instant::now();
            watch.tick(now);
            if let Some(events) = events {
                watch.send_progress(now, events);
            }
            let answering = matches!(expect, Expect::Answer { .. });
            if answering && !out.pending() {
                self.take_ahead();
            }
            let ahead_pending = self.ahead.as_ref().is_some_and(|a| a.out.pending());
            let writing =
                (out.pending() || ahead_pending) && self.stdin.is_some() && !self.stdin_closed;
            let pipeline_wake = self
                .pipeline
                .as_ref()
                .filter(|_| answering && self.ahead.is_none())
                .map_or(-1, |p| p.wake);
            let mut fds = [
                pollfd(raw(self.stdin.as_ref().filter(|_| !self.stdin_closed))),
                pollfd(raw(self.stdout.as_ref())),
                pollfd(raw(self.stderr.as_ref())),
                pollfd(self.pidfd.as_ref().map_or(-1, AsRawFd::as_raw_fd)),
                pollfd(watch.control_fd()),
                pollfd(pipeline_wake),
            ];
            // Room to write; when not writing, nothing but POLLERR: the worker closed its stdin.
            fds[0].events = if writing { libc::POLLOUT } else { 0 };
            let wake_at = [
                watch.wake_at(),
                pipe_ended_at.map(|t| t + watch.grace()),
                self.pidfd
                    .is_none()
                    .then(|| now + Duration::from_millis(20)),
            ]
            .into_iter()
            .flatten()
            .min();
            // SAFETY: fds is a valid array of pollfd for the duration of the call.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), 6, poll_timeout(wake_at, now)) };
            if ready < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // poll itself failing is not recoverable: stop the worker.
                watch.stop(Stop::Cancelled);
                self.end();
                return Exchange::Exited;
            }
            if fds[0].revents != 0 && !writing {
                // It closed its stdin after the request was written: did it read it whole?
                // (What it did not read stays countable in the pipe.)
                let unread = self
                    .stdin
                    .as_ref()
                    .and_then(|stdin| unread_bytes(stdin.as_raw_fd()))
                    .unwrap_or(0);
                // Kept open (what is unread is counted again if it exits), not polled again.
                self.stdin_closed = true;
                if unread > 0 {
                    out.refused = true;
                }
            }
            if fds[0].revents != 0 && writing {
                if let Some(stdin) = &self.stdin {
                    if out.write_to(stdin.as_raw_fd()).is_err() {
                        // EPIPE: the worker closed its stdin before it had the request whole
                        // (a worker that exited is judged by its exit, below).
                        out.refused = true;
                    }
                    if let Some(ahead) = self.ahead.as_mut().filter(|_| !out.pending()) {
                        if ahead.out.write_to(stdin.as_raw_fd()).is_err() {
                            ahead.out.refused = true;
                        }
                    }
                }
            }
            if fds[5].revents != 0 {
                if let Some(pipeline) = &self.pipeline {
                    (pipeline.clear)();
                }
            }
            if fds[2].revents != 0 {
                self.read_stderr();
            }
            if fds[1].revents != 0 {
                self.read_stdout();
            }
            if fds[3].revents != 0 || (self.pidfd.is_none() && has_exited(self.job.guard)) {
                // Its last frames are in the pipe already: read them before judging.
                self.exited = true;
                self.read_stdout();
            }
            if fds[4].revents != 0 {
                watch.on_control();
            }
            if watch.stopped().is_none() && !self.exited && !matches!(expect, Expect::Exit) {
                if let Some(exchange) = self.take_frames(expect, watch) {
                    return exchange;
                }
                // Whatever it still says, it can never take this request, or answer. (A pipe
                // also ends when the worker dies: then its exit decides, once it is seen.)
                if (out.refused || self.stdout_ended) && self.lives_on() {
                    let since = *pipe_ended_at.get_or_insert_with(Instant::now);
                    if since.elapsed() >= watch.grace() {
                        return if out.refused {
                            Exchange::Refused
                        } else {
                            Exchange::StdoutClosed
                        };
                    }
                }
            }
        }
    }

    /// Whether the worker lives on, not exiting: a pipe of a dying process ends (the kernel
    /// closes its files) a moment before its exit can be seen, and an OOM kill must read as
    /// the kill it is, not as a worker that closed its stdout.
    fn lives_on(&mut self) -> bool {
        if !self.exited && has_exited(self.job.guard) {
            self.exited = true;
        }
        !self.exited && super::child::lives_on(self.job.processor)
    }

    /// Acts on the complete frames received; returns when one ends the exchange.
    fn take_frames(&mut self, expect: &mut Expect, watch: &mut Watch<'_>) -> Option<Exchange> {
        loop {
            let range = match self.frames.next_range() {
                Ok(Some(range)) => range,
                Ok(None) => return None,
                Err(DecodeError::TooLarge { .. }) if matches!(expect, Expect::Answer { .. }) => {
                    // Drop what came, read no more, and stop the worker as a one-shot run
                    // over its output limit would be.
                    self.frames = SequenceBuffer::new(DecodeLimits::default());
                    self.stdout = None;
                    watch.stop(Stop::OutputTooLarge);
                    return None;
                }
                Err(err) => {
                    let shown = hex_preview(self.frames.pending_bytes(), 16);
                    return Some(Exchange::Broken(format!(
                        "{err} on stdout, which began with {shown}"
                    )));
                }
            };
            let bytes = self.frames.get(range);
            if let Expect::Exit = expect {
                continue;
            }
            let frame = match Frame::parse(bytes) {
                Ok(frame) => frame,
                Err(why) => {
                    let shown = hex_preview(bytes, 16);
                    return Some(Exchange::Broken(format!("{why} (it began with {shown})")));
                }
            };
            let kind = frame.kind();
            let expected_id = match expect {
                Expect::Hello => {
                    if kind == frame::HELLO {
                        let protocol = frame.field::<u64>("protocol", small()).ok().flatten();
                        return Some(Exchange::Hello(protocol.unwrap_or(0)));
                    }
                    if matches!(kind, frame::RESULT | frame::ERROR | frame::PROGRESS) {
                        return Some(Exchange::Broken(format!(
                            "a {kind} frame came before its hello"
                        )));
                    }
                    continue;
                }
                Expect::Answer { id, .. } => *id,
                Expect::Exit => continue,
            };
            let id = frame.id();
            match kind {
                frame::HELLO => {
                    return Some(Exchange::Broken("a second hello".into()));
                }
                // Progress of another job is harmless: ignored.
                frame::PROGRESS if id == Ok(Some(expected_id)) => {
                    if let Some(item) = progress_item(&frame) {
                        watch.progress(item);
                    }
                }
                frame::RESULT | frame::ERROR => {
                    match id {
                        Ok(Some(got)) if got == expected_id => {}
                        Ok(Some(got)) if self.sent.contains(&got) => {
                            return Some(Exchange::Stray(got));
                        }
                        Ok(Some(got)) => {
                            return Some(Exchange::Broken(format!(
                                "it answered job {got} while job {expected_id} was running"
                            )));
                        }
                        _ => {
                            return Some(Exchange::Broken(format!(
                                "a {kind} frame without a valid id"
                            )));
                        }
                    }
                    if kind == frame::ERROR {
                        let message = frame
                            .field::<String>("error", small())
                            .ok()
                            .flatten()
                            .unwrap_or_else(|| "the processor reported an error".into());
                        let kind = frame.field::<String>("kind", small()).ok().flatten();
                        return Some(Exchange::Error(crate::outcome::Reported {
                            error: message,
                            kind,
                        }));
                    }
                    let Expect::Answer { decode, limits, .. } = expect else {
                        return None;
                    };
                    let Some(result) = frame.field_bytes("result") else {
                        return Some(Exchange::Broken("a result frame without a result".into()));
                    };
                    let Some(decode) = decode.take() else {
                        return Some(Exchange::Broken("a second result".into()));
                    };
                    let decoded = decode(result, *limits).map_err(|err| {
                        format!("{err}; the result began with {}", hex_preview(result, 16))
                    });
                    return Some(Exchange::Result(decoded));
                }
                // Types this version does not know are for later versions: ignored.
                _ => {}
            }
        }
    }

    fn read_stdout(&mut self) {
        let Some(stdout) = self.stdout.as_mut() else {
            return;
        };
        // Bounded rounds, so that a flood cannot starve the rest of the loop.
        for _ in 0..16 {
            match self.frames.read_from(stdout, 64 * 1024) {
                Ok(0) => {
                    self.stdout = None;
                    self.stdout_ended = true;
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.stdout = None;
                    self.stdout_ended = true;
                    return;
                }
            }
        }
    }

    fn read_stderr(&mut self) {
        let Some(stderr) = self.stderr.as_mut() else {
            return;
        };
        for _ in 0..16 {
            match stderr.read(&mut self.scratch) {
                Ok(0) => {
                    self.stderr = None;
                    return;
                }
                Ok(n) => self.tail.push(&self.scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        // Never leave a worker or a zombie behind, whatever path dropped it.
        self.end();
    }
}

/// A progress frame's item; `None` when it is not a usable one.
fn progress_item(frame: &Frame<'_>) -> Option<ProgressItem> {
    let fraction = match frame.field::<ciborium::Value>("fraction", small()).ok()?? {
        ciborium::Value::Float(f) => f,
        ciborium::Value::Integer(i) => i128::from(i) as f64,
        _ => return None,
    };
    if !fraction.is_finite() {
        return None;
    }
    let message = frame.field::<String>("message", small()).ok().flatten();
    Some(ProgressItem {
        fraction: fraction.clamp(0.0, 1.0),
        message,
    })
}

/// Limits for a frame's small fields.
fn small() -> DecodeLimits {
    DecodeLimits {
        max_bytes: 1 << 20,
        max_depth: 16,
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn raw(file: Option<&File>) -> RawFd {
    file.map_or(-1, AsRawFd::as_raw_fd)
}

fn has_exited(pid: libc::pid_t) -> bool {
    super::child::has_exited(pid)
}
