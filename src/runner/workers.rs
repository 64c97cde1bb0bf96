//! The persistent workers of one queue: warm processor processes kept per worker key (the
//! processor, its arguments, its environment and its nice value, as Bazel keys its workers), at
//! most as many live as the queue runs jobs at once, each on a thread of its own.
//!
//! The queue hands a job to an idle worker of its key, or to a new one; when that would make
//! more live workers than the queue's bound, idle workers of other keys retire first, least
//! recently used first. A worker thread owns its process (so `PR_SET_PDEATHSIG`, which follows
//! the thread that spawned, lasts as long as the worker), runs its jobs, waits between them
//! (draining stderr, noticing death), and retires its process when it has served enough jobs,
//! grown too large, idled too long, or its executable changed on disk. A job that its worker
//! never received goes to a fresh worker, once.
//!
//! Whether a processor supports persistent mode is asked of it once (`--describe`, on the
//! worker thread, never on the main context) and remembered per executable file.
//!
//! A busy worker may hold one more job **on deck** ([`Workers::offer_deck`]; two for a worker
//! that pipelines), which it starts the moment its current job ends, without waiting for the
//! main context to hand it over:
//! `ProcessPoolExecutor` queues a call ahead per worker for the same reason. The queue still
//! owns the job: it stays queued until a worker takes it, and the queue can pull it back
//! ([`Workers::undeck`]) to cancel it or to pause.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::child::FileId;
use super::oneshot;
use super::process::timeout as poll_timeout;
use super::process::EventFd;
use super::worker::{Fate, Idle, Order, Pipeline, WorkerProcess};
use super::{RunRequest, RunnerEvent};
use crate::job::{Job, JobId, Persistence};
use crate::outcome::{FailureKind, JobError, RunStats, WorkerRun};
use crate::processor::{DescribeError, DESCRIBE_TIMEOUT};

/// When persistent workers are replaced or ended.
///
/// ```
/// use std::time::Duration;
/// use offload::{Queue, WorkerSettings};
///
/// let queue = Queue::new();
/// queue.set_worker_settings(WorkerSettings {
///     max_jobs: 500,
///     idle_timeout: Duration::from_secs(10),
///     ..WorkerSettings::default()
/// });
/// assert_eq!(queue.worker_settings().max_jobs, 500);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSettings {
    /// A worker is replaced after serving this many jobs (default 10,000), so that a slow
    /// leak cannot grow without bound.
    pub max_jobs: u64,
    /// A worker is replaced after a job during which its resident memory went over this
    /// (default: a quarter of the machine's memory). `None`: never for its size.
    pub max_memory_bytes: Option<u64>,
    /// A worker with no job for this long ends (default 60 s).
    pub idle_timeout: Duration,
    /// How long a worker may take from its start to its hello, set-up included (default
    /// 30 s); past it, the job it was started for fails as timed out.
    pub start_timeout: Duration,
    /// Whether a worker behind a launcher (Slurm, ssh) gets its next job's request while it
    /// runs one (default true), which hides the round trip through srun or ssh; local
    /// workers never do (a local round trip costs less than the wake-up it needs).
    pub pipeline: bool,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            max_jobs: 10_000,
            max_memory_bytes: physical_memory().map(|bytes| bytes / 4),
            idle_timeout: Duration::from_secs(60),
            start_timeout: Duration::from_secs(30),
            pipeline: true,
        }
    }
}

fn physical_memory() -> Option<u64> {
    // SAFETY: sysinfo fills a live struct.
    unsafe {
        let mut info: libc::sysinfo = std::mem::zeroed();
        if libc::sysinfo(&mut info) != 0 {
            return None;
        }
        #[allow(clippy::useless_conversion)] // c_ulong is u32 on 32-bit targets
        let total = u64::try_from(info.totalram).ok()?;
        total.checked_mul(u64::from(info.mem_unit))
    }
}

/// Worker numbers are unique in the process, across queues.
static NEXT_WORKER: AtomicU64 = AtomicU64::new(1);

/// What makes two jobs able to share a worker.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WorkerKey {
    path: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    inherit: Vec<OsString>,
    nice: i32,
    /// Jobs with a memory limit run on workers in a cgroup (or with an rlimit) of their own.
    memory_limited: bool,
    sandbox: Option<crate::job::Sandbox>,
    /// The launcher that starts it (`Launcher::id`); `None` on this machine.
    launcher: Option<u64>,
}

impl WorkerKey {
    fn of(job: &Job) -> Self {
        Self {
            path: job.processor.path().to_path_buf(),
            args: job.args.clone(),
            env: job.env.clone(),
            inherit: job.inherit.clone(),
            nice: job.nice,
            memory_limited: job.limits.max_memory_bytes.is_some(),
            sandbox: job.sandbox.clone(),
            launcher: job.launcher.as_ref().map(|l| l.id()),
        }
    }
}

/// The persistent workers of one queue.
pub(crate) struct Workers {
    state: Mutex<WorkersState>,
}

struct WorkersState {
    settings: WorkerSettings,
    slots: Vec<Entry>,
    /// Whether each processor supports persistent mode, and for which file it was asked.
    modes: HashMap<PathBuf, (Option<FileId>, bool)>,
    /// Workers that failed to start, per key, in a row.
    failed_starts: HashMap<WorkerKey, FailedStarts>,
}

/// After this many workers of a key failed to start in a row, the jobs of that key that were
/// waiting then fail at once with the last start's failure, instead of each starting (and
/// waiting for) a worker that fails the same way: a set-up that fails slowly would otherwise
/// cost its time once per job.
pub const MAX_FAILED_STARTS: u32 = 3;

/// A key's workers that failed to start in a row, and once there were
/// [`MAX_FAILED_STARTS`], the jobs that fail without trying.
#[derive(Default)]
struct FailedStarts {
    in_a_row: u32,
    /// The last failure, and the newest job submitted when it happened: jobs up to it fail
    /// at once; a job submitted later (a retry) tries again.
    given_up: Option<(JobId, JobError)>,
}

/// A worker thread as the pool sees it.
struct Entry {
    slot: Arc<Slot>,
    state: Use,
    last_used: Instant,
}

/// What a worker thread is doing, as the pool sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// Waiting for a job.
    Idle,
    /// Running a job, or about to.
    Busy,
    /// Asked to end; takes no more jobs (it may still be finishing one).
    Retiring,
}

/// Where the pool and a worker thread meet.
struct Slot {
    key: WorkerKey,
    inbox: Mutex<Inbox>,
    /// Signalled whenever the inbox gets something.
    wake: EventFd,
}

#[derive(Default)]
struct Inbox {
    request: Option<RunRequest>,
    /// The jobs to start when the current one ends, in order (only while busy): one, or
    /// for a pipelining worker two, so that it finds its next job without a wake-up.
    deck: VecDeque<RunRequest>,
    retire: Option<Retire>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retire {
    /// Close its stdin and give it the grace period (idle, too many, replaced).
    Gracefully,
    /// SIGKILL (the queue is shutting down).
    Now,
}

impl Slot {
    fn new(key: WorkerKey) -> io::Result<Self> {
        Ok(Self {
            key,
            inbox: Mutex::new(Inbox::default()),
            wake: EventFd::new()?,
        })
    }

    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn deliver(&self, request: RunRequest) {
        self.inbox().request = Some(request);
        self.wake();
    }

    fn retire(&self, how: Retire) {
        let mut inbox = self.inbox();
        if inbox.retire != Some(Retire::Now) {
            inbox.retire = Some(how);
        }
        drop(inbox);
        self.wake();
    }

    fn wake(&self) {
        self.wake.signal();
    }

    fn wake_fd(&self) -> RawFd {
        self.wake.fd()
    }

    fn clear_wake(&self) {
        self.wake.clear();
    }

    fn take(&self) -> (Option<RunRequest>, Option<Retire>) {
        let mut inbox = self.inbox();
        (inbox.request.take(), inbox.retire)
    }
}

impl Workers {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(WorkersState {
                settings: WorkerSettings::default(),
                slots: Vec::new(),
                modes: HashMap::new(),
                failed_starts: HashMap::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, WorkersState> {
        // Every change leaves the state consistent; a panic elsewhere cannot break it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn settings(&self) -> WorkerSettings {
        self.lock().settings
    }

    pub(crate) fn set_settings(&self, settings: WorkerSettings) {
        self.lock().settings = settings;
    }

    /// Whether `job` goes to a worker: unless it asks for a process of its own, or its
    /// processor is known not to support persistent mode.
    pub(crate) fn takes(&self, job: &Job) -> bool {
        match job.persistence {
            Persistence::Never => false,
            Persistence::Always => true,
            Persistence::Auto => !matches!(
                self.lock().modes.get(job.processor.path()),
                Some((_, false))
            ),
        }
    }

    /// Hands `request` to an idle worker of its key, or to a new worker thread. Retires idle
    /// workers of other keys so that at most `max_workers` live.
    pub(crate) fn start(
        self: &Arc<Self>,
        request: RunRequest,
        max_workers: usize,
    ) -> io::Result<()> {
        let key = WorkerKey::of(&request.job);
        let now = Instant::now();
        let mut state = self.lock();
        if let Some(entry) = state
            .slots
            .iter_mut()
            .filter(|e| e.state == Use::Idle && e.slot.key == key)
            .max_by_key(|e| e.last_used)
        {
            entry.state = Use::Busy;
            entry.last_used = now;
            entry.slot.deliver(request);
            return Ok(());
        }
        state.retire_idle(max_workers.saturating_sub(1));
        let slot = Arc::new(Slot::new(key)?);
        slot.deliver(request);
        state.slots.push(Entry {
            slot: slot.clone(),
            state: Use::Busy,
            last_used: now,
        });
        drop(state);
        let workers = self.clone();
        let thread_slot = slot.clone();
        let spawned = std::thread::Builder::new()
            .name("offload-worker".into())
            .spawn(move || worker_thread(&workers, &thread_slot));
        if let Err(err) = spawned {
            self.remove(&slot);
            return Err(err);
        }
        Ok(())
    }

    /// Puts `request` on deck at a busy worker of its key that has room (one job, two for a
    /// worker that pipelines), the one with the fewest on deck and whose job started first;
    /// started first; gives it back when there is no such worker.
    pub(crate) fn offer_deck(&self, request: RunRequest) -> Option<RunRequest> {
        let key = WorkerKey::of(&request.job);
        let state = self.lock();
        let pipelines = key.launcher.is_some() && state.settings.pipeline;
        let depth = if pipelines { 2 } else { 1 };
        let candidate = state
            .slots
            .iter()
            .filter(|e| e.state == Use::Busy && e.slot.key == key)
            .map(|e| (e, e.slot.inbox().deck.len()))
            .filter(|(_, decked)| *decked < depth)
            .min_by_key(|(e, decked)| (*decked, e.last_used));
        match candidate {
            Some((entry, decked)) => {
                tracing::trace!(id = request.id.0, "on deck");
                entry.slot.inbox().deck.push_back(request);
                if pipelines && decked == 0 {
                    // The worker may be waiting for it, to pipeline it (worker.rs, Pipeline).
                    entry.slot.wake();
                }
                None
            }
            None => Some(request),
        }
    }

    /// Takes job `id` back from the deck it waits on; `None` if a worker took it already.
    pub(crate) fn undeck(&self, id: crate::job::JobId) -> Option<RunRequest> {
        let state = self.lock();
        state.slots.iter().find_map(|e| {
            let mut inbox = e.slot.inbox();
            let at = inbox.deck.iter().position(|r| r.id == id)?;
            inbox.deck.remove(at)
        })
    }

    /// Takes back every job on deck.
    pub(crate) fn undeck_all(&self) -> Vec<RunRequest> {
        let state = self.lock();
        state
            .slots
            .iter()
            .flat_map(|e| std::mem::take(&mut e.slot.inbox().deck))
            .collect()
    }

    /// Retires idle workers beyond `max_workers` (the queue's bound was lowered).
    pub(crate) fn trim(&self, max_workers: usize) {
        self.lock().retire_idle(max_workers);
    }

    /// Ends every worker: idle ones now, busy ones once their job ends (the queue kills
    /// those jobs itself).
    pub(crate) fn shutdown(&self) {
        for entry in &mut self.lock().slots {
            entry.state = Use::Retiring;
            entry.slot.retire(Retire::Now);
        }
    }

    /// How many worker threads live (busy, idle or ending).
    pub(crate) fn live(&self) -> usize {
        self.lock().slots.len()
    }

    /// A job ended on `slot`: it takes the most urgent job on deck at any busy worker of its
    /// key (its own, if none is more urgent: higher priority, then older; a pipelining worker
    /// takes only its own), and stays busy; else it is idle.
    fn finished_job(&self, slot: &Arc<Slot>) -> Option<RunRequest> {
        let mut state = self.lock();
        let pipelines = slot.key.launcher.is_some() && state.settings.pipeline;
        let urgency = |r: &RunRequest| (std::cmp::Reverse(r.job.priority), r.id);
        let own = slot.inbox().deck.front().map(urgency);
        let elsewhere = state
            .slots
            .iter()
            .filter(|e| !pipelines && !Arc::ptr_eq(&e.slot, slot) && e.slot.key == slot.key)
            .filter_map(|e| {
                e.slot
                    .inbox()
                    .deck
                    .front()
                    .map(|r| (urgency(r), e.slot.clone()))
            })
            .min_by_key(|(turn, _)| *turn)
            .filter(|(turn, _)| own.is_none_or(|own| *turn < own));
        let next = match elsewhere {
            Some((_, other)) => other.inbox().deck.pop_front(),
            None => slot.inbox().deck.pop_front(),
        };
        if let Some(entry) = state.entry(slot) {
            if entry.state != Use::Retiring {
                entry.state = if next.is_some() { Use::Busy } else { Use::Idle };
            }
            entry.last_used = Instant::now();
        }
        next
    }

    /// A job ended on `slot` and the next one is already there (sent ahead): it stays busy.
    fn keep_busy(&self, slot: &Arc<Slot>) {
        if let Some(entry) = self.lock().entry(slot).filter(|e| e.state != Use::Retiring) {
            entry.state = Use::Busy;
            entry.last_used = Instant::now();
        }
    }

    /// Removes `slot`, and gives the jobs on deck there: nothing can be put on deck
    /// there any more.
    fn remove_taking_deck(&self, slot: &Arc<Slot>) -> VecDeque<RunRequest> {
        let mut state = self.lock();
        state.slots.retain(|e| !Arc::ptr_eq(&e.slot, slot));
        let deck = std::mem::take(&mut slot.inbox().deck);
        deck
    }

    fn remove(&self, slot: &Arc<Slot>) {
        self.lock().slots.retain(|e| !Arc::ptr_eq(&e.slot, slot));
    }

    /// Removes an idle slot whose time is up; `false` if a job came for it meanwhile.
    fn remove_if_idle(&self, slot: &Arc<Slot>) -> bool {
        let mut state = self.lock();
        if state.entry(slot).is_some_and(|e| e.state == Use::Busy) {
            return false;
        }
        state.slots.retain(|e| !Arc::ptr_eq(&e.slot, slot));
        true
    }

    /// Why job `id` (on the key of `job`) fails without starting a worker, if its key's
    /// workers failed to start [`MAX_FAILED_STARTS`] times in a row when it was waiting.
    fn given_up(&self, job: &Job, id: JobId) -> Option<JobError> {
        let state = self.lock();
        let (through, error) = state
            .failed_starts
            .get(&WorkerKey::of(job))?
            .given_up
            .as_ref()?;
        (id <= *through).then(|| {
            let mut error = error.clone();
            error.message = format!(
                "not started: its persistent workers failed to start {MAX_FAILED_STARTS} times \
                 in a row, so the jobs waiting then fail without trying; submit them again once \
                 the cause is fixed (offload run --resume-failed, or Retry Failed in the app). \
                 The last failure: {}",
                error.message
            );
            error
        })
    }

    /// Counts a worker's start for `job`'s key: failed (with `error`, while job `newest` was
    /// the newest submitted) or not.
    fn count_start(&self, job: &Job, failure: Option<(&JobError, JobId)>) {
        let mut state = self.lock();
        let key = WorkerKey::of(job);
        match failure {
            None => {
                state.failed_starts.remove(&key);
            }
            Some((error, newest)) => {
                let failed = state.failed_starts.entry(key).or_default();
                failed.in_a_row += 1;
                if failed.in_a_row >= MAX_FAILED_STARTS {
                    tracing::warn!(
                        processor = job.processor.name(),
                        through = newest.0,
                        "workers failed to start {} times in a row; the waiting jobs fail at once",
                        failed.in_a_row
                    );
                    failed.given_up = Some((newest, error.clone()));
                }
            }
        }
    }

    /// Whether `job`'s processor supports persistent mode (asked as the job runs it):
    /// remembered per executable file,
    /// asked with `--describe` (blocking: on a worker thread only) when unknown or changed.
    /// A probe that timed out is not remembered: on a busy machine the next job asks again.
    fn supports_persistent(
        &self,
        job: &Job,
        control: &Arc<super::Control>,
    ) -> Result<bool, DescribeError> {
        let path = job.processor.path();
        if job.launcher.is_some() && !path.exists() {
            // Only the launcher's hosts have it: asked for workers, its hello will tell.
            return Ok(job.persistence == Persistence::Always);
        }
        let file = FileId::of(path);
        if let Some((known, persistent)) = self.lock().modes.get(path) {
            if *known == file {
                return Ok(*persistent);
            }
        }
        let persistent = match super::probe::describe(job, DESCRIBE_TIMEOUT, Some(control)) {
            Ok(description) => description.supports_persistent(),
            Err(err @ (DescribeError::TimedOut(_) | DescribeError::Cancelled)) => return Err(err),
            // It does not know the flag, or cannot run: a process per job (which says why).
            Err(_) => false,
        };
        self.lock()
            .modes
            .insert(path.to_path_buf(), (file, persistent));
        Ok(persistent)
    }
}

impl WorkersState {
    fn entry(&mut self, slot: &Arc<Slot>) -> Option<&mut Entry> {
        self.slots.iter_mut().find(|e| Arc::ptr_eq(&e.slot, slot))
    }

    /// Retires idle workers, least recently used first, until at most `keep` are live.
    fn retire_idle(&mut self, keep: usize) {
        let live = self
            .slots
            .iter()
            .filter(|e| e.state != Use::Retiring)
            .count();
        let mut excess = live.saturating_sub(keep);
        while excess > 0 {
            let Some(entry) = self
                .slots
                .iter_mut()
                .filter(|e| e.state == Use::Idle)
                .min_by_key(|e| e.last_used)
            else {
                return;
            };
            entry.state = Use::Retiring;
            entry.slot.retire(Retire::Gracefully);
            excess -= 1;
        }
    }
}

/// What became of a job given to a worker thread.
enum Served {
    /// It ran (or failed to); report this. `retire`: end the worker once reported. `ahead`:
    /// the job whose request went out while this one ran, to run next.
    Finished {
        event: RunnerEvent,
        retire: bool,
        ahead: Option<Box<RunRequest>>,
    },
    /// Its processor runs one job per process.
    OneShot(RunRequest),
}

/// A worker thread: serves its slot's jobs until it is retired or idles out.
fn worker_thread(workers: &Arc<Workers>, slot: &Arc<Slot>) {
    let mut process: Option<WorkerProcess> = None;
    let mut grace = crate::job::RunLimits::default().grace;
    let mut idle_since = Instant::now();
    let mut on_deck = None;
    loop {
        let (request, retire) = match on_deck.take() {
            Some(request) => (Some(request), None),
            None => slot.take(),
        };
        if let Some(request) = request {
            let events = request.events.clone();
            grace = request.job.limits.grace;
            match serve(workers, &mut process, request) {
                Served::Finished {
                    mut event,
                    retire,
                    ahead,
                } => {
                    // Take the job on deck (or the one sent ahead), or count as idle, before
                    // the queue hears of the end: its next job may come at once.
                    on_deck = match ahead {
                        Some(request) => {
                            workers.keep_busy(slot);
                            Some(*request)
                        }
                        None => workers.finished_job(slot),
                    };
                    if let RunnerEvent::Finished { next, .. } = &mut event {
                        *next = on_deck.as_ref().map(|r| r.id);
                    }
                    let _ = events.try_send(event);
                    if retire {
                        if let Some(worker) = process.take() {
                            worker.retire(grace);
                        }
                    }
                    if let Some(worker) = process.as_mut().filter(|w| !w.pipelines()) {
                        let settings = workers.settings();
                        let remote = on_deck.as_ref().is_some_and(|r| r.job.launcher.is_some());
                        if remote && settings.pipeline {
                            worker.set_pipeline(pipeline(slot, settings.max_jobs));
                        }
                    }
                }
                Served::OneShot(request) => {
                    // This key's jobs run one process each: leave the pool, then run this
                    // one, and the jobs on deck if some came meanwhile, a process each.
                    let mut next = workers.remove_taking_deck(slot);
                    let mut event = oneshot::run(request);
                    while let Some(request) = next.pop_front() {
                        if let RunnerEvent::Finished { next, .. } = &mut event {
                            *next = Some(request.id);
                        }
                        let _ = events.try_send(event);
                        event = oneshot::run(request);
                    }
                    let _ = events.try_send(event);
                    return;
                }
            }
            idle_since = Instant::now();
            continue;
        }
        if let Some(how) = retire {
            match (process.take(), how) {
                (Some(worker), Retire::Gracefully) => worker.retire(grace),
                // Dropping kills and reaps.
                (worker, _) => drop(worker),
            }
            workers.remove(slot);
            return;
        }
        let until = idle_since + workers.settings().idle_timeout;
        let idle = match process.as_mut() {
            Some(worker) => worker.wait_idle(slot.wake_fd(), Some(until)),
            None => wait_readable(slot.wake_fd(), until),
        };
        match idle {
            Idle::Woken => slot.clear_wake(),
            Idle::Ended => process = None,
            Idle::TimedOut => {
                if workers.remove_if_idle(slot) {
                    if let Some(worker) = process.take() {
                        worker.retire(grace);
                    }
                    return;
                }
            }
        }
    }
}

/// Lets a remote worker take the job on deck at `slot` while it runs a job.
fn pipeline(slot: &Arc<Slot>, max_jobs: u64) -> Pipeline {
    let (clear, take) = (slot.clone(), slot.clone());
    Pipeline {
        wake: slot.wake_fd(),
        clear: Box::new(move || clear.clear_wake()),
        take: Box::new(move || take.inbox().deck.pop_front()),
        max_jobs,
    }
}

/// Waits for `fd` to be readable until `until`.
fn wait_readable(fd: RawFd, until: Instant) -> Idle {
    loop {
        let now = Instant::now();
        if now >= until {
            return Idle::TimedOut;
        }
        let mut pollfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pollfd, 1, poll_timeout(Some(until), now)) };
        if ready > 0 {
            return Idle::Woken;
        }
    }
}

/// Runs one job on this thread's worker, starting one if needed.
fn serve(workers: &Workers, process: &mut Option<WorkerProcess>, request: RunRequest) -> Served {
    let started = Instant::now();
    let settings = workers.settings();
    let path = request.job.processor.path();
    if process
        .as_ref()
        .is_some_and(|w| !w.has_ahead() && w.executable_changed(path))
    {
        // Rebuilt or replaced on disk: the next jobs get the new one.
        if let Some(worker) = process.take() {
            worker.retire(request.job.limits.grace);
        }
    }
    let supported = match process {
        Some(_) => Ok(true),
        None => workers.supports_persistent(&request.job, &request.control),
    };
    if supported != Ok(true) {
        if request.job.persistence != Persistence::Always {
            return Served::OneShot(request);
        }
        let why = match supported {
            Err(err) => format!("cannot tell whether it supports persistent mode: {err}"),
            Ok(_) => "it does not support persistent mode (its --describe does not say \"persistent\": true)".to_owned(),
        };
        let error = JobError::new(
            FailureKind::CouldNotStart,
            format!("{}: {why}; run it without --persistent", path.display()),
        );
        return Served::Finished {
            event: RunnerEvent::Finished {
                id: request.id,
                result: Err(error),
                stats: RunStats::default(),
                next: None,
            },
            retire: true,
            ahead: None,
        };
    }
    let RunRequest {
        id,
        newest,
        job,
        input,
        decode,
        control,
        events,
    } = request;
    let mut delivered_once = false;
    let mut ahead = None;
    loop {
        let mut startup = None;
        if process.is_none() {
            let began = Instant::now();
            let number = NEXT_WORKER.fetch_add(1, Ordering::Relaxed);
            let worker = match workers.given_up(&job, id) {
                Some(error) => Err(error),
                None => {
                    let worker =
                        WorkerProcess::start(&job, id, number, settings.start_timeout, &control);
                    // A start that this job's cancel stopped says nothing of the processor.
                    if !control.is_cancelled() {
                        workers.count_start(&job, worker.as_ref().err().map(|e| (e, newest)));
                    }
                    worker
                }
            };
            match worker {
                Ok(worker) => {
                    *process = Some(worker);
                    startup = Some(began.elapsed());
                }
                Err(error) => {
                    let stats = RunStats {
                        wall: started.elapsed(),
                        ..RunStats::default()
                    };
                    let event = RunnerEvent::Finished {
                        id,
                        result: Err(error),
                        stats,
                        next: None,
                    };
                    return Served::Finished {
                        event,
                        retire: false,
                        ahead,
                    };
                }
            }
        }
        let Some(worker) = process.as_mut() else {
            continue;
        };
        let run = WorkerRun {
            worker: worker.number(),
            job: worker.jobs() + 1,
            startup,
        };
        let pid = worker.pid();
        let announcement = RunnerEvent::Started {
            id,
            pid,
            worker: Some(run),
        };
        let order = Order {
            id,
            job: &job,
            input: input.clone(),
            decode,
            control: &control,
            events: &events,
        };
        let host = worker.host();
        let end = worker.run(order, announcement);
        // The job whose request went out behind this one's: it runs next, on this worker if
        // it still serves (its request is there already), else on a fresh one.
        ahead = ahead.or_else(|| worker.next_ahead().map(Box::new));
        if matches!(end.fate, Fate::Undelivered | Fate::Innocent) && !delivered_once {
            // It ended before reading any of the request, or was replaced for no fault of
            // this job's: a fresh worker gets the job (PROTOCOL.md 18.6).
            delivered_once = true;
            *process = None;
            continue;
        }
        let retire = match end.fate {
            // Not with a request ahead in its stdin: it retires after that job.
            Fate::Serving if worker.has_ahead() => false,
            Fate::Serving => {
                worker.jobs() >= settings.max_jobs
                    || settings
                        .max_memory_bytes
                        .is_some_and(|limit| end.peak_rss_bytes > limit)
            }
            Fate::Gone | Fate::Undelivered | Fate::Innocent => {
                *process = None;
                false
            }
        };
        let stats = RunStats {
            pid: Some(pid),
            wall: started.elapsed(),
            cpu: end.cpu,
            peak_rss_bytes: end.peak_rss_bytes,
            worker: Some(run),
            memory_limit: end.memory_limit,
            cpu_share: end.cpu_share,
            host,
        };
        return Served::Finished {
            event: RunnerEvent::Finished {
                id,
                result: end.result,
                stats,
                next: None,
            },
            retire,
            ahead,
        };
    }
}
