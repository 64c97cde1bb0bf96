//! A one-shot run (PROTOCOL.md, version 1): one process for one job. Write the input to its
//! stdin, read its stdout to the end (and its progress pipe), then judge its end and decode.
//! Everything else (stderr, the exit, cancel, the deadlines) is the supervised process's
//! (`process.rs`), and how an end becomes an outcome is `exit.rs`'s.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use offload_sdk::decode::decode_one;
use offload_sdk::protocol::{ErrorReport, DESCRIBE_FLAG};

use super::capture::{small, Output, Progress, Reading};
use super::child::{spawn, Guarded, Launch};
use super::exit::{judge, Ending, Verdict};
use super::memory::Enforcement;
use super::process::{Outgoing, Source, Supervised, Want};
use super::remote::Remote;
use super::stop::{Stop, Watch};
use super::{Control, Decoder, RawResult, RunRequest, RunnerEvent};
use crate::job::{Job, JobId, RunLimits};
use crate::outcome::{FailureKind, RunStats};

/// How long pipes may stay open after the processor exited and its group was killed.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Runs one job to its end; gives the event that reports it.
pub(super) fn run(request: RunRequest) -> RunnerEvent {
    let RunRequest {
        id,
        job,
        input,
        decode,
        control,
        events,
        ..
    } = request;
    let (result, stats) = execute(id, &job, Purpose::Job, input, decode, &control, &events);
    // Close our last descriptor (the cancel eventfd, shared with the queue's record) before
    // reporting, so that a delivered result means the job holds no descriptor any more.
    drop(control);
    RunnerEvent::Finished {
        id,
        result,
        stats,
        next: None,
    }
}

/// Why a processor runs once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// A job: its input on stdin, one CBOR item on stdout, progress on its pipe.
    Job,
    /// The `--describe` probe: nothing on stdin, a JSON description on stdout, no progress.
    Describe,
}

/// Runs `job`'s processor once on `input` for `purpose`, to its end: spawned below a guard in
/// the job's placement (sandbox, launcher), with its limits, supervised, judged and decoded.
/// Both a job and the `--describe` probe run through here.
pub(super) fn execute(
    id: JobId,
    job: &Job,
    purpose: Purpose,
    input: Arc<Vec<u8>>,
    decode: Decoder,
    control: &Control,
    events: &async_channel::Sender<RunnerEvent>,
) -> (RawResult, RunStats) {
    let started = Instant::now();
    let _span = match purpose {
        Purpose::Job => tracing::debug_span!("job", id = id.0, processor = job.processor.name()),
        Purpose::Describe => tracing::debug_span!("describe", processor = job.processor.name()),
    }
    .entered();
    let memory = Enforcement::for_job(job);
    let procs = memory.as_ref().and_then(Enforcement::procs_file);
    let describe = [DESCRIBE_FLAG];
    let launch = Launch {
        trailing_args: if purpose == Purpose::Describe {
            &describe
        } else {
            &[]
        },
        progress_pipe: purpose == Purpose::Job,
        cpu_limit: job.limits.max_cpu_time,
        data_limit: memory.as_ref().and_then(Enforcement::data_limit),
        cgroup: procs.as_deref(),
    };
    loop {
        let child = match spawn(job, &launch) {
            Err(error) => {
                tracing::debug!(why = %error.message, "could not start");
                return (Err(error), RunStats::default());
            }
            Ok(child) => child,
        };
        let pid = child.guarded.processor as u32;
        tracing::debug!(pid, guard = child.guarded.guard.pid(), "started");
        let _ = events.try_send(RunnerEvent::Started {
            id,
            pid,
            worker: None,
        });
        let remote = child.guarded.remote().cloned();
        // A cgroup holds the memory limit by itself; without one, sampling backs it up.
        let samples = memory.as_ref().is_none_or(Enforcement::samples) && remote.is_none();
        let (supervised, progress) = Supervised::new(child, job.limits.stderr_tail_bytes);
        let watched = RunLimits {
            max_memory_bytes: job.limits.max_memory_bytes.filter(|_| samples),
            ..job.limits
        };
        let mut watch = Watch::new(id, supervised.guarded.clone(), watched, control, started);
        let ran = supervise(
            supervised,
            progress,
            &mut watch,
            input.clone(),
            events,
            purpose,
        );
        let ending = watch.ending(ran.exit_code, ran.signal, ran.cpu);
        // A failure's own report (PROTOCOL.md 7.1), on stdout.
        let report = (ending.exit_code.is_some_and(|code| code != 0))
            .then(|| decode_one::<ErrorReport>(&ran.stdout, small()).ok())
            .flatten();
        let verdict = judge(job, &ran.process, &ending, &ran.tail, report);
        if let Verdict::Failed(error) = &verdict {
            if error.kind == FailureKind::LaunchFailed
                && remote.as_ref().is_some_and(|r| r.retry_elsewhere())
            {
                // That host is down: another one takes the job.
                tracing::info!(why = %error.message, "launch failed; another host takes the job");
                continue;
            }
        }
        let stats = stats(
            pid,
            started,
            &ending,
            &ran,
            remote.as_ref(),
            memory.as_ref(),
        );
        let result = match verdict {
            Verdict::Failed(error) => Err(error),
            Verdict::Clean => super::result::decode(decode, &ran.stdout, &job.limits, "stdout")
                .map_err(|why| ending.fail(FailureKind::BadOutput, why, &ran.tail)),
        };
        let result = match &memory {
            Some(memory) => result.map_err(|error| memory.judge(error)),
            None => result,
        };
        tracing::debug!(
            exit_code = ending.exit_code,
            signal = ending.signal,
            cpu_ms = ending.cpu.as_secs_f64() * 1000.0,
            outcome = result.as_ref().err().map_or("ok", |e| e.kind.as_str()),
            "ended"
        );
        return (result, stats);
    }
}

/// A run's figures: of the processor, or for a remote one of srun or ssh (unknown then).
fn stats(
    pid: u32,
    started: Instant,
    ending: &Ending,
    ran: &Ran,
    remote: Option<&Arc<Remote>>,
    memory: Option<&Enforcement>,
) -> RunStats {
    RunStats {
        pid: Some(pid),
        wall: started.elapsed(),
        cpu: if remote.is_some() {
            Duration::ZERO
        } else {
            ending.cpu
        },
        peak_rss_bytes: if remote.is_some() { 0 } else { ran.peak },
        worker: None,
        memory_limit: memory.map(|m| m.kind),
        host: remote.map(|r| r.host()),
        cpu_share: if memory.is_some_and(Enforcement::cpu_weighted) {
            Some(crate::outcome::CpuShare::CgroupWeight)
        } else {
            ran.process.cpu_share
        },
    }
}

/// What the run saw.
struct Ran {
    process: Guarded,
    exit_code: Option<i32>,
    signal: Option<i32>,
    cpu: Duration,
    stdout: Vec<u8>,
    tail: String,
    peak: u64,
}

/// Writes the input, reads stdout (`capture::Output`) and the progress pipe, until the
/// processor has exited and its pipes are drained.
fn supervise(
    mut process: Supervised,
    progress: Option<File>,
    watch: &mut Watch<'_>,
    input: Arc<Vec<u8>>,
    events: &async_channel::Sender<RunnerEvent>,
    purpose: Purpose,
) -> Ran {
    let mut input = Outgoing::new(Vec::new(), Some(input));
    let mut out = Output::new(&watch.limits(), purpose == Purpose::Job);
    let mut progress = Progress::new(progress);
    let mut drain_until: Option<Instant> = None;
    loop {
        if process.exited() && process.stdout.is_none() && !progress.is_open() && process.quiet() {
            break;
        }
        let now = Instant::now();
        if drain_until.is_some_and(|t| now >= t) {
            break;
        }
        watch.send_progress(now, events);
        if !input.pending() {
            // All written (or refused): the end of stdin is the end of the input.
            process.stdin = None;
        }
        let want = Want {
            write: input.pending() && process.stdin.is_some(),
            also: progress
                .fd()
                .map(|fd| (Source::Progress, fd))
                .into_iter()
                .collect(),
            until: drain_until,
        };
        let Ok(ready) = process.wait(Some(&mut *watch), &want) else {
            break;
        };
        if ready.has(Source::Input) {
            if let Some(stdin) = process.stdin.as_ref() {
                // EPIPE: the processor closed stdin; it is judged by its output.
                if input.write_to(stdin.as_raw_fd()).is_err() {
                    input.refused = true;
                }
            }
        }
        if ready.has(Source::Output) {
            if let Some(pipe) = process.stdout.as_mut() {
                match out.read(pipe) {
                    Reading::Open => {}
                    Reading::Ended => process.stdout = None,
                    Reading::TooLarge => {
                        watch.stop(Stop::OutputTooLarge);
                        process.stdout = None;
                    }
                }
            }
        }
        if ready.has(Source::Progress) {
            progress.read(|item| watch.progress(item));
        }
        if process.exited() && drain_until.is_none() {
            // The guard ended only once nothing was left below it: drain what is in the pipes.
            drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
            process.stdin = None;
        }
    }
    let exit = process.end();
    Ran {
        exit_code: exit.code,
        signal: exit.signal,
        cpu: exit.cpu,
        stdout: out.into_bytes(),
        tail: process.tail.text(),
        // The guard's figure: the guard's own ru_maxrss holds the host's peak (see guard.c).
        peak: process.peak_bytes(),
        process: process.guarded,
    }
}
