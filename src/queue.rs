//! The job queue: the one owner of job state, living on a GLib main context.
//!
//! Submitting encodes the input and files the job; the queue starts a runner thread per job,
//! at most `max_running` at once, in submission order. Runner threads send small events over an
//! async channel; a future on the main context applies them to the state, tells observers, and
//! hands each result to its [`JobHandle`] exactly once. Nothing here blocks.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::job::{Counts, Job, JobId, JobState};
use crate::outcome::{CborItem, FailureKind, Finished, JobError, RunStats, WorkerRun};
use crate::runner::{
    self, Control, Decoder, RawResult, RunRequest, RunnerEvent, WorkerSettings, Workers,
};

/// What observers of a queue are told, on the main context, in the order it happened.
///
/// Observers and result callbacks run from the queue's own dispatch on the main context,
/// never from inside a call the caller made: `submit` returns before observers hear `Queued`,
/// and `cancel`, `cancel_queued`, `cancel_all`, `set_paused`, `set_max_running` and
/// `shutdown` return before anything they caused is told. A `RefCell` borrowed across any of
/// these calls is therefore safe. Per job the order is `Queued`, `Started`, `Progress`..., the
/// result to its handle, then `Finished`. Later versions may tell more kinds of event (it is
/// `#[non_exhaustive]`): a `match` on it needs a `_` arm.
///
/// ```no_run
/// use offload::{Queue, QueueEvent};
///
/// let queue = Queue::new();
/// queue.connect_events(|event| match event {
///     QueueEvent::Queued { id, processor } => println!("{id} queued for {processor}"),
///     QueueEvent::Started { id, pid, .. } => println!("{id} runs as process {pid}"),
///     QueueEvent::Progress { id, fraction, message } => {
///         println!("{id}: {:.0}% {}", fraction * 100.0, message.as_deref().unwrap_or(""))
///     }
///     QueueEvent::Finished { id, error: None, stats } => println!("{id} done in {:?}", stats.wall),
///     QueueEvent::Finished { id, error: Some(err), .. } => println!("{id} failed: {err}"),
///     _ => {} // an event added in a later version
/// });
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum QueueEvent {
    /// A job was submitted.
    Queued {
        /// Which job.
        id: JobId,
        /// Its processor's name.
        processor: String,
    },
    /// A job's processor started, or a persistent worker took the job.
    Started {
        /// Which job.
        id: JobId,
        /// The processor's process id (the worker's).
        pid: u32,
        /// The persistent worker that runs it; `None` for a process of its own.
        worker: Option<WorkerRun>,
    },
    /// A processor reported progress (at most about 30 events a second per job).
    Progress {
        /// Which job.
        id: JobId,
        /// From 0.0 to 1.0.
        fraction: f64,
        /// The processor's message, if any.
        message: Option<String>,
    },
    /// A job ended. Its result has gone to its [`JobHandle`] just before: a callback given to
    /// [`JobHandle::on_finished`] has run, a future awaiting it has been woken.
    Finished {
        /// Which job.
        id: JobId,
        /// `None` on success; otherwise why it failed.
        error: Option<JobError>,
        /// What it cost.
        stats: RunStats,
    },
}

/// Why a job was refused at submission. More reasons may come (it is `#[non_exhaustive]`).
///
/// ```
/// use offload::{Job, Processor, Queue, RunLimits, SubmitError};
///
/// let queue = Queue::new();
/// let limits = RunLimits { max_input_bytes: 8, ..RunLimits::default() };
/// let job = Job::new(Processor::at("/usr/bin/cat")).limits(limits);
/// let refused = queue.submit::<_, ciborium::Value>(&job, "a text longer than eight bytes");
/// assert!(matches!(refused, Err(SubmitError::InputTooLarge { limit: 8, .. })));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubmitError {
    /// The input could not be encoded as CBOR.
    Encode(String),
    /// The encoded input is over the job's `max_input_bytes`.
    InputTooLarge {
        /// Size of the encoded input.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Encode(err) => write!(f, "cannot encode the job's input as CBOR: {err}"),
            Self::InputTooLarge { size, limit } => {
                write!(
                    f,
                    "the job's input is {size} bytes, over the limit of {limit} bytes"
                )
            }
        }
    }
}

impl std::error::Error for SubmitError {}

/// Identifies an observer so it can be disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObserverId(u64);

type Observer = Rc<dyn Fn(&QueueEvent)>;

/// A queue of processor jobs, run at most N at once, reporting on the main context.
///
/// Create it on the thread that runs the GLib main context (in a GTK app, the GTK thread).
/// Results come back through [`JobHandle`] (a future or a callback) and every change of state
/// through observers ([`Queue::connect_events`]).
///
/// ```no_run
/// use offload::{Job, Processor, Queue};
///
/// let queue = Queue::new();
/// let job = Job::new(Processor::find("diag")?);
/// let handle = queue.submit::<_, ciborium::Value>(&job, &serde_json::json!({"echo": 1}))?;
/// let result = glib::MainContext::default().block_on(handle.result());
/// println!("{result:?}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Queue {
    inner: Rc<Inner>,
}

struct Inner {
    state: RefCell<State>,
    /// Effects of the caller's own calls (`submit`, `cancel*`, `set_*`, `shutdown`), carried
    /// out from the main context after the call returned, before anything newer.
    deferred: RefCell<Effects>,
    /// Whether a dispatch of `deferred` is on its way.
    dispatch_scheduled: std::cell::Cell<bool>,
    observers: RefCell<Vec<(ObserverId, Observer)>>,
    events: async_channel::Sender<RunnerEvent>,
    workers: Arc<Workers>,
}

struct State {
    next_id: u64,
    next_observer: u64,
    max_running: usize,
    paused: bool,
    /// Queued jobs that no worker holds, most urgent first: higher priority, then older.
    pending: BTreeSet<Turn>,
    /// The jobs on deck at busy workers, in the same order: one of them takes a slot that
    /// frees elsewhere before any pending job that comes after it.
    on_deck: BTreeSet<Turn>,
    jobs: HashMap<JobId, Record>,
    running: usize,
    /// Queued jobs on deck at a busy worker (see [`Workers::offer_deck`]), whether or not a
    /// worker has started one without the queue hearing of it yet.
    decked: usize,
    /// Jobs that have ended, by how (only the ends of these counts are used).
    ended: Counts,
}

struct Record {
    phase: Phase,
    /// Its priority: higher starts first.
    priority: i32,
    deliver: Option<Deliver>,
}

/// A queued job's place in line: higher priority first, then submission order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Turn(std::cmp::Reverse<i32>, JobId);

impl Turn {
    fn of(priority: i32, id: JobId) -> Self {
        Self(std::cmp::Reverse(priority), id)
    }

    fn id(self) -> JobId {
        self.1
    }

    fn priority(self) -> i32 {
        self.0 .0
    }
}

/// Where an unfinished job is.
enum Phase {
    /// Waiting for a slot, with what its runner will need.
    Queued(Box<Start>),
    /// Still queued, but on deck at a busy worker, which starts it when its job ends; the
    /// worker holds its request, the queue its stop.
    OnDeck(Arc<Control>),
    /// Its processor is running.
    Running(Arc<Control>),
}

impl Phase {
    fn state(&self) -> JobState {
        match self {
            Self::Queued(_) | Self::OnDeck(_) => JobState::Queued,
            Self::Running(_) => JobState::Running,
        }
    }

    /// Moves it to `next`, giving what it waited with if it was queued; else it stays.
    fn start(&mut self, next: Self) -> Option<Start> {
        match std::mem::replace(self, next) {
            Self::Queued(start) => Some(*start),
            other => {
                *self = other;
                None
            }
        }
    }
}

/// What a job that has not started keeps for its runner.
struct Start {
    job: Job,
    input: Arc<Vec<u8>>,
    decode: Decoder,
}

impl Start {
    /// The request for job `id`, stopped through `control`, reporting on `events`.
    fn request(
        self,
        id: JobId,
        newest: JobId,
        control: &Arc<Control>,
        events: &async_channel::Sender<RunnerEvent>,
    ) -> RunRequest {
        RunRequest {
            id,
            newest,
            job: self.job,
            input: self.input,
            decode: self.decode,
            control: control.clone(),
            events: events.clone(),
        }
    }

    /// What a request given back (from a deck) keeps.
    fn from_request(request: RunRequest) -> Self {
        Self {
            job: request.job,
            input: request.input,
            decode: request.decode,
        }
    }
}

/// What a state change asks for once the state is no longer borrowed, in the order it
/// happened.
#[derive(Default)]
struct Effects {
    steps: Vec<Effect>,
}

enum Effect {
    /// Tell every observer.
    Tell(QueueEvent),
    /// Hand a job's result to its handle.
    Deliver(Deliver, RawResult, RunStats),
}

impl Effects {
    fn tell(&mut self, event: QueueEvent) {
        self.steps.push(Effect::Tell(event));
    }
}

impl Default for Queue {
    fn default() -> Self {
        Self::new()
    }
}

impl Queue {
    /// A queue that runs as many jobs at once as the machine has cores.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::with_max_running(cores)
    }

    /// A queue that runs at most `max_running` jobs at once (at least 1).
    pub fn with_max_running(max_running: usize) -> Self {
        let (sender, receiver) = async_channel::unbounded();
        let inner = Rc::new(Inner {
            state: RefCell::new(State {
                next_id: 0,
                next_observer: 0,
                max_running: max_running.max(1),
                paused: false,
                pending: BTreeSet::new(),
                on_deck: BTreeSet::new(),
                jobs: HashMap::new(),
                running: 0,
                decked: 0,
                ended: Counts::default(),
            }),
            deferred: RefCell::new(Effects::default()),
            dispatch_scheduled: std::cell::Cell::new(false),
            observers: RefCell::new(Vec::new()),
            events: sender,
            workers: Workers::new(),
        });
        let weak = Rc::downgrade(&inner);
        glib::MainContext::ref_thread_default().spawn_local(receive(weak, receiver));
        Self { inner }
    }

    /// Submits a job whose input is `input` and whose result decodes into `O` (off the main
    /// thread). Use `O = ciborium::Value` for an untyped result.
    pub fn submit<I, O>(&self, job: &Job, input: &I) -> Result<JobHandle<O>, SubmitError>
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned + Send + 'static,
    {
        let mut bytes = Vec::new();
        ciborium::into_writer(input, &mut bytes)
            .map_err(|err| SubmitError::Encode(err.to_string()))?;
        self.submit_cbor(job, bytes)
    }

    /// Submits a job whose input is already encoded as one CBOR item: a `Vec<u8>`, or an
    /// `Arc<Vec<u8>>` the caller keeps too (to show it, or to submit it again) without a copy.
    pub fn submit_cbor<O>(
        &self,
        job: &Job,
        input: impl Into<Arc<Vec<u8>>>,
    ) -> Result<JobHandle<O>, SubmitError>
    where
        O: DeserializeOwned + Send + 'static,
    {
        self.submit_decoded(job, input.into(), runner::decoder::<O>())
    }

    /// Submits a job whose input is already encoded as one CBOR item, and whose result is
    /// kept as the bytes its processor wrote: checked on the runner thread to be one item
    /// that decodes within the job's output limits (else the job fails as `bad_output`, as a
    /// typed result would), never decoded into a value. For a caller that passes results on
    /// unread (`offload serve`).
    ///
    /// ```no_run
    /// use offload::{Job, Processor, Queue};
    ///
    /// let queue = Queue::new();
    /// let job = Job::new(Processor::find("diag")?);
    /// let input = vec![0xa1, 0x64, b'e', b'c', b'h', b'o', 0x07]; // {"echo": 7}
    /// let handle = queue.submit_raw(&job, input)?;
    /// let item = glib::MainContext::default().block_on(handle.result())?;
    /// println!("{} bytes of CBOR", item.as_bytes().len());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit_raw(
        &self,
        job: &Job,
        input: impl Into<Arc<Vec<u8>>>,
    ) -> Result<JobHandle<CborItem>, SubmitError> {
        self.submit_decoded(job, input.into(), runner::raw_item)
    }

    /// Files a job whose result `decode` turns into an `O` on the runner thread.
    fn submit_decoded<O: 'static>(
        &self,
        job: &Job,
        input: Arc<Vec<u8>>,
        decode: Decoder,
    ) -> Result<JobHandle<O>, SubmitError> {
        let limit = job.limits.max_input_bytes;
        if input.len() > limit {
            return Err(SubmitError::InputTooLarge {
                size: input.len(),
                limit,
            });
        }
        let slot = Rc::new(ResultSlot::default());
        let id = {
            let mut state = self.inner.state.borrow_mut();
            let id = JobId(state.next_id);
            state.next_id += 1;
            let deliver = Deliver::new(id, slot.clone());
            state.jobs.insert(
                id,
                Record {
                    phase: Phase::Queued(Box::new(Start {
                        job: job.clone(),
                        input,
                        decode,
                    })),
                    priority: job.priority,
                    deliver: Some(deliver),
                },
            );
            state.pending.insert(Turn::of(job.priority, id));
            id
        };
        // A job more urgent than one on deck goes before it: the decks are made again.
        if self
            .inner
            .more_urgent_than_a_deck(Turn::of(job.priority, id))
        {
            self.inner.recall_decks();
        }
        let mut effects = Effects::default();
        effects.tell(QueueEvent::Queued {
            id,
            processor: job.processor.name().to_owned(),
        });
        self.inner.schedule(&mut effects);
        self.defer(effects);
        Ok(JobHandle { id, slot })
    }

    /// How many jobs run at once at most.
    pub fn max_running(&self) -> usize {
        self.inner.state.borrow().max_running
    }

    /// Changes how many jobs run at once. Raising it starts more jobs now; lowering it lets
    /// running jobs finish.
    pub fn set_max_running(&self, max_running: usize) {
        let max_running = max_running.max(1);
        self.inner.recall_decks();
        self.inner.state.borrow_mut().max_running = max_running;
        self.inner.workers.trim(max_running);
        self.schedule_and_defer();
    }

    /// When persistent workers are replaced or ended (see [`WorkerSettings`]).
    pub fn worker_settings(&self) -> WorkerSettings {
        self.inner.workers.settings()
    }

    /// Changes when persistent workers are replaced or ended; live workers follow the new
    /// settings from their next job.
    pub fn set_worker_settings(&self, settings: WorkerSettings) {
        self.inner.workers.set_settings(settings);
    }

    /// How many persistent workers live now (running a job, idle, or ending).
    pub fn live_workers(&self) -> usize {
        self.inner.workers.live()
    }

    /// Whether starting new jobs is paused.
    pub fn is_paused(&self) -> bool {
        self.inner.state.borrow().paused
    }

    /// Pauses or resumes starting new jobs. Running jobs go on either way.
    pub fn set_paused(&self, paused: bool) {
        if paused {
            self.inner.recall_decks();
        }
        self.inner.state.borrow_mut().paused = paused;
        self.schedule_and_defer();
    }

    /// Jobs by state. Finished jobs are counted, not kept.
    ///
    /// ```
    /// let queue = offload::Queue::with_max_running(2);
    /// queue.set_paused(true);
    /// let counts = queue.counts();
    /// assert_eq!((counts.queued, counts.running, counts.total()), (0, 0, 0));
    /// ```
    pub fn counts(&self) -> Counts {
        let state = self.inner.state.borrow();
        Counts {
            queued: state.pending.len() + state.decked,
            running: state.running,
            ..state.ended
        }
    }

    /// The state of a job that has not finished yet; `None` once it has (or if unknown).
    pub fn job_state(&self, id: JobId) -> Option<JobState> {
        self.inner
            .state
            .borrow()
            .jobs
            .get(&id)
            .map(|r| r.phase.state())
    }

    /// Changes a queued job's priority (see [`Job::priority`]); `false` if it is not queued
    /// (running, finished, or unknown). A job on deck at a busy worker goes back in line.
    pub fn set_priority(&self, id: JobId, priority: i32) -> bool {
        let on_deck = {
            let state = self.inner.state.borrow();
            match state.jobs.get(&id) {
                Some(record) if matches!(record.phase, Phase::OnDeck(_)) => true,
                Some(record) if matches!(record.phase, Phase::Queued(_)) => false,
                _ => return false,
            }
        };
        if on_deck {
            self.inner.recall_decks();
        }
        {
            let mut state = self.inner.state.borrow_mut();
            let Some(record) = state.jobs.get_mut(&id) else {
                return false;
            };
            if !matches!(record.phase, Phase::Queued(_)) {
                // A worker started it meanwhile.
                return false;
            }
            let old = Turn::of(record.priority, id);
            record.priority = priority;
            state.pending.remove(&old);
            state.pending.insert(Turn::of(priority, id));
        }
        if self.inner.more_urgent_than_a_deck(Turn::of(priority, id)) {
            self.inner.recall_decks();
        }
        let mut effects = Effects::default();
        self.inner.schedule(&mut effects);
        self.defer(effects);
        true
    }

    /// Makes a queued job the next to start ("Run Next"): a priority above every other
    /// waiting job's. `false` if it is not queued.
    pub fn run_next(&self, id: JobId) -> bool {
        let top = {
            let state = self.inner.state.borrow();
            let first = |set: &BTreeSet<Turn>| set.first().map(|turn| turn.priority());
            [first(&state.pending), first(&state.on_deck)]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(0)
        };
        self.set_priority(id, top.saturating_add(1))
    }

    /// The priority of a queued job, if it is queued.
    pub fn priority(&self, id: JobId) -> Option<i32> {
        let state = self.inner.state.borrow();
        state
            .jobs
            .get(&id)
            .filter(|record| !matches!(record.phase, Phase::Running(_)))
            .map(|record| record.priority)
    }

    /// Cancels one job: a queued job ends at once, a running one is stopped (SIGTERM to its
    /// process group, SIGKILL after the grace period). Returns whether the job was still there.
    pub fn cancel(&self, id: JobId) -> bool {
        let mut effects = Effects::default();
        let found = self.inner.cancel_one(id, &mut effects);
        self.inner.schedule(&mut effects);
        self.defer(effects);
        found
    }

    /// Cancels every job that has not started.
    pub fn cancel_queued(&self) {
        self.inner.recall_decks();
        let ids: Vec<JobId> = self
            .inner
            .state
            .borrow()
            .pending
            .iter()
            .map(|turn| turn.id())
            .collect();
        let mut effects = Effects::default();
        for id in ids {
            self.inner.cancel_one(id, &mut effects);
        }
        self.defer(effects);
    }

    /// Cancels every job, queued or running.
    pub fn cancel_all(&self) {
        self.cancel_queued();
        for control in self.inner.running_controls() {
            control.cancel();
        }
    }

    /// Ends everything now, for quitting: queued jobs are cancelled, running processors are
    /// killed (SIGKILL to their process groups, no grace period), and idle persistent
    /// workers too. Their runners still report running jobs as cancelled; see
    /// [`Counts::running`] to wait for that. The queue takes new jobs afterwards.
    pub fn shutdown(&self) {
        self.cancel_queued();
        for control in self.inner.running_controls() {
            control.kill();
        }
        self.inner.workers.shutdown();
    }

    /// Calls `observer` on the main context for every event, until disconnected.
    pub fn connect_events(&self, observer: impl Fn(&QueueEvent) + 'static) -> ObserverId {
        let id = {
            let mut state = self.inner.state.borrow_mut();
            state.next_observer += 1;
            ObserverId(state.next_observer)
        };
        self.inner
            .observers
            .borrow_mut()
            .push((id, Rc::new(observer)));
        id
    }

    /// Stops calling an observer.
    pub fn disconnect(&self, id: ObserverId) {
        self.inner
            .observers
            .borrow_mut()
            .retain(|(other, _)| *other != id);
    }

    fn schedule_and_defer(&self) {
        let mut effects = Effects::default();
        self.inner.schedule(&mut effects);
        self.defer(effects);
    }

    /// Carries out the effects of a caller's call from the main context, after the call: no
    /// observer or callback runs inside `submit`, `cancel*`, `set_*` or `shutdown`.
    fn defer(&self, effects: Effects) {
        if effects.steps.is_empty() {
            return;
        }
        self.inner.deferred.borrow_mut().steps.extend(effects.steps);
        if !self.inner.dispatch_scheduled.replace(true) {
            let weak = Rc::downgrade(&self.inner);
            glib::MainContext::ref_thread_default().spawn_local(async move {
                if let Some(inner) = weak.upgrade() {
                    inner.apply(Effects::default());
                }
            });
        }
    }
}

impl Inner {
    fn running_controls(&self) -> Vec<Arc<Control>> {
        self.state
            .borrow()
            .jobs
            .values()
            .filter_map(|r| match &r.phase {
                Phase::Running(control) | Phase::OnDeck(control) => Some(control.clone()),
                Phase::Queued(_) => None,
            })
            .collect()
    }

    /// Starts queued jobs while slots are free, the most urgent first (higher priority, then
    /// older); when no slot is free, puts the next ones on deck. A job on deck at a busy worker
    /// is taken back to a slot that frees elsewhere when it comes before every pending job: a
    /// deck hides a round trip, and must never make a job wait while a slot is free.
    fn schedule(&self, effects: &mut Effects) {
        loop {
            let mut state = self.state.borrow_mut();
            if state.paused {
                return;
            }
            if state.running >= state.max_running {
                drop(state);
                self.fill_decks();
                return;
            }
            let first_pending = state.pending.first().copied();
            let first_on_deck = state.on_deck.first().copied();
            let from_deck = first_on_deck.filter(|deck| first_pending.is_none_or(|p| *deck < p));
            let id = if let Some(deck) = from_deck {
                state.on_deck.remove(&deck);
                let Some(request) = self.workers.undeck(deck.id()) else {
                    // A worker started it meanwhile: it runs, and its worker's report of the
                    // job before it says so. Look again.
                    continue;
                };
                state.decked -= 1;
                tracing::trace!(id = deck.id().0, "taken back from deck to a free slot");
                let Some(record) = state.jobs.get_mut(&deck.id()) else {
                    continue;
                };
                record.phase = Phase::Queued(Box::new(Start::from_request(request)));
                deck.id()
            } else if let Some(pending) = first_pending {
                state.pending.remove(&pending);
                pending.id()
            } else {
                return;
            };
            let max_running = state.max_running;
            let newest = JobId(state.next_id.saturating_sub(1));
            let Some(record) = state.jobs.get_mut(&id) else {
                continue;
            };
            if !matches!(record.phase, Phase::Queued(_)) {
                continue;
            }
            let priority = record.priority;
            let started = Control::new().and_then(|control| {
                let mut start = record
                    .phase
                    .start(Phase::Running(control.clone()))
                    .ok_or_else(|| std::io::Error::other("the job was not queued"))?;
                start.job.priority = priority;
                let request = start.request(id, newest, &control, &self.events);
                runner::start(request, &self.workers, max_running)
            });
            match started {
                Ok(()) => {
                    state.running += 1;
                }
                Err(err) => {
                    let error = JobError::new(
                        FailureKind::CouldNotStart,
                        format!("cannot start a runner thread: {err}"),
                    );
                    state.finish(id, Err(error), RunStats::default(), effects);
                }
            }
        }
    }

    /// Whether `turn` comes before a job on deck (which would otherwise start first).
    fn more_urgent_than_a_deck(&self, turn: Turn) -> bool {
        self.state
            .borrow()
            .on_deck
            .last()
            .is_some_and(|last| turn < *last)
    }

    /// Puts the oldest queued jobs on deck at busy workers of their key, one per worker, so
    /// that a worker goes from one job to the next without waiting for the main context.
    /// Stops at the first job that cannot go on deck, so that jobs still start in order.
    fn fill_decks(&self) {
        loop {
            let mut state = self.state.borrow_mut();
            // Only at the limit exactly: above it (the limit was lowered), a worker that ends a
            // job must leave its slot free.
            if state.paused || state.running != state.max_running {
                return;
            }
            let Some(&turn) = state.pending.first() else {
                return;
            };
            let id = turn.id();
            let max_running = state.max_running;
            let decked = state.decked;
            let newest = JobId(state.next_id.saturating_sub(1));
            let Some(record) = state.jobs.get_mut(&id) else {
                state.pending.remove(&turn);
                continue;
            };
            let Phase::Queued(start) = &record.phase else {
                state.pending.remove(&turn);
                continue;
            };
            // One per worker; two per pipelining (remote) worker: offer_deck says where.
            let depth = if start.job.launcher.is_some() { 2 } else { 1 };
            if decked >= depth * max_running || !self.workers.takes(&start.job) {
                return;
            }
            let Ok(control) = Control::new() else {
                return;
            };
            let priority = record.priority;
            let Some(mut start) = record.phase.start(Phase::OnDeck(control.clone())) else {
                return;
            };
            // The worker that takes it weighs it against the other jobs on deck.
            start.job.priority = priority;
            let request = start.request(id, newest, &control, &self.events);
            if let Some(request) = self.workers.offer_deck(request) {
                record.phase = Phase::Queued(Box::new(Start::from_request(request)));
                return;
            }
            state.pending.remove(&turn);
            state.on_deck.insert(turn);
            state.decked += 1;
        }
    }

    /// Takes back the jobs on deck that no worker has started yet, to the front of the queue
    /// in their order (for pause, a lower limit, or cancelling them).
    fn recall_decks(&self) {
        let recalled = self.workers.undeck_all();
        if recalled.is_empty() {
            return;
        }
        let mut state = self.state.borrow_mut();
        for request in recalled {
            let id = request.id;
            let Some(record) = state.jobs.get_mut(&id) else {
                continue;
            };
            record.phase = Phase::Queued(Box::new(Start::from_request(request)));
            let turn = Turn::of(record.priority, id);
            state.on_deck.remove(&turn);
            state.pending.insert(turn);
            state.decked -= 1;
        }
    }

    fn cancel_one(&self, id: JobId, effects: &mut Effects) -> bool {
        let mut state = self.state.borrow_mut();
        let Some(record) = state.jobs.get(&id) else {
            return false;
        };
        let turn = Turn::of(record.priority, id);
        if matches!(record.phase, Phase::OnDeck(_)) && self.workers.undeck(id).is_some() {
            // Taken back before a worker started it: it ends now, as a queued job. (If a
            // worker took it meanwhile, it is running, and stops like a running job.)
            state.on_deck.remove(&turn);
            state.decked -= 1;
            let error = JobError::new(FailureKind::Cancelled, "cancelled before it started");
            state.finish(id, Err(error), RunStats::default(), effects);
            return true;
        }
        if let Phase::Running(control) | Phase::OnDeck(control) = &record.phase {
            control.cancel();
            return true;
        }
        state.pending.remove(&turn);
        let error = JobError::new(FailureKind::Cancelled, "cancelled before it started");
        state.finish(id, Err(error), RunStats::default(), effects);
        true
    }

    fn handle(&self, event: RunnerEvent, effects: &mut Effects) {
        match event {
            RunnerEvent::Started { id, pid, worker } => {
                effects.tell(QueueEvent::Started { id, pid, worker })
            }
            RunnerEvent::Progress { id, item } => effects.tell(QueueEvent::Progress {
                id,
                fraction: item.fraction,
                message: item.message,
            }),
            RunnerEvent::Finished {
                id,
                result,
                stats,
                next,
            } => {
                let mut state = self.state.borrow_mut();
                state.running = state.running.saturating_sub(1);
                state.finish(id, result, stats, effects);
                if let Some(next) = next {
                    // Its worker went on with the job on deck: that one runs from now, in the
                    // slot this one left (its Started event follows from the runner).
                    state.running += 1;
                    if let Some(record) = state.jobs.get_mut(&next) {
                        if let Phase::OnDeck(control) = &record.phase {
                            record.phase = Phase::Running(control.clone());
                            let turn = Turn::of(record.priority, next);
                            state.on_deck.remove(&turn);
                            state.decked -= 1;
                        }
                    }
                }
            }
        }
    }

    /// Carries out the deferred effects of the caller's calls, then `effects`, in order and
    /// with no state borrowed. Only ever called from the main context's own dispatch (the
    /// event loop future, a deferred dispatch), never from inside a caller's call.
    fn apply(&self, effects: Effects) {
        self.dispatch_scheduled.set(false);
        let mut steps = std::mem::take(&mut self.deferred.borrow_mut().steps);
        steps.extend(effects.steps);
        let mut observers: Option<Vec<Observer>> = None;
        for step in steps {
            match step {
                Effect::Tell(event) => {
                    let observers = observers.get_or_insert_with(|| {
                        self.observers
                            .borrow()
                            .iter()
                            .map(|(_, o)| o.clone())
                            .collect()
                    });
                    for observer in observers.iter() {
                        observer(&event);
                    }
                }
                Effect::Deliver(deliver, result, stats) => deliver.send(result, stats),
            }
        }
    }
}

impl State {
    fn finish(&mut self, id: JobId, result: RawResult, stats: RunStats, effects: &mut Effects) {
        let Some(mut record) = self.jobs.remove(&id) else {
            return;
        };
        let error = result.as_ref().err().cloned();
        self.ended.add(JobState::ended(error.as_ref()));
        // The result first: by the time observers hear `Finished`, the job's callback has run
        // (a future awaiting it has been woken), so an observer that sees the last job end
        // sees every result delivered.
        if let Some(deliver) = record.deliver.take() {
            effects
                .steps
                .push(Effect::Deliver(deliver, result, stats.clone()));
        }
        effects.tell(QueueEvent::Finished { id, error, stats });
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Nobody is left to take the results: stop every running processor now, and the
        // idle workers.
        for record in self.state.get_mut().jobs.values() {
            if let Phase::Running(control) | Phase::OnDeck(control) = &record.phase {
                control.kill();
            }
        }
        self.workers.shutdown();
    }
}

/// Most runner events applied in one main-loop turn...
const BATCH_EVENTS: usize = 256;
/// ...and about the most time spent on them, observers included.
const BATCH_TIME: Duration = Duration::from_millis(3);

/// Applies runner events on the main context, a batch per wake-up, until the queue is gone.
async fn receive(queue: Weak<Inner>, receiver: async_channel::Receiver<RunnerEvent>) {
    while let Ok(first) = receiver.recv().await {
        let Some(inner) = queue.upgrade() else {
            return;
        };
        // Take what else has arrived, but yield to the main loop after a bounded batch: the
        // observers' work per event counts, so the bound is in time as well as in events.
        let began = Instant::now();
        let mut event = first;
        let mut handled = 0;
        loop {
            let mut effects = Effects::default();
            inner.handle(event, &mut effects);
            inner.schedule(&mut effects);
            inner.apply(effects);
            handled += 1;
            if handled >= BATCH_EVENTS || began.elapsed() >= BATCH_TIME {
                break;
            }
            match receiver.try_recv() {
                Ok(next) => event = next,
                Err(_) => break,
            }
        }
    }
}

/// The caller's side of one job: its result, delivered once, as a future or to a callback.
///
/// A callback is stored with the job and called by the queue itself when the result arrives:
/// a hundred thousand waiting handles cost the main loop nothing until their jobs end.
///
/// ```no_run
/// # use offload::{Job, Processor, Queue};
/// # let queue = Queue::new();
/// # let job = Job::new(Processor::find("diag").unwrap());
/// let handle = queue.submit::<_, ciborium::Value>(&job, &serde_json::json!({"sleep_ms": 10}))?;
/// handle.on_finished(|finished| match finished.result {
///     Ok(value) => println!("job {} gave {value:?}", finished.id),
///     Err(err) => eprintln!("job {} failed: {err}", finished.id),
/// });
/// # Ok::<(), offload::SubmitError>(())
/// ```
pub struct JobHandle<O> {
    id: JobId,
    slot: Rc<ResultSlot<O>>,
}

impl<O: 'static> JobHandle<O> {
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// Waits for the job to end; gives its result (or failure) and what it cost.
    pub async fn finished(self) -> Finished<O> {
        std::future::poll_fn(|cx| self.slot.poll(self.id, cx)).await
    }

    /// Waits for the job's result.
    pub async fn result(self) -> Result<O, JobError> {
        self.finished().await.result
    }

    /// Calls `callback` on the main context when the job ends (from the queue's own dispatch,
    /// never from inside this call).
    pub fn on_finished(self, callback: impl FnOnce(Finished<O>) + 'static) {
        let mut state = self.slot.state.borrow_mut();
        match std::mem::replace(&mut *state, SlotState::Taken) {
            SlotState::Ready(finished) => {
                drop(state);
                later(move || callback(finished));
            }
            SlotState::Taken => {
                drop(state);
                let finished = dropped_before_finishing(self.id);
                later(move || callback(finished));
            }
            SlotState::Empty | SlotState::Waiting(_) | SlotState::Callback(_) => {
                *state = SlotState::Callback(Box::new(callback));
            }
        }
    }
}

/// Where one job's result meets its handle; both sides live on the main context.
struct ResultSlot<O> {
    state: RefCell<SlotState<O>>,
}

enum SlotState<O> {
    /// Nobody has asked yet.
    Empty,
    /// A future is waiting.
    Waiting(Waker),
    /// A callback is waiting.
    Callback(Box<dyn FnOnce(Finished<O>)>),
    /// The result arrived first.
    Ready(Finished<O>),
    /// The result was handed out.
    Taken,
}

impl<O> Default for ResultSlot<O> {
    fn default() -> Self {
        Self {
            state: RefCell::new(SlotState::Empty),
        }
    }
}

impl<O> ResultSlot<O> {
    fn poll(&self, id: JobId, cx: &mut Context<'_>) -> Poll<Finished<O>> {
        let mut state = self.state.borrow_mut();
        match std::mem::replace(&mut *state, SlotState::Taken) {
            SlotState::Ready(finished) => Poll::Ready(finished),
            SlotState::Taken => Poll::Ready(dropped_before_finishing(id)),
            SlotState::Empty | SlotState::Waiting(_) | SlotState::Callback(_) => {
                *state = SlotState::Waiting(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Hands `finished` to whoever waits. Called with nothing of the queue borrowed.
    fn fill(&self, finished: Finished<O>) {
        let mut state = self.state.borrow_mut();
        match std::mem::replace(&mut *state, SlotState::Taken) {
            SlotState::Callback(callback) => {
                drop(state);
                callback(finished);
            }
            SlotState::Waiting(waker) => {
                *state = SlotState::Ready(finished);
                drop(state);
                waker.wake();
            }
            SlotState::Empty => *state = SlotState::Ready(finished),
            // Filled once only; a second fill cannot happen, and would have no one to go to.
            SlotState::Ready(_) | SlotState::Taken => {}
        }
    }
}

/// Runs `f` from the thread-default main context's next turn.
fn later(f: impl FnOnce() + 'static) {
    glib::MainContext::ref_thread_default().spawn_local(async move { f() });
}

fn dropped_before_finishing<O>(id: JobId) -> Finished<O> {
    Finished {
        id,
        result: Err(JobError::new(
            FailureKind::Cancelled,
            "the queue was dropped before the job finished",
        )),
        stats: RunStats::default(),
    }
}

/// The queue's side of a [`ResultSlot`], type-erased so that one queue holds jobs of any result type.
/// Dropped unsent (the queue went away first), it tells the handle so, from an idle callback.
struct Deliver {
    send: Option<SendOutcome>,
}

/// Hands a job's outcome to its slot; `None` when the queue is gone first.
type SendOutcome = Box<dyn FnOnce(Option<(RawResult, RunStats)>)>;

impl Deliver {
    fn new<O: 'static>(id: JobId, slot: Rc<ResultSlot<O>>) -> Self {
        let send = move |outcome: Option<(RawResult, RunStats)>| match outcome {
            Some((result, stats)) => {
                let result = result.and_then(|value| {
                    value.downcast::<O>().map(|value| *value).map_err(|_| {
                        JobError::new(FailureKind::BadOutput, "result of an unexpected type")
                    })
                });
                slot.fill(Finished { id, result, stats });
            }
            None => {
                // Not from inside the queue's drop: whatever the callback does, later.
                later(move || slot.fill(dropped_before_finishing(id)));
            }
        };
        Self {
            send: Some(Box::new(send)),
        }
    }

    fn send(mut self, result: RawResult, stats: RunStats) {
        if let Some(send) = self.send.take() {
            send(Some((result, stats)));
        }
    }
}

impl Drop for Deliver {
    fn drop(&mut self) {
        if let Some(send) = self.send.take() {
            send(None);
        }
    }
}
