//! A one-shot run (PROTOCOL.md, version 1): one process for one job. Write the input to its
//! stdin, read its stdout to the end (and its progress pipe), then judge its end and decode.
//! Everything else (stderr, the exit, cancel, the deadlines) is the supervised process's
//! (`process.rs`), and how an end becomes an outcome is `exit.rs`'s.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use offload_sdk::decode::{decode_one, DecodeError, DecodeLimits};
use offload_sdk::protocol::{ErrorReport, ProgressItem, DESCRIBE_FLAG};
use offload_sdk::sequence::{ItemScanner, SequenceBuffer};

use super::child::{spawn, Guarded, Launch};
use super::exit::{judge, Verdict};
use super::memory::Enforcement;
use super::process::{drain, Outgoing, Source, Supervised, Want};
use super::stop::{Stop, Watch};
use super::{Control, Decoder, RawResult, RunRequest, RunnerEvent};
use crate::job::{Job, JobId, RunLimits};
use crate::outcome::{FailureKind, RunStats};

/// How long pipes may stay open after the processor exited and its group was killed.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// The largest progress item read; a longer one breaks the progress stream (ignored then).
const MAX_PROGRESS_ITEM: usize = 64 * 1024;

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
        tracing::debug!(pid, guard = child.guarded.guard, "started");
        let _ = events.try_send(RunnerEvent::Started {
            id,
            pid,
            worker: None,
        });
        let remote = child.guarded.remote().cloned();
        // A cgroup holds the memory limit by itself; without one, sampling backs it up.
        let samples = memory.as_ref().is_none_or(Enforcement::samples) && remote.is_none();
        let (supervised, progress) = Supervised::new(child, job.limits.stderr_tail_bytes, true);
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
        let stats = RunStats {
            pid: Some(pid),
            wall: started.elapsed(),
            // Of srun or ssh, not of the processor: unknown.
            cpu: if remote.is_some() {
                Duration::ZERO
            } else {
                ending.cpu
            },
            peak_rss_bytes: if remote.is_some() { 0 } else { ran.peak },
            worker: None,
            memory_limit: memory.as_ref().map(|m| m.kind),
            host: remote.as_ref().map(|r| r.host()),
            cpu_share: if memory.as_ref().is_some_and(Enforcement::cpu_weighted) {
                Some(crate::outcome::CpuShare::CgroupWeight)
            } else {
                ran.process.cpu_share
            },
        };
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

/// Writes the input, reads stdout (up to the output limit, judged by its declared sizes as
/// they arrive) and the progress pipe, until the processor has exited and its pipes are
/// drained.
fn supervise(
    mut process: Supervised,
    mut progress: Option<File>,
    watch: &mut Watch<'_>,
    input: Arc<Vec<u8>>,
    events: &async_channel::Sender<RunnerEvent>,
    purpose: Purpose,
) -> Ran {
    let limits = watch.limits();
    let mut input = Outgoing::new(Vec::new(), Some(input));
    let mut out = Vec::new();
    // Where the result item ends, as its heads declare while it arrives: a head declaring more
    // than the output limit stops the job at once, as on a worker (a description is JSON
    // text, not CBOR: only its size counts).
    let mut heads = (purpose == Purpose::Job).then(|| {
        ItemScanner::new(DecodeLimits {
            max_bytes: limits.max_output_bytes,
            max_depth: limits.max_output_depth,
        })
    });
    // The progress stream's items; dropped (and the stream ignored) once it breaks.
    let mut items = Some(SequenceBuffer::new(small_with(MAX_PROGRESS_ITEM)));
    let mut scratch = vec![0u8; 64 * 1024];
    let mut drain_until: Option<Instant> = None;
    loop {
        if process.exited() && process.stdout.is_none() && progress.is_none() && process.quiet() {
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
                .iter()
                .map(|p| (Source::Progress, p.as_raw_fd()))
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
                let cap = limits
                    .max_output_bytes
                    .saturating_add(1)
                    .saturating_sub(out.len());
                let ended = match pipe.take(cap as u64).read_to_end(&mut out) {
                    Ok(_) => true,
                    Err(e) => !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ),
                };
                let over = out.len() > limits.max_output_bytes;
                let declared_over = heads.as_mut().is_some_and(|heads| {
                    matches!(heads.scan(&out), Err(DecodeError::TooLarge { .. }))
                });
                if declared_over {
                    // Judged now; what else it says no longer matters.
                    heads = None;
                }
                if over || declared_over {
                    watch.stop(Stop::OutputTooLarge);
                }
                if ended || over || declared_over {
                    process.stdout = None;
                }
            }
        }
        if ready.has(Source::Progress)
            && drain(&mut progress, &mut scratch, |chunk| {
                if let Some(items) = items.as_mut() {
                    items.extend(chunk);
                }
            })
        {
            progress = None;
        }
        if let Some(buffer) = items.as_mut() {
            // The latest complete, valid item is the job's progress.
            let broken = loop {
                match buffer.next_item() {
                    Ok(Some(item)) => {
                        if let Ok(item) = decode_one::<ProgressItem>(item, small()) {
                            if item.fraction.is_finite() {
                                watch.progress(item);
                            }
                        }
                    }
                    Ok(None) => break buffer.pending() > MAX_PROGRESS_ITEM,
                    Err(_) => break true,
                }
            };
            if broken {
                items = None;
            }
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
        stdout: out,
        tail: process.tail.text(),
        // The guard's figure: the guard's own ru_maxrss holds the host's peak (see guard.c).
        peak: process.peak_bytes(),
        process: process.guarded,
    }
}

fn small() -> DecodeLimits {
    small_with(1 << 20)
}

fn small_with(max_bytes: usize) -> DecodeLimits {
    DecodeLimits {
        max_bytes,
        max_depth: 16,
    }
}
