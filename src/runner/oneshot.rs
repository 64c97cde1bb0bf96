//! A one-shot run (PROTOCOL.md, version 1): one process for one job. Spawn the processor, feed
//! stdin while draining stdout, stderr and the progress pipe, enforce the timeout and
//! cancellation, reap, decode, report.
//!
//! A single `poll(2)` loop serves all pipes, a pidfd (readable when the child exits) and the
//! job's cancel eventfd.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use offload_sdk::decode::{decode_one, hex_preview, DecodeError, DecodeLimits};
use offload_sdk::protocol::{ErrorReport, ProgressItem};
use offload_sdk::sequence::ItemScanner;

use super::child::{
    drain, has_exited, last_line, pidfd_open, raw, reap, spawn, timeval, write_some, Launch,
    Spawned, Tail,
};
use super::memory::Enforcement;
use super::stop::{Ending, Stop, Watch};
use super::{Control, Decoder, RawResult, RunRequest, RunnerEvent};
use crate::job::{Job, JobId, RunLimits};
use crate::outcome::{FailureKind, RunStats};

/// How long pipes may stay open after the processor exited and its group was killed.
pub(super) const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// Progress bytes buffered without a complete item before the stream is taken as broken.
const MAX_PROGRESS_BUFFER: usize = 64 * 1024;

/// Runs one job to its end; gives the event that reports it.
pub(super) fn run(request: RunRequest) -> RunnerEvent {
    let RunRequest {
        id,
        newest: _,
        job,
        input,
        decode,
        control,
        events,
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

impl Purpose {
    fn trailing_args(self) -> &'static [&'static str] {
        match self {
            Self::Job => &[],
            Self::Describe => &[offload_sdk::protocol::DESCRIBE_FLAG],
        }
    }
}

/// Runs `job`'s processor once on `input` for `purpose`, to its end: spawned below a guard in
/// the job's placement (sandbox, launcher), with its limits, supervised, reaped, classified
/// and decoded. Both a job and the `--describe` probe run through here.
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
    let memory = Enforcement::for_job(job);
    let procs = memory.as_ref().and_then(Enforcement::procs_file);
    let launch = Launch {
        trailing_args: purpose.trailing_args(),
        progress_pipe: purpose == Purpose::Job,
        cpu_limit: job.limits.max_cpu_time,
        data_limit: memory.as_ref().and_then(Enforcement::data_limit),
        cgroup: procs.as_deref(),
    };
    loop {
        let child = match spawn(job, &launch) {
            Err(error) => return (Err(error), RunStats::default()),
            Ok(child) => child,
        };
        let pid = child.job.processor as u32;
        let remote = child.job.remote().cloned();
        let _ = events.try_send(RunnerEvent::Started {
            id,
            pid,
            worker: None,
        });
        let samples = memory.as_ref().is_none_or(Enforcement::samples) && remote.is_none();
        let ended = supervise(
            id,
            job,
            child,
            input.clone(),
            control,
            events,
            samples,
            purpose,
        );
        let launch_failure = remote
            .as_ref()
            .filter(|_| ended.ending.stop.is_none())
            .and_then(|r| r.launch_failure(ended.ending.exit_code, &ended.stderr_tail));
        if launch_failure.is_some() && remote.as_ref().is_some_and(|r| r.retry_elsewhere()) {
            // That host is down: another one takes the job.
            continue;
        }
        let stats = RunStats {
            pid: Some(pid),
            wall: started.elapsed(),
            // Of srun or ssh, not of the processor: unknown.
            cpu: if remote.is_some() {
                Duration::ZERO
            } else {
                ended.ending.cpu
            },
            peak_rss_bytes: if remote.is_some() {
                0
            } else {
                ended.peak_rss_bytes
            },
            worker: None,
            memory_limit: memory.as_ref().map(|m| m.kind),
            host: remote.as_ref().map(|r| r.host()),
        };
        let result = match launch_failure {
            Some(failure) => Err(failure),
            None => classify(ended, job, decode),
        };
        let result = match &memory {
            Some(memory) => result.map_err(|error| memory.judge(error)),
            None => result,
        };
        return (result, stats);
    }
}

/// What the supervision loop saw.
struct Ended {
    ending: Ending,
    stdout: Vec<u8>,
    stderr_tail: String,
    peak_rss_bytes: u64,
}

#[allow(clippy::too_many_arguments)]
fn supervise(
    id: JobId,
    job: &Job,
    child: Spawned,
    input: Arc<Vec<u8>>,
    control: &Control,
    events: &async_channel::Sender<RunnerEvent>,
    sample_memory: bool,
    purpose: Purpose,
) -> Ended {
    let limits = job.limits;
    let process = child.job;
    let pidfd = pidfd_open(process.guard);
    // A cgroup holds the memory limit by itself; without one, sampling backs it up.
    let watched = RunLimits {
        max_memory_bytes: limits.max_memory_bytes.filter(|_| sample_memory),
        ..limits
    };
    let mut watch = Watch::new(id, process.clone(), watched, control, Instant::now());

    let mut stdin = Some(File::from(child.stdin));
    let mut stdout = Some(File::from(child.stdout));
    let mut stderr = Some(File::from(child.stderr));
    let mut progress = child.progress.map(File::from);
    // The guard's status pipe: its last line gives the peak memory; it ends when the guard does.
    let mut status = Some(File::from(child.status));
    let mut status_text = Vec::new();
    let mut input = Some(input);
    let mut written = 0usize;
    let mut out = Vec::new();
    // Where the result item ends, as its heads declare while it arrives: a head declaring more
    // than the output limit stops the job at once, as on a worker (a description is JSON
    // text, not CBOR: only its size counts).
    let mut result_heads = (purpose == Purpose::Job).then(|| {
        ItemScanner::new(DecodeLimits {
            max_bytes: limits.max_output_bytes,
            max_depth: limits.max_output_depth,
        })
    });
    let mut tail = Tail::of(&process, limits.stderr_tail_bytes);
    let mut progress_parser = ProgressParser::default();
    let mut scratch = vec![0u8; 64 * 1024];
    let mut exited = false;
    let mut drain_until: Option<Instant> = None;

    loop {
        if exited && stdout.is_none() && stderr.is_none() && progress.is_none() && status.is_none()
        {
            break;
        }
        let now = Instant::now();
        if drain_until.is_some_and(|t| now >= t) {
            break;
        }
        if !exited {
            watch.tick(now);
        }
        if let Some(item) = progress_parser.latest.take() {
            watch.progress(item);
        }
        watch.send_progress(now, events);

        // Build the poll set.
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(7);
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
        push(control.wake_fd(), libc::POLLIN);
        push(raw(status.as_ref()), libc::POLLIN);

        let wake_at = [
            watch.wake_at().filter(|_| !exited),
            drain_until,
            // Without a pidfd, look at the child every 20 ms.
            (pidfd.is_none() && !exited).then(|| now + Duration::from_millis(20)),
        ]
        .into_iter()
        .flatten()
        .min();
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        let ready = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                poll_timeout(wake_at, now),
            )
        };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // poll itself failing is not recoverable: stop the job and finish.
            watch.stop(Stop::Cancelled);
            process.kill();
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
                let over = match pipe.take(cap as u64).read_to_end(&mut out) {
                    Ok(_) => {
                        stdout = None;
                        out.len() > limits.max_output_bytes
                    }
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::Interrupted =>
                    {
                        out.len() > limits.max_output_bytes
                    }
                    Err(_) => {
                        stdout = None;
                        false
                    }
                };
                let declared_over = result_heads.as_mut().is_some_and(|heads| {
                    matches!(heads.scan(&out), Err(DecodeError::TooLarge { .. }))
                });
                if declared_over {
                    // Judged now; what else it says no longer matters.
                    result_heads = None;
                }
                if over || declared_over {
                    stdout = None;
                    watch.stop(Stop::OutputTooLarge);
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
        if has(6)
            && drain(&mut status, &mut scratch, |chunk| {
                // A few short lines; a guard never writes more, so the bound is a formality.
                if status_text.len() < 4096 {
                    status_text.extend_from_slice(chunk);
                }
            })
        {
            status = None;
        }
        if has(4) {
            exited = true;
        } else if pidfd.is_none() && !exited {
            exited = has_exited(process.guard);
        }
        if exited && drain_until.is_none() {
            // The guard ended only once nothing was left below it: drain what is in the pipes.
            drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
            stdin = None;
            input = None;
        }
        if has(5) && !exited {
            watch.on_control();
        }
    }

    if !exited {
        // Only reached when poll failed; the job was killed.
        process.kill();
    }
    drop(pidfd);
    let (status, usage) = reap(process.guard);
    let (exit_code, signal) = process.ending(status);
    Ended {
        ending: watch.ending(
            exit_code,
            signal,
            timeval(usage.ru_utime) + timeval(usage.ru_stime),
        ),
        stdout: out,
        stderr_tail: tail.text(),
        // The guard's figure: the guard's own ru_maxrss holds the host's peak (see guard.c).
        peak_rss_bytes: super::guard::peak_bytes(&status_text).unwrap_or(0),
    }
}

/// The `poll(2)` timeout that wakes at `wake_at` (rounded up, so that the loop does not spin
/// just before a deadline); -1, no timeout, without one.
pub(super) fn poll_timeout(wake_at: Option<Instant>, now: Instant) -> libc::c_int {
    wake_at.map_or(-1, |t| {
        let wait = t.saturating_duration_since(now) + Duration::from_micros(500);
        libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX)
    })
}

fn classify(ended: Ended, job: &Job, decode: Decoder) -> RawResult {
    let limits = job.limits;
    let tail = &ended.stderr_tail;
    if let Some(failure) = ended.ending.failure(&limits, tail) {
        return Err(failure);
    }
    let code = ended.ending.exit_code.unwrap_or(-1);
    if let Some(why) = job
        .sandbox
        .as_ref()
        .and_then(|_| super::sandbox::launch_failure(ended.ending.exit_code, tail))
    {
        return Err(ended.ending.fail(FailureKind::CouldNotStart, why, tail));
    }
    if code != 0 {
        let limits = DecodeLimits {
            max_bytes: 1 << 20,
            max_depth: 16,
        };
        let report = decode_one::<ErrorReport>(&ended.stdout, limits).ok();
        let reason = report
            .as_ref()
            .map(|report| report.error.clone())
            .or_else(|| last_line(tail))
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        let mut error = ended.ending.fail(
            FailureKind::Failed,
            format!("exited with code {code}{reason}"),
            tail,
        );
        error.reported = report.map(|report| {
            Box::new(crate::outcome::Reported {
                error: report.error,
                kind: report.kind,
            })
        });
        return Err(error);
    }
    let limits = DecodeLimits {
        max_bytes: limits.max_output_bytes,
        max_depth: limits.max_output_depth,
    };
    decode(&ended.stdout, limits).map_err(|err| {
        ended.ending.fail(
            FailureKind::BadOutput,
            format!(
                "{err}; stdout began with {}",
                hex_preview(&ended.stdout, 16)
            ),
            tail,
        )
    })
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
