//! How a job ended: its result or a classified failure, and what it cost.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::job::JobId;

/// The category of a failed job. Each one calls for a different reaction from a person.
///
/// New kinds may come in a later version (it is `#[non_exhaustive]`): a `match` on it needs a
/// `_` arm.
///
/// ```
/// use offload::FailureKind;
/// assert_eq!(FailureKind::TimedOut.as_str(), "timed_out");
/// assert_eq!(serde_json::to_string(&FailureKind::BadOutput).unwrap(), "\"bad_output\"");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The processor exited with a non-zero code.
    Failed,
    /// The processor was killed by a signal it did not ask for (a crash, the OOM killer).
    Killed,
    /// The job ran past its timeout and was stopped.
    TimedOut,
    /// The job was cancelled before or while it ran.
    Cancelled,
    /// The processor exited 0 but its stdout was not one valid result.
    BadOutput,
    /// The processor could not be started (not found, not executable).
    CouldNotStart,
    /// The processor went over its memory or CPU-time limit and was killed.
    ResourceLimit,
    /// The launcher could not start it: srun could not create the step, ssh could not reach
    /// the host (or lost it while the job ran), or the host has no such processor.
    LaunchFailed,
    /// The job gave a result, but the output file it was to become could not be written (a
    /// full disk; a result without the output field). The queue never ends a job this way:
    /// the caller that writes outputs does (`offload run`, the app; see
    /// [`crate::model::JobList::fail`]).
    OutputNotWritten,
}

impl FailureKind {
    /// The name used in JSON output and logs (`timed_out`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Killed => "killed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::BadOutput => "bad_output",
            Self::CouldNotStart => "could_not_start",
            Self::ResourceLimit => "resource_limit",
            Self::LaunchFailed => "launch_failed",
            Self::OutputNotWritten => "output_not_written",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed job: what kind of failure, a message a person can act on, and the evidence.
///
/// It displays as its message alone, which already says what happened ("exited with code
/// 65", "killed by SIGSEGV", "ran longer than 5 s"), so that `format!("job failed: {err}")`
/// does not say "failed" twice; [`JobError::kind`] is the category to match on.
///
/// ```
/// use offload::{FailureKind, JobError};
/// let err = JobError::new(FailureKind::TimedOut, "ran longer than 5 s");
/// assert_eq!(err.to_string(), "ran longer than 5 s");
/// assert_eq!(err.kind.as_str(), "timed_out");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobError {
    /// The category.
    pub kind: FailureKind,
    /// What happened and, where possible, what to do about it.
    pub message: String,
    /// The exit code, when the processor exited.
    pub exit_code: Option<i32>,
    /// The signal number, when the processor was killed by one.
    pub signal: Option<i32>,
    /// The last bytes the processor wrote to stderr (lossy UTF-8).
    pub stderr_tail: String,
    /// What the processor itself reported (PROTOCOL.md section 7.1: its error report, or a
    /// worker's `error` frame): its message and its own kind (`invalid_input`, ...), kept
    /// apart from offload's `kind`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported: Option<Box<Reported>>,
}

/// A processor's own account of its failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reported {
    /// Its message.
    pub error: String,
    /// Its kind, if it gave one (`invalid_input`, `failed`, or its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl JobError {
    /// An error of `kind` with `message` and no process evidence.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            exit_code: None,
            signal: None,
            stderr_tail: String::new(),
            reported: None,
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for JobError {}

/// Which persistent worker ran a job (PROTOCOL.md, section 18).
///
/// ```
/// use offload::WorkerRun;
/// let run = WorkerRun { worker: 3, job: 1, startup: Some(std::time::Duration::from_millis(40)) };
/// assert!(run.is_cold());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WorkerRun {
    /// The worker's number, unique within the process (a replaced worker gets a new one).
    pub worker: u64,
    /// How many jobs the worker had served, this one included (1: its first).
    pub job: u64,
    /// For the job that started the worker: how long the start took, handshake included
    /// (and counted in the job's wall time).
    pub startup: Option<Duration>,
}

impl WorkerRun {
    /// Whether the job waited for its worker to start.
    pub fn is_cold(&self) -> bool {
        self.startup.is_some()
    }
}

/// How a processor was made to yield the CPU to the host (a GUI's main loop) when the machine
/// is busy: its nice value ([`crate::Job::nice`], 10 by default) applied where the kernel's
/// grouping of tasks lets it count (RELIABILITY.md, "The host's CPU").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CpuShare {
    /// Its nice value, among the host's own tasks (no autogroups, or the host in a cgroup of
    /// its own, where autogroups do not apply).
    Nice,
    /// The nice value of its autogroup: with autogroup scheduling (Linux's default on most
    /// desktops) each session is a group that weighs as much as the host's whole group,
    /// whatever its tasks' nice; the processor leads a session of its own, so its group's nice
    /// is set.
    Autogroup,
    /// The `cpu.weight.nice` of its cgroup v2 (one it has for a memory limit, where the `cpu`
    /// controller is enabled): a cgroup weighs as much as the host's by default.
    CgroupWeight,
}

/// How a job's memory limit was enforced ([`crate::RunLimits::max_memory_bytes`]); which one
/// applies depends on the system (RELIABILITY.md says what each misses). More mechanisms may
/// come (it is `#[non_exhaustive]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MemoryLimitKind {
    /// A cgroup v2 of the job's own (`memory.max`): hard, the processor and its descendants.
    CgroupV2,
    /// A cgroup v1 of the job's own (`memory.limit_in_bytes`): hard, likewise.
    CgroupV1,
    /// `RLIMIT_DATA` on the processor: its heap and anonymous mappings cannot grow past it;
    /// resident memory is also sampled every 20 ms.
    Rlimit,
}

impl MemoryLimitKind {
    /// What this system gives a job with a memory limit (detected once per process; see
    /// RELIABILITY.md; `OFFLOAD_MEMORY_LIMIT=rlimit` chooses the rlimit).
    pub fn detected() -> Self {
        crate::runner::detected_memory_limit()
    }

    /// How it reads in messages: "cgroup v2 memory.max".
    pub fn describe(self) -> &'static str {
        match self {
            Self::CgroupV2 => "cgroup v2 memory.max",
            Self::CgroupV1 => "cgroup v1 memory.limit_in_bytes",
            Self::Rlimit => "RLIMIT_DATA",
        }
    }
}

/// What running a job cost. Zero where the processor never started.
///
/// ```no_run
/// # use offload::{Job, Processor, Queue};
/// # let queue = Queue::new();
/// # let job = Job::new(Processor::find("diag").unwrap());
/// let handle = queue.submit::<_, ciborium::Value>(&job, &serde_json::json!({"burn_ms": 100}))?;
/// handle.on_finished(|finished| {
///     let stats = finished.stats;
///     println!("{:?} wall, {:?} CPU, {} bytes peak", stats.wall, stats.cpu, stats.peak_rss_bytes);
/// });
/// # Ok::<(), offload::SubmitError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunStats {
    /// The processor's process id (a persistent worker's, for a job it ran).
    pub pid: Option<u32>,
    /// From the start of the job's run (spawn, or taking a worker, including the worker's
    /// start for its first job) to its end.
    pub wall: Duration,
    /// User plus system CPU time of the processor and of the descendants it (or its guard)
    /// waited for; on a worker, the worker's own CPU time between the job's request and its
    /// answer.
    pub cpu: Duration,
    /// The processor's peak resident memory, in bytes (its own and its descendants', the
    /// largest); a worker's peak during this job (its resident memory at the job's start
    /// counts). 0 when unknown (a worker that died).
    pub peak_rss_bytes: u64,
    /// The persistent worker that ran the job; `None` for a process of its own.
    pub worker: Option<WorkerRun>,
    /// How its memory limit was enforced; `None` without one.
    pub memory_limit: Option<MemoryLimitKind>,
    /// Where it ran, when a launcher ran it elsewhere (the Slurm node or the ssh host); `None`
    /// on this machine. The CPU time and peak memory of such a job are unknown (0).
    pub host: Option<String>,
    /// How it was made to yield the CPU to the host; `None` at nice 0, or elsewhere.
    pub cpu_share: Option<CpuShare>,
}

/// A result kept as the bytes the processor wrote: one well-formed CBOR item within the job's
/// output limits, checked (off the main context) as strictly as a typed result is decoded, but
/// not decoded into a value. For a caller that passes results on unread, as `offload serve`
/// does ([`crate::Queue::submit_raw`]).
///
/// ```
/// use offload::CborItem;
/// let item = CborItem::from_bytes(vec![0x82, 0x01, 0x02]).unwrap(); // [1, 2]
/// assert_eq!(item.as_bytes(), [0x82, 0x01, 0x02]);
/// assert!(CborItem::from_bytes(vec![0x82, 0x01]).is_err()); // truncated
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CborItem(Vec<u8>);

impl CborItem {
    /// `bytes`, if they are exactly one CBOR item that decodes (well-formed, text in UTF-8,
    /// within the default size and nesting limits).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, offload_sdk::decode::DecodeError> {
        Self::check(&bytes, offload_sdk::decode::DecodeLimits::default())?;
        Ok(Self(bytes))
    }

    /// Whether `bytes` are one item that decodes within `limits`: walked by the decoder that
    /// typed results go through, into nothing, so that a result this accepts is one that
    /// `submit::<_, ciborium::Value>` would have accepted too.
    pub(crate) fn check(
        bytes: &[u8],
        limits: offload_sdk::decode::DecodeLimits,
    ) -> Result<(), offload_sdk::decode::DecodeError> {
        offload_sdk::decode::decode_one::<serde::de::IgnoredAny>(bytes, limits).map(drop)
    }

    /// Bytes [`CborItem::check`] accepted.
    pub(crate) fn from_checked(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The item's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The item's bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// A finished job as delivered to its handle: the typed result, or the failure, and the cost.
///
/// ```no_run
/// # use offload::{FailureKind, Job, Processor, Queue};
/// # let queue = Queue::new();
/// # let job = Job::new(Processor::find("diag").unwrap());
/// let handle = queue.submit::<_, ciborium::Value>(&job, &serde_json::json!({"fail": "segv"}))?;
/// let finished = glib::MainContext::default().block_on(handle.finished());
/// match finished.result {
///     Ok(value) => println!("{}: {value:?}", finished.id),
///     Err(err) if err.kind == FailureKind::Killed => println!("crashed: {}", err.message),
///     Err(err) => println!("{err}: {}", err.stderr_tail),
/// }
/// # Ok::<(), offload::SubmitError>(())
/// ```
#[derive(Debug)]
pub struct Finished<O> {
    /// Which job.
    pub id: JobId,
    /// The decoded result, or why there is none.
    pub result: Result<O, JobError>,
    /// What it cost.
    pub stats: RunStats,
}

#[cfg(test)]
mod tests {
    use super::CborItem;
    use offload_sdk::decode::{DecodeError, DecodeLimits};

    #[test]
    fn a_raw_result_is_accepted_where_a_typed_one_would_be() {
        let accepted: [&[u8]; 4] = [
            // 1(1700000000): a tagged item
            &[0xc1, 0x1a, 0x65, 0x53, 0xf1, 0x00],
            // [_ 1, (_ h'01', h'02'), {_ "k": 2}]
            &[
                0x9f, 0x01, 0x5f, 0x41, 0x01, 0x41, 0x02, 0xff, 0xbf, 0x61, b'k', 0x02, 0xff, 0xff,
            ],
            // 1.5 as a double
            &[0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0],
            // a 5000-byte text
            &[&[0x79, 0x13, 0x88][..], &[b'a'; 5000][..]].concat(),
        ];
        for bytes in accepted {
            let item = CborItem::from_bytes(bytes.to_vec()).expect("accepted");
            assert_eq!(item.as_bytes(), bytes);
        }
        let refused: [(&[u8], DecodeError); 4] = [
            (&[0x62, 0xff, 0xfe], DecodeError::NotCbor { offset: 0 }), // not UTF-8
            (&[0x82, 0x01], DecodeError::Truncated),
            (&[0x01, 0x02], DecodeError::TrailingBytes { extra: 1 }),
            (&[], DecodeError::Empty),
        ];
        for (bytes, expected) in refused {
            let err = CborItem::from_bytes(bytes.to_vec()).expect_err("refused");
            let kind = std::mem::discriminant;
            assert_eq!(kind(&err), kind(&expected), "{bytes:?}: {err:?}");
        }
        let deep = DecodeLimits {
            max_bytes: 100,
            max_depth: 2,
        };
        assert!(matches!(
            CborItem::check(&[0x81, 0x81, 0x81, 0x01], deep),
            Err(DecodeError::TooDeep { .. })
        ));
    }
}
