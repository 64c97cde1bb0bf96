//! What a job is before it runs: which processor, with which limits; and its life-cycle states.

use std::ffi::OsString;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::processor::Processor;

/// Identifies a job within its queue. Ids are given in submission order, from 0.
///
/// ```
/// assert_eq!(offload::JobId(7).to_string(), "#7");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Where a job is in its life (ordered as a life goes: queued first, the ends last): the one set of states the queue, the job model, a
/// [`Batch`](crate::Batch), the app and the CLI all speak.
///
/// With the feature `model` it is also a GObject enum type (`OffloadJobState`, nicks
/// `queued`, `running`, `succeeded`, `failed`, `cancelled`): the type of the job model's
/// `state` property, which a widget binds to or compares as an enum, never as a string.
///
/// ```
/// use offload::{FailureKind, JobError, JobState};
/// assert!(JobState::Failed.is_finished() && !JobState::Running.is_finished());
/// let cancelled = JobError::new(FailureKind::Cancelled, "cancelled");
/// assert_eq!(JobState::ended(Some(&cancelled)), JobState::Cancelled);
/// assert_eq!(JobState::ended(None), JobState::Succeeded);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[cfg_attr(feature = "model", derive(glib::Enum))]
#[cfg_attr(feature = "model", enum_type(name = "OffloadJobState"))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a free slot.
    #[default]
    Queued,
    /// Its processor is running.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Finished without one (see the job's error for why), other than by a cancel.
    Failed,
    /// Cancelled, before or while it ran.
    Cancelled,
}

impl JobState {
    /// Every state, in the order of a job's life (the ends last).
    pub const ALL: [Self; 5] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Whether the job has ended, one way or another.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The state a job ends in: `error` is its failure (`None`: it succeeded).
    pub fn ended(error: Option<&crate::JobError>) -> Self {
        match error {
            None => Self::Succeeded,
            Some(e) if e.kind == crate::FailureKind::Cancelled => Self::Cancelled,
            Some(_) => Self::Failed,
        }
    }

    /// Its name in lines and logs: `queued`, `running`, `succeeded`, `failed`, `cancelled`
    /// (as it serializes, and the GObject enum's nick).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Jobs counted by [`JobState`]: the one count the queue ([`Queue::counts`]), a
/// [`Batch`](crate::Batch), the job model, the app and `offload run` all keep.
///
/// Cancelled jobs are counted apart from failed ones, so that a progress bar can leave them out
/// (a batch's fraction is over the jobs not cancelled: a Cancel does not make it jump to 100%).
///
/// ```
/// use offload::{Counts, JobState};
/// let mut counts = Counts::default();
/// counts.add(JobState::Queued);
/// counts.add(JobState::Queued);
/// counts.moved(JobState::Queued, JobState::Running);
/// counts.moved(JobState::Queued, JobState::Cancelled);
/// assert_eq!((counts.running, counts.cancelled, counts.total()), (1, 1, 2));
/// assert!(!counts.is_done());
/// ```
///
/// [`Queue::counts`]: crate::Queue::counts
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Waiting for a slot.
    pub queued: usize,
    /// Running now.
    pub running: usize,
    /// Ended with a result.
    pub succeeded: usize,
    /// Ended without one, other than by a cancel.
    pub failed: usize,
    /// Cancelled, before or while running.
    pub cancelled: usize,
}

impl Counts {
    /// The jobs in `state`.
    pub fn get(&self, state: JobState) -> usize {
        match state {
            JobState::Queued => self.queued,
            JobState::Running => self.running,
            JobState::Succeeded => self.succeeded,
            JobState::Failed => self.failed,
            JobState::Cancelled => self.cancelled,
        }
    }

    fn get_mut(&mut self, state: JobState) -> &mut usize {
        match state {
            JobState::Queued => &mut self.queued,
            JobState::Running => &mut self.running,
            JobState::Succeeded => &mut self.succeeded,
            JobState::Failed => &mut self.failed,
            JobState::Cancelled => &mut self.cancelled,
        }
    }

    /// A job is counted, in `state`.
    pub fn add(&mut self, state: JobState) {
        *self.get_mut(state) += 1;
    }

    /// A job counted in `state` is not counted any more (never below zero).
    pub fn remove(&mut self, state: JobState) {
        let count = self.get_mut(state);
        *count = count.saturating_sub(1);
    }

    /// A job went from `from` to `to`.
    pub fn moved(&mut self, from: JobState, to: JobState) {
        self.remove(from);
        self.add(to);
    }

    /// Every job counted.
    pub fn total(&self) -> usize {
        self.unfinished() + self.ended()
    }

    /// Jobs that have ended, one way or another.
    pub fn ended(&self) -> usize {
        self.succeeded + self.failed + self.cancelled
    }

    /// Jobs queued or running.
    pub fn unfinished(&self) -> usize {
        self.queued + self.running
    }

    /// Whether every job counted has ended.
    pub fn is_done(&self) -> bool {
        self.unfinished() == 0
    }
}

/// Bounds on one run of a processor.
///
/// ```
/// use std::time::Duration;
/// use offload::{Job, Processor, RunLimits};
///
/// let limits = RunLimits {
///     timeout: Some(Duration::from_secs(60)),
///     grace: Duration::from_millis(500),
///     max_output_bytes: 64 << 20,
///     ..RunLimits::default()
/// };
/// let job = Job::new(Processor::at("/opt/tools/offload-render")).limits(limits);
/// assert_eq!(job.run_limits().max_output_bytes, 64 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Stop the job (SIGTERM, then SIGKILL after `grace`) when it runs longer. `None`: no limit.
    pub timeout: Option<Duration>,
    /// How long a processor has between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// The largest encoded input accepted at submission, in bytes (default 1 GiB).
    pub max_input_bytes: usize,
    /// The largest result accepted on stdout, in bytes (default 1 GiB).
    pub max_output_bytes: usize,
    /// The deepest nesting accepted in the result (default 128).
    pub max_output_depth: usize,
    /// How many of the last stderr bytes are kept (default 8 KiB).
    pub stderr_tail_bytes: usize,
    /// Kill the job when the processor's resident memory exceeds this many bytes (sampled
    /// every 20 ms; the processor itself, not its children; a persistent worker's memory
    /// counts whole). `None`: no limit.
    pub max_memory_bytes: Option<u64>,
    /// Kill the job when the processor has used this much CPU time (`RLIMIT_CPU`, whole
    /// seconds, rounded up; on a persistent worker, counted from the job's request). `None`:
    /// no limit.
    pub max_cpu_time: Option<Duration>,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            timeout: None,
            grace: Duration::from_secs(2),
            max_input_bytes: offload_sdk::decode::DEFAULT_MAX_BYTES,
            max_output_bytes: offload_sdk::decode::DEFAULT_MAX_BYTES,
            max_output_depth: offload_sdk::decode::DEFAULT_MAX_DEPTH,
            stderr_tail_bytes: 8 * 1024,
            max_memory_bytes: None,
            max_cpu_time: None,
        }
    }
}

/// The nice value processors run at unless a job says otherwise ([`Job::nice`]): the same in
/// the library, `offload run` and the app, so that a GUI's main loop keeps its core.
pub const DEFAULT_NICE: i32 = 10;

/// Environment variables a processor inherits from the host, when set there. Names ending in
/// `*` are prefixes. Everything else must be passed explicitly ([`Job::env`],
/// [`Job::inherit_env`]); `OFFLOAD_PROGRESS_FD` is always set by the host.
pub const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
    "OFFLOAD_*",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYENV_*",
    "VIRTUAL_ENV",
];

/// Whether a job runs on a persistent worker (a process that serves many jobs; PROTOCOL.md,
/// section 18) or in a process of its own.
///
/// ```
/// use offload::{Job, Persistence, Processor};
/// let job = Job::new(Processor::at("/usr/bin/cat")).persistence(Persistence::Never);
/// assert_eq!(job.run_persistence(), Persistence::Never);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Persistence {
    /// On a worker when the processor's `--describe` says `"persistent": true`, else a
    /// process per job. The engine asks once per processor (off the main thread).
    #[default]
    Auto,
    /// On a worker; the job fails to start (`could_not_start`) when the processor does not
    /// support persistent mode.
    Always,
    /// A process of its own, whatever the processor supports.
    Never,
}

/// Running a job's processor in a sandbox (bubblewrap): no network, a read-only system, a
/// private `/tmp`, no home directory; see RELIABILITY.md.
///
/// ```
/// use offload::{Job, Processor, Sandbox};
/// let job = Job::new(Processor::at("/usr/bin/cat")).sandbox(Sandbox::new().bind("/srv/models"));
/// assert!(job.run_sandbox().is_some());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Sandbox {
    /// Paths visible read-only inside, besides the system (those under the hidden home
    /// directory, say: a model, a virtual environment).
    pub binds: Vec<std::path::PathBuf>,
}

impl Sandbox {
    /// A sandbox that shows the system and nothing of the home directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also shows `path`, read-only.
    pub fn bind(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.binds.push(path.into());
        self
    }
}

/// How to run one job: the processor, its arguments and environment, and its limits.
///
/// ```no_run
/// use std::time::Duration;
/// use offload::{Job, Processor};
///
/// let blur = Processor::find("blur")?;
/// let job = Job::new(blur).timeout(Duration::from_secs(30));
/// # Ok::<(), offload::LookupError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Job {
    pub(crate) processor: Processor,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) inherit: Vec<OsString>,
    pub(crate) limits: RunLimits,
    pub(crate) nice: i32,
    pub(crate) persistence: Persistence,
    pub(crate) sandbox: Option<Sandbox>,
    /// Where its processor runs; `None` on this machine.
    pub(crate) launcher: Option<std::sync::Arc<crate::launcher::Launcher>>,
    /// Its place among queued jobs: higher starts first (see [`Job::priority`]).
    pub(crate) priority: i32,
}

impl Job {
    /// A job for `processor` with default limits.
    pub fn new(processor: Processor) -> Self {
        Self {
            processor,
            args: Vec::new(),
            env: Vec::new(),
            inherit: Vec::new(),
            limits: RunLimits::default(),
            nice: DEFAULT_NICE,
            persistence: Persistence::Auto,
            sandbox: None,
            launcher: None,
            priority: 0,
        }
    }

    /// Adds a command-line argument for the processor.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable for the processor.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Passes the host's value of `key` (if set) to the processor, beyond [`INHERITED_ENV`].
    pub fn inherit_env(mut self, key: impl Into<OsString>) -> Self {
        self.inherit.push(key.into());
        self
    }

    /// The environment the processor gets, apart from `OFFLOAD_PROGRESS_FD`: the host's
    /// variables named in [`INHERITED_ENV`] or by [`Job::inherit_env`], then [`Job::env`]'s.
    pub fn environment(&self) -> Vec<(OsString, OsString)> {
        let allowed = |key: &std::ffi::OsStr| {
            let Some(key) = key.to_str() else {
                return false;
            };
            key != offload_sdk::protocol::PROGRESS_FD_ENV
                && (INHERITED_ENV
                    .iter()
                    .any(|pattern| match pattern.strip_suffix('*') {
                        Some(prefix) => key.starts_with(prefix),
                        None => key == *pattern,
                    })
                    || self.inherit.iter().any(|k| k == key))
        };
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| allowed(k) && !self.env.iter().any(|(j, _)| j == k))
            .collect();
        env.extend(self.env.iter().cloned());
        env
    }

    /// Stops the job when it runs longer than `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.limits.timeout = Some(timeout);
        self
    }

    /// The processor's CPU priority as a nice value, 0 to 19 (default [`DEFAULT_NICE`], 10):
    /// above 0 it yields the CPU to the process that shows results (a GUI's main loop), which
    /// then gets a core as soon as it needs one. Where the kernel groups tasks by session
    /// (autogroups) or by cgroup, the group's weight is set too: the job's stats say which
    /// ([`crate::RunStats::cpu_share`]). 0: as the host.
    pub fn nice(mut self, nice: i32) -> Self {
        self.nice = nice.clamp(0, 19);
        self
    }

    /// Starts it before queued jobs of a lower priority (default 0; negative: after them).
    /// Jobs of one priority start in submission order. A job already running is not affected;
    /// [`Queue::set_priority`](crate::Queue::set_priority) changes a queued job's.
    ///
    /// ```
    /// use offload::{Job, Processor};
    /// let preview = Job::new(Processor::at("/usr/bin/cat")).priority(10);
    /// assert_eq!(preview.run_priority(), 10);
    /// ```
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Its priority among queued jobs.
    pub fn run_priority(&self) -> i32 {
        self.priority
    }

    /// Replaces all limits.
    pub fn limits(mut self, limits: RunLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Chooses between a persistent worker and a process of its own (default: `Auto`).
    pub fn persistence(mut self, persistence: Persistence) -> Self {
        self.persistence = persistence;
        self
    }

    /// Runs the processor in `sandbox` (bubblewrap must be installed; a job fails to start,
    /// saying what to install or enable, where it cannot be made).
    pub fn sandbox(mut self, sandbox: Sandbox) -> Self {
        self.sandbox = Some(sandbox);
        self
    }

    /// Runs the processor through `launcher` (as Slurm job steps, or over ssh); a local
    /// launcher is the same as none. Jobs that share a launcher share its hosts' slots and
    /// its view of which hosts are down.
    pub fn launcher(mut self, launcher: std::sync::Arc<crate::launcher::Launcher>) -> Self {
        self.launcher = (!launcher.is_local()).then_some(launcher);
        self
    }

    /// The launcher it runs through, if not this machine.
    pub fn run_launcher(&self) -> Option<&crate::launcher::Launcher> {
        self.launcher.as_deref()
    }

    /// The sandbox it runs in, if any.
    pub fn run_sandbox(&self) -> Option<&Sandbox> {
        self.sandbox.as_ref()
    }

    /// Whether the job may run on a persistent worker.
    pub fn run_persistence(&self) -> Persistence {
        self.persistence
    }

    /// The processor's description (`--describe`), asked as this job runs it: after the job's
    /// arguments (a job whose processor is an interpreter and whose first argument is a
    /// script describes the script), with its environment, in its sandbox, below a guard, with
    /// its limits and a hard deadline of `timeout`. Nothing
    /// the probe starts outlives it. The answer is remembered per executable file (its
    /// identity on disk), arguments, environment and sandbox, for the life of the process, so a
    /// processor that does not know the flag runs once for it, not once per caller. A
    /// processor that only a launcher's hosts have is asked here if it is here too. Blocks:
    /// call it off the main thread in an app.
    pub fn describe(
        &self,
        timeout: std::time::Duration,
    ) -> Result<offload_sdk::Description, crate::processor::DescribeError> {
        crate::runner::describe(self, timeout, None)
    }

    /// The processor this job runs.
    pub fn processor(&self) -> &Processor {
        &self.processor
    }

    /// The limits in force.
    pub fn run_limits(&self) -> &RunLimits {
        &self.limits
    }
}
