//! How a process's end becomes a job's outcome, in one place for every mode: the runner's
//! own stop (timeout, cancel, a limit), a signal, a CPU-time limit, a launcher that could not
//! start it, a sandbox that could not, or an exit code. What a process that exited with code 0
//! wrote is for its mode to judge (one-shot: its stdout; a worker: its frames).

use std::time::Duration;

use offload_sdk::protocol::ErrorReport;

use super::child::{last_line, mib, signal_name, Guarded};
use super::stop::Stop;
use crate::job::{Job, RunLimits};
use crate::outcome::{FailureKind, JobError, Reported};

/// How a job's process ended, as far as the outcome goes: the runner's stop, if any, and the
/// process's exit.
pub(super) struct Ending {
    pub stop: Option<Stop>,
    /// Whether SIGKILL was needed after SIGTERM.
    pub escalated: bool,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The CPU time the job used.
    pub cpu: Duration,
}

impl Ending {
    /// A failure with this ending's evidence.
    pub(super) fn fail(&self, kind: FailureKind, message: String, stderr_tail: &str) -> JobError {
        JobError {
            kind,
            message,
            exit_code: self.exit_code,
            signal: self.signal,
            stderr_tail: stderr_tail.to_owned(),
            reported: None,
        }
    }

    /// The failure that a stop by the runner, a CPU-time limit or a signal makes; `None` when
    /// the process exited with a code, which the caller judges (its report, its output).
    pub(super) fn failure(&self, limits: &RunLimits, stderr_tail: &str) -> Option<JobError> {
        let fail = |kind, message| Some(self.fail(kind, message, stderr_tail));
        let after_term = if self.escalated {
            format!(
                "; it ignored SIGTERM and was killed after {:?}",
                limits.grace
            )
        } else {
            String::new()
        };
        match self.stop {
            Some(Stop::Cancelled) => {
                return fail(
                    FailureKind::Cancelled,
                    format!("cancelled while running{after_term}"),
                )
            }
            Some(Stop::TimedOut) => {
                let timeout = limits.timeout.unwrap_or_default();
                return fail(
                    FailureKind::TimedOut,
                    format!(
                        "ran longer than its timeout of {timeout:?} and was stopped{after_term}"
                    ),
                );
            }
            Some(Stop::MemoryLimit(rss)) => {
                return fail(
                    FailureKind::ResourceLimit,
                    format!(
                        "went over its memory limit of {} (resident memory reached {}) and was killed",
                        mib(limits.max_memory_bytes.unwrap_or(0)),
                        mib(rss)
                    ),
                );
            }
            Some(Stop::OutputTooLarge) => {
                return fail(
                    FailureKind::BadOutput,
                    format!(
                        "result over the limit of {} bytes; the processor was stopped (raise the output limit if this is expected)",
                        limits.max_output_bytes
                    ),
                );
            }
            None => {}
        }
        if let (Some(limit), Some(signal)) = (limits.max_cpu_time, self.signal) {
            // RLIMIT_CPU sends SIGXCPU at the limit and SIGKILL a second later.
            if signal == libc::SIGXCPU || (signal == libc::SIGKILL && self.cpu >= limit) {
                return fail(
                    FailureKind::ResourceLimit,
                    format!(
                        "went over its CPU-time limit of {limit:?} (used {:.2} s) and was killed",
                        self.cpu.as_secs_f64()
                    ),
                );
            }
        }
        let signal = self.signal?;
        fail(
            FailureKind::Killed,
            format!("killed by {}", signal_name(signal)),
        )
    }
}

/// What a process's end says of its job.
#[derive(Debug)]
pub(super) enum Verdict {
    /// It failed: stopped by the runner, killed, refused by its launcher or sandbox, or it
    /// exited with a code other than 0.
    Failed(JobError),
    /// It exited with code 0: what it wrote decides.
    Clean,
}

/// The one exit classifier: how `process` (of `job`) ended, as `ending` says, with `tail` of
/// its stderr; `report` is the processor's own error report, when it wrote one (one-shot, on
/// stdout). A launcher's failure comes first (srun or ssh could not run it: the job may go to
/// another host), then the runner's stop and signals, then the sandbox's failure, then the
/// exit code.
pub(super) fn judge(
    job: &Job,
    process: &Guarded,
    ending: &Ending,
    tail: &str,
    report: Option<ErrorReport>,
) -> Verdict {
    let limits = &job.limits;
    if let Some(error) = process
        .remote()
        .filter(|_| ending.stop.is_none())
        .and_then(|remote| remote.launch_failure(ending.exit_code, tail))
    {
        return Verdict::Failed(error);
    }
    if let Some(error) = ending.failure(limits, tail) {
        return Verdict::Failed(error);
    }
    if let Some(why) = job
        .sandbox
        .as_ref()
        .and_then(|_| super::sandbox::launch_failure(ending.exit_code, tail))
    {
        return Verdict::Failed(ending.fail(FailureKind::CouldNotStart, why, tail));
    }
    let code = ending.exit_code.unwrap_or(-1);
    if code == 0 {
        return Verdict::Clean;
    }
    let reason = report
        .as_ref()
        .map(|report| report.error.clone())
        .or_else(|| last_line(tail))
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    let mut error = ending.fail(
        FailureKind::Failed,
        format!("exited with code {code}{reason}"),
        tail,
    );
    error.reported = report.map(|report| {
        Box::new(Reported {
            error: report.error,
            kind: report.kind,
        })
    });
    Verdict::Failed(error)
}
