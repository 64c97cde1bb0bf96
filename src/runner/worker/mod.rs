//! One persistent worker (PROTOCOL.md, section 18): a processor process started with
//! `--persistent` that serves job after job over frames on its stdin and stdout. What is a
//! worker's own is here: writing frames and splitting them (`talk.rs`, `frames.rs`), its start
//! and hello, its life between jobs, a job on it (`job.rs`) and pipelining (`pipeline.rs`).
//! The process itself (pipes, exit, cancel, deadlines) is supervised as a one-shot run's is
//! (`process.rs`), and its end is judged by the same classifier (`exit.rs`).

mod frames;
mod job;
mod pipeline;
mod talk;

use std::os::fd::RawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use offload_sdk::frame::{self, PERSISTENT_FLAG, PERSISTENT_PROTOCOL};

use super::child::{spawn, FileId, Launch, PeakMemory};
use super::exit::{judge, Verdict};
use super::memory::Enforcement;
use super::process::{Exit, Outgoing, Source, Supervised, Want};
use super::stop::{Stop, Watch};
use super::Control;
use crate::job::{Job, JobId, RunLimits};
use crate::outcome::{FailureKind, JobError};
use frames::{Exchange, Expect, Frames};

pub(super) use job::{Fate, Order};
pub(super) use pipeline::Pipeline;

/// What woke an idle worker.
pub(super) enum Idle {
    /// Its slot's eventfd: a request or a retirement.
    Woken,
    /// Nothing happened until the deadline.
    TimedOut,
    /// The worker ended (and was reaped), or broke the protocol between jobs and was killed.
    Ended,
}

/// A live worker process.
pub(super) struct WorkerProcess {
    number: u64,
    process: Supervised,
    frames: Frames,
    /// Its peak memory per job (its own process: a remote worker's is not measured).
    peak: PeakMemory,
    /// The executable it was started from.
    exe: Option<FileId>,
    jobs: u64,
    /// The soft rlimits set on it for the current job (so the next job lifts them).
    limited: job::Limited,
    /// How jobs' memory limits hold on this worker (jobs of a key all have one, or none).
    memory: Option<Enforcement>,
    pipeline: pipeline::Pipelining,
}

impl WorkerProcess {
    /// Starts `job`'s processor as worker number `number` and waits for its hello, at most
    /// `timeout` (a cancel of job `id` stops the start too). On failure the process is gone and
    /// the error says why, with the same kinds as a job's failures; a launcher's host that
    /// could not be reached is tried no more, and another is.
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
        let _span =
            tracing::debug_span!("worker", number, processor = job.processor.name()).entered();
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
        let pid = child.guarded.processor;
        let remote = child.guarded.remote().cloned();
        let (process, _) = Supervised::new(child, job.limits.stderr_tail_bytes);
        let mut worker = Self {
            number,
            // Of srun or ssh, for a remote worker: not measured.
            peak: if remote.is_some() {
                PeakMemory::none()
            } else {
                PeakMemory::open(pid)
            },
            process,
            frames: Frames::new(&job.limits),
            exe,
            jobs: 0,
            limited: job::Limited::default(),
            memory,
            pipeline: pipeline::Pipelining::default(),
        };
        let limits = RunLimits {
            timeout: Some(timeout),
            max_memory_bytes: None,
            ..job.limits
        };
        let mut watch = Watch::new(
            id,
            worker.process.guarded.clone(),
            limits,
            control,
            Instant::now(),
        );
        let mut hello = Outgoing::new(frame::hello(PERSISTENT_PROTOCOL, None, None), None);
        let broken = match worker.talk(&mut hello, &mut Expect::Hello, &mut watch, None) {
            Exchange::Hello(_) if watch.stopped().is_some() => None,
            // A worker answers with a version the host's hello allows (PROTOCOL.md 18.4): this
            // host speaks exactly one.
            Exchange::Hello(protocol) if protocol == u64::from(PERSISTENT_PROTOCOL) => {
                tracing::debug!(pid, "started and said hello");
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
            worker.talk(&mut hello, &mut Expect::Exit, &mut watch, None);
        }
        let exit = worker.end();
        // Killed by us, not ended by itself: it closed its stdout and lived on.
        let broken = broken.or_else(|| {
            (worker.frames.ended && exit.signal == Some(libc::SIGKILL) && watch.stopped().is_none())
                .then(|| "it closed its stdout before its hello".to_owned())
        });
        let tail = worker.process.tail.text();
        let ending = watch.ending(exit.code, exit.signal, exit.cpu);
        let not_ready = |why: &str| format!("the persistent worker did not start: {why}");
        let retry_elsewhere = || remote.as_ref().is_some_and(|r| r.retry_elsewhere());
        let error = match (
            broken,
            judge(job, &worker.process.guarded, &ending, &tail, None),
        ) {
            (_, Verdict::Failed(mut error)) if error.kind == FailureKind::LaunchFailed => {
                error.message = not_ready(&error.message);
                return Err((error, retry_elsewhere()));
            }
            (Some(why), _) => ending.fail(FailureKind::BadOutput, not_ready(&why), &tail),
            (None, Verdict::Failed(mut error)) => {
                error.message = if watch.stopped() == Some(Stop::TimedOut) {
                    not_ready(&format!("no hello within {timeout:?}"))
                } else if error.kind == FailureKind::Failed {
                    // "exited with code N: why": when.
                    not_ready(&format!("it {} (before its hello)", error.message))
                } else {
                    not_ready(&error.message)
                };
                error
            }
            (None, Verdict::Clean) => ending.fail(
                FailureKind::BadOutput,
                not_ready("it exited with code 0 before its hello"),
                &tail,
            ),
        };
        tracing::info!(why = %error.message, "did not start");
        Err((error, false))
    }

    /// Waits, between jobs, for `wake` to be readable or `until` to pass. Drains stderr
    /// meanwhile; a worker that exits is reaped, and one that writes anything but late
    /// progress to stdout between jobs, or closes its stdin, is ended.
    pub(super) fn wait_idle(&mut self, wake: RawFd, until: Option<Instant>) -> Idle {
        loop {
            if self.process.exited() {
                self.end();
                return Idle::Ended;
            }
            if !self.frames.only_late_progress() || self.frames.ended {
                // A frame after the job's answer (not late progress, which is harmless), or
                // stdout's end: the worker is out of step, or leaving.
                tracing::info!(worker = self.number, "wrote between jobs; ended");
                self.end();
                return Idle::Ended;
            }
            if until.is_some_and(|t| Instant::now() >= t) {
                return Idle::TimedOut;
            }
            let want = Want {
                write: false,
                also: vec![(Source::Slot, wake)],
                until,
            };
            let Ok(ready) = self.process.wait(None, &want) else {
                self.end();
                return Idle::Ended;
            };
            if ready.has(Source::Output) {
                self.frames.read(&mut self.process.stdout);
            }
            if self.process.input_closed() {
                // It can take no more requests.
                self.end();
                return Idle::Ended;
            }
            if ready.has(Source::Slot) {
                return Idle::Woken;
            }
        }
    }

    /// Ends the worker gracefully: closes its stdin (a worker exits at end of input) and
    /// waits up to `grace` before SIGKILL.
    pub(super) fn retire(mut self, grace: Duration) {
        tracing::debug!(worker = self.number, jobs = self.jobs, "retired");
        self.process.stdin = None;
        // Whatever it still says is not for anyone.
        self.process.stdout = None;
        let until = Instant::now() + grace;
        while !self.process.exited() && Instant::now() < until {
            let want = Want {
                until: Some(until),
                ..Want::default()
            };
            if self.process.wait(None, &want).is_err() {
                break;
            }
        }
        self.end();
    }

    /// Kills the worker's process group (unless it has exited), reaps it, and gives how it
    /// ended. Idempotent.
    fn end(&mut self) -> Exit {
        self.process.end()
    }

    /// Where it runs, when a launcher started it elsewhere.
    pub(super) fn host(&self) -> Option<String> {
        self.process.guarded.remote().map(|r| r.host())
    }

    /// The worker's number.
    pub(super) fn number(&self) -> u64 {
        self.number
    }

    /// The worker's process id.
    pub(super) fn pid(&self) -> u32 {
        self.process.guarded.processor as u32
    }

    /// How many jobs it has been given.
    pub(super) fn jobs(&self) -> u64 {
        self.jobs
    }

    /// Whether the executable it was started from has changed on disk since.
    pub(super) fn executable_changed(&self, path: &Path) -> bool {
        FileId::of(path) != self.exe
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.end();
    }
}
