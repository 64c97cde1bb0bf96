//! One job on a worker: its per-job limits set on the process, its request written, its
//! answer awaited, and its outcome: the answer; or, when the worker ends without one, the same
//! classification as a one-shot run (`exit.rs`); or, when it was not the job's fault, another
//! try on a fresh worker.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use offload_sdk::frame;

use super::super::child::{cpu_time, set_soft_limit, unread_bytes, whole_seconds, Tail};
use super::super::exit::{judge, Verdict};
use super::super::memory::Enforcement;
use super::super::process::Outgoing;
use super::super::stop::Watch;
use super::super::{Control, Decoder, RawResult, RunnerEvent};
use super::frames::{Exchange, Expect};
use super::WorkerProcess;
use crate::job::{Job, JobId, RunLimits};
use crate::outcome::{FailureKind, JobError, MemoryLimitKind};

/// How long a job's `Started` event waits, so that a job that ends sooner reaches the main loop
/// as one wake-up (`Started` and `Finished` together) rather than two.
const ANNOUNCE_AFTER: Duration = Duration::from_millis(2);

/// One job for [`WorkerProcess::run`].
pub(in crate::runner) struct Order<'a> {
    pub id: JobId,
    pub job: &'a Job,
    pub input: Arc<Vec<u8>>,
    pub decode: Decoder,
    pub control: &'a Control,
    pub events: &'a async_channel::Sender<RunnerEvent>,
}

/// What became of the worker after a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::runner) enum Fate {
    /// Still serving.
    Serving,
    /// Dead and reaped.
    Gone,
    /// Dead and reaped without having read a byte of the request: the job was not delivered.
    Undelivered,
    /// Replaced for another job's fault (it answered an earlier job again), or unable to take
    /// the request (it closed its stdin): this job is innocent and runs again on a fresh
    /// worker.
    Innocent,
}

/// One job's end on a worker.
pub(in crate::runner) struct JobEnd {
    pub result: RawResult,
    /// How its memory limit held, if it had one.
    pub memory_limit: Option<MemoryLimitKind>,
    pub cpu: Duration,
    pub peak_rss_bytes: u64,
    /// How the worker was made to yield the CPU to the host.
    pub cpu_share: Option<crate::outcome::CpuShare>,
    pub fate: Fate,
}

/// The soft rlimits set on a worker for its current job.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Limited {
    cpu: bool,
    data: bool,
}

impl WorkerProcess {
    /// Runs a job on the worker: sends the request and supervises it to its answer; `started`
    /// is sent once the job has run a little (see [`ANNOUNCE_AFTER`]).
    pub(in crate::runner) fn run(&mut self, order: Order<'_>, started: RunnerEvent) -> JobEnd {
        let Order {
            id,
            job,
            input,
            decode,
            control,
            events,
        } = order;
        let limits = job.limits;
        // Its request went out ahead (while the job before it ran): it runs whatever happens.
        let sent_ahead = self.pipeline.sent_ahead(id);
        if control.is_cancelled() && sent_ahead.is_none() {
            // Cancelled before its request went out: the worker stays out of it.
            let error = JobError::new(FailureKind::Cancelled, "cancelled before it started");
            return self.end_of(Err(error), Fate::Serving);
        }
        if self.process.input_closed() && sent_ahead.is_none() {
            // It closed its stdin after its last answer: this request cannot reach it.
            self.end();
            let error = JobError::new(FailureKind::BadOutput, "its worker had closed its stdin");
            return self.end_of(Err(error), Fate::Innocent);
        }
        let _span = tracing::debug_span!("job", id = id.0, worker = self.number).entered();
        self.jobs += 1;
        self.frames.sending(id.0);
        self.frames.set_limits(&limits);
        self.process.tail = Tail::of(&self.process.guarded, limits.stderr_tail_bytes);
        let cpu_start = self.set_limits(&limits);
        let mut request =
            sent_ahead.unwrap_or_else(|| Outgoing::new(frame::job_head(id.0), Some(input)));
        let mut expect = Expect::Answer {
            id: id.0,
            decode,
            limits,
        };
        let began = Instant::now();
        // A cgroup holds the memory limit by itself; without one, sampling backs it up.
        let local = self.process.guarded.remote().is_none();
        let watched = RunLimits {
            max_memory_bytes: limits
                .max_memory_bytes
                .filter(|_| local && self.memory.as_ref().is_none_or(Enforcement::samples)),
            ..limits
        };
        let mut watch = Watch::new(id, self.process.guarded.clone(), watched, control, began);
        watch.announce_at(started, began + ANNOUNCE_AFTER);
        let exchange = self.talk(&mut request, &mut expect, &mut watch, Some(events));
        // Whatever happens next, the queue hears that the job started before that it ended.
        watch.announce(events);

        // The answer, unless the runner stopped the job (then the stop decides, as for a
        // one-shot run); a broken frame stream ends the worker.
        let ended = exchange_kind(&exchange);
        let answer = match exchange {
            _ if watch.stopped().is_some() => None,
            Exchange::Result(Ok(value)) => Some(Ok(value)),
            // The frame was sound, only the result was not what the caller asked for.
            Exchange::Result(Err(why)) => Some(Err(JobError::new(FailureKind::BadOutput, why))),
            Exchange::Error(reported) => {
                let mut error = JobError::new(FailureKind::Failed, reported.error.clone());
                error.reported = Some(Box::new(reported));
                Some(Err(error))
            }
            Exchange::Stray(_) | Exchange::Refused => {
                tracing::info!("its worker misbehaved for another job; it runs on a fresh one");
                // Another job's fault, or a request it could not take: this one runs again on
                // a fresh worker. What it left on stderr is the worker's, not this job's.
                self.end();
                let error = JobError::new(
                    FailureKind::BadOutput,
                    "its worker was replaced before it answered (the worker answered an \
                     earlier job again, or closed its stdin)",
                );
                return self.end_of(Err(error), Fate::Innocent);
            }
            Exchange::Broken(_)
            | Exchange::Hello(_)
            | Exchange::StdoutClosed
            | Exchange::Exited => None,
        };
        if let Some(result) = answer {
            let tail = self.process.tail.text();
            let result = result.map_err(|mut error| {
                error.stderr_tail = tail;
                error
            });
            if self.process.exited() || self.pipeline.ahead_refused() {
                // It answered, then ended (as a processor does after a panic), or it cannot
                // take the request written ahead of its turn: that job runs elsewhere.
                let exit = self.end();
                let mut end = self.end_of(result, Fate::Gone);
                end.cpu = exit.cpu.saturating_sub(cpu_start);
                return end;
            }
            let pid = self.process.guarded.processor;
            let mut end = self.end_of(result, Fate::Serving);
            // Of srun or ssh, for a remote worker: unknown.
            end.cpu = cpu_time(pid)
                .filter(|_| local)
                .map(|now| now.saturating_sub(cpu_start))
                .unwrap_or_default();
            end.peak_rss_bytes = self.peak.peak().unwrap_or(0);
            return end;
        }
        self.ended_without_answer(ended, &mut request, &mut watch, cpu_start, job)
    }

    /// The job ends with the worker: it died, broke the protocol, closed its stdout, or was
    /// stopped.
    fn ended_without_answer(
        &mut self,
        why: Unanswered,
        request: &mut Outgoing,
        watch: &mut Watch<'_>,
        cpu_start: Duration,
        job: &Job,
    ) -> JobEnd {
        if watch.stopped().is_some() && !self.process.exited() {
            self.talk(request, &mut Expect::Exit, watch, None);
        }
        // Not a byte of it read: not delivered (the pipe's FIONREAD counts what is unread).
        let undelivered = why == Unanswered::Exited
            && watch.stopped().is_none()
            && self
                .process
                .stdin
                .as_ref()
                .and_then(|stdin| unread_bytes(stdin.as_raw_fd()))
                .is_some_and(|unread| unread == request.sent + self.pipeline.ahead_sent());
        let exit = self.end();
        let tail = self.process.tail.text();
        let ending = watch.ending(exit.code, exit.signal, exit.cpu.saturating_sub(cpu_start));
        let fail = |kind, message: String| Err(ending.fail(kind, message, &tail));
        let result = match why {
            Unanswered::Broken(why) if watch.stopped().is_none() => fail(
                FailureKind::BadOutput,
                format!("the worker broke the frame protocol and was stopped: {why}"),
            ),
            // Killed by us (it had not ended by itself): it closed its stdout and lived on.
            Unanswered::StdoutClosed if exit.signal == Some(libc::SIGKILL) => fail(
                FailureKind::BadOutput,
                "the worker closed its stdout without answering and was replaced".to_owned(),
            ),
            _ => match judge(job, &self.process.guarded, &ending, &tail, None) {
                Verdict::Failed(error) => Err(error),
                Verdict::Clean => {
                    let reason = super::super::child::last_line(&tail)
                        .map(|l| format!(": {l}"))
                        .unwrap_or_default();
                    fail(
                        FailureKind::BadOutput,
                        format!("the worker exited (code 0) without answering the job{reason}"),
                    )
                }
            },
        };
        tracing::debug!(
            exit_code = ending.exit_code,
            signal = ending.signal,
            undelivered,
            "ended with its worker"
        );
        let mut end = self.end_of(
            result,
            if undelivered {
                Fate::Undelivered
            } else {
                Fate::Gone
            },
        );
        end.cpu = ending.cpu;
        end
    }

    /// Sets the job's CPU-time and data limits on the worker (lifting the last job's); gives
    /// the worker's CPU time now, from which the job's is counted.
    fn set_limits(&mut self, limits: &RunLimits) -> Duration {
        let pid = self.process.guarded.processor;
        let local = self.process.guarded.remote().is_none();
        let cpu_start = cpu_time(pid).unwrap_or_default();
        if local && (limits.max_cpu_time.is_some() || self.limited.cpu) {
            // RLIMIT_CPU counts the process's whole life: this job's limit starts from now.
            let total = limits
                .max_cpu_time
                .map(|limit| whole_seconds(cpu_start + limit));
            self.limited.cpu =
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
        if data.is_some() || self.limited.data {
            self.limited.data =
                set_soft_limit(pid, libc::RLIMIT_DATA, data).is_ok() && data.is_some();
        }
        self.peak.reset();
        cpu_start
    }

    /// A job's end with `result` and `fate` (figures filled in by the caller), its memory
    /// limit's failures said as such (see [`Enforcement::judge`]).
    fn end_of(&self, result: RawResult, fate: Fate) -> JobEnd {
        JobEnd {
            result: match &self.memory {
                Some(memory) => result.map_err(|error| memory.judge(error)),
                None => result,
            },
            memory_limit: self.memory.as_ref().map(|m| m.kind),
            cpu: Duration::ZERO,
            peak_rss_bytes: 0,
            cpu_share: if self.memory.as_ref().is_some_and(Enforcement::cpu_weighted) {
                Some(crate::outcome::CpuShare::CgroupWeight)
            } else {
                self.process.guarded.cpu_share
            },
            fate,
        }
    }
}

/// Why a job ended with its worker and without an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unanswered {
    /// The frame stream broke: why.
    Broken(String),
    StdoutClosed,
    /// It exited, or was stopped.
    Exited,
}

fn exchange_kind(exchange: &Exchange) -> Unanswered {
    match exchange {
        Exchange::Broken(why) => Unanswered::Broken(why.clone()),
        Exchange::Hello(_) => Unanswered::Broken("a second hello".to_owned()),
        Exchange::StdoutClosed => Unanswered::StdoutClosed,
        _ => Unanswered::Exited,
    }
}
