//! Asking a processor about itself (`PROCESSOR --describe`, PROTOCOL.md section 10) the way its
//! jobs run it: a one-shot run below a guard, in the job's sandbox, with the job's environment
//! and limits, and a hard deadline (SIGKILL when it passes, no grace period: a probe has
//! nothing to save) that does not wait for the end of stdout (the guard kills whatever the
//! processor left holding it, a `setsid` daemon included).
//!
//! A processor that does not know the flag (a version-1 shell script, which only reads stdin
//! and writes one item) therefore runs once more than its jobs, confined like them. The answer
//! is remembered for the life of the process, per executable file (its identity on disk) and
//! the shape of the run (arguments, environment, sandbox), so each is probed at most once; a
//! job that asks for a process of its own (`Persistence::Never`, `offload run
//! --no-persistent`) is never probed for workers.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use offload_sdk::Description;

use super::child::FileId;
use super::oneshot::{execute, Purpose};
use super::Control;
use crate::job::{Job, JobId, RunLimits, Sandbox};
use crate::outcome::FailureKind;
use crate::processor::DescribeError;

/// The most a description may take on stdout.
const MAX_DESCRIPTION: usize = 1 << 20;

/// What makes two probes the same question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Question {
    path: PathBuf,
    file: FileId,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    sandbox: Option<Sandbox>,
}

type Answer = Result<Description, DescribeError>;

/// One question's answer, once known, behind a lock of its own: a second thread asking the
/// same question while the first probes waits for that answer instead of running the
/// processor again.
type Known = Arc<Mutex<Option<Answer>>>;

fn answers() -> &'static Mutex<HashMap<Question, Known>> {
    static ANSWERS: OnceLock<Mutex<HashMap<Question, Known>>> = OnceLock::new();
    ANSWERS.get_or_init(Mutex::default)
}

/// `job`'s processor's description, asked as `job` runs it, at most `timeout`. Blocks: never call it on the main context. `control`, when
/// given, stops the probe with the job it is asked for (a cancel, a shutdown).
pub(crate) fn describe(
    job: &Job,
    timeout: Duration,
    control: Option<&Arc<Control>>,
) -> Result<Description, DescribeError> {
    let Some(file) = FileId::of(job.processor.path()) else {
        // Missing (or not on this machine): the run says why, as for any job.
        return probe(job, timeout, control);
    };
    let question = Question {
        path: job.processor.path().to_path_buf(),
        file,
        args: job.args.clone(),
        env: job.environment(),
        sandbox: job.sandbox.clone(),
    };
    let cell = answers()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(question)
        .or_default()
        .clone();
    let mut known = cell.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(answer) = known.as_ref() {
        return answer.clone();
    }
    let answer = probe(job, timeout, control);
    tracing::debug!(
        processor = job.processor.name(),
        persistent = answer.as_ref().ok().map(Description::supports_persistent),
        error = answer.as_ref().err().map(ToString::to_string),
        "described"
    );
    // What may change by the next time is asked again: a busy machine, a stop, a missing
    // interpreter that gets installed.
    let lasting = matches!(
        answer,
        Ok(_) | Err(DescribeError::Failed(_) | DescribeError::Invalid(_))
    );
    if lasting {
        *known = Some(answer.clone());
    }
    answer
}

/// Runs the probe.
fn probe(job: &Job, timeout: Duration, control: Option<&Arc<Control>>) -> Answer {
    let mut run = job.clone();
    // A processor only a launcher's hosts have is not probed (its worker's hello tells); one
    // that is here too is asked here.
    run.launcher = None;
    // Its own deadline, not the job's timeout: a job allowed 300 ms of work still needs its
    // interpreter started to be asked.
    run.limits = RunLimits {
        timeout: Some(timeout),
        grace: Duration::ZERO,
        max_output_bytes: MAX_DESCRIPTION,
        ..job.limits
    };
    let own;
    let control = match control {
        Some(control) => control,
        None => {
            own = Control::new().map_err(|err| {
                DescribeError::CannotStart(format!("cannot make the probe's control: {err}"))
            })?;
            &own
        }
    };
    // Nobody listens to a probe's events.
    let (events, _) = async_channel::bounded(1);
    let (result, _) = execute(
        JobId(u64::MAX),
        &run,
        Purpose::Describe,
        Arc::new(Vec::new()),
        super::result::keep_bytes,
        control,
        &events,
    );
    match result {
        Ok(bytes) => {
            let bytes = bytes.downcast::<Vec<u8>>().map_err(|_| {
                DescribeError::Invalid("the probe's output was not kept as bytes".into())
            })?;
            serde_json::from_slice(&bytes).map_err(|err| DescribeError::Invalid(err.to_string()))
        }
        Err(error) => Err(match error.kind {
            FailureKind::TimedOut => DescribeError::TimedOut(timeout),
            FailureKind::Cancelled => DescribeError::Cancelled,
            FailureKind::CouldNotStart | FailureKind::LaunchFailed => {
                DescribeError::CannotStart(error.message)
            }
            _ => DescribeError::Failed(error.message),
        }),
    }
}
