//! Running jobs, off the main context: one-shot runs on pooled threads ([`oneshot`]) and
//! persistent workers, each on a thread of its own ([`workers`], [`worker`]).
//!
//! Everything here may block, so none of it runs on the main context. Runner threads talk to
//! the queue only through small [`RunnerEvent`]s on an async channel, and listen only to each
//! job's [`Control`].
//!
//! Every processor (started by [`crate::spawn`]) leads its own process group, so a signal
//! reaches all of its descendants; it gets `PR_SET_PDEATHSIG`, so it dies if the thread that
//! started it (and so the host) dies; it inherits no descriptor but stdio (and, one-shot, the
//! progress pipe).

mod capture;
mod child;
mod exit;
pub(crate) mod guard;
mod memory;
mod oneshot;
mod probe;
mod process;
mod remote;
mod result;
mod sandbox;
mod stop;
mod worker;
mod workers;

pub use memory::MEMORY_LIMIT_ENV;
pub(crate) use probe::describe;

/// What this process's jobs get for a memory limit.
pub(crate) fn detected_memory_limit() -> crate::outcome::MemoryLimitKind {
    memory::mechanism().kind()
}
pub(crate) use workers::Workers;
pub use workers::{WorkerSettings, MAX_FAILED_STARTS};

use std::any::Any;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use offload_sdk::protocol::ProgressItem;

use crate::job::{Job, JobId};
use crate::outcome::{JobError, RunStats, WorkerRun};

/// A decoded result of the caller's type, or why there is none.
pub(crate) type RawResult = Result<Box<dyn Any + Send>, JobError>;

pub(crate) use result::{decoder, raw_item, Decoder};

/// What a runner tells the queue.
pub(crate) enum RunnerEvent {
    Started {
        id: JobId,
        pid: u32,
        worker: Option<WorkerRun>,
    },
    Progress {
        id: JobId,
        item: ProgressItem,
    },
    Finished {
        id: JobId,
        result: RawResult,
        stats: RunStats,
        /// The job on deck that took this one's place at its worker (see
        /// [`Workers::offer_deck`]): it runs from now on.
        next: Option<JobId>,
    },
}

/// The queue's way to stop a running job: a flag and an eventfd that wakes the runner's poll.
pub(crate) struct Control {
    wake: process::EventFd,
    cancelled: AtomicBool,
    /// Skip the grace period: SIGKILL at once.
    hard: AtomicBool,
}

impl Control {
    pub(crate) fn new() -> io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            wake: process::EventFd::new()?,
            cancelled: AtomicBool::new(false),
            hard: AtomicBool::new(false),
        }))
    }

    /// Asks the runner to stop its job (SIGTERM, SIGKILL after the grace period). Never blocks.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.wake.signal();
    }

    /// Asks the runner to kill its job's process group now. Never blocks.
    pub(crate) fn kill(&self) {
        self.hard.store(true, Ordering::SeqCst);
        self.cancel();
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    fn is_hard(&self) -> bool {
        self.hard.load(Ordering::SeqCst)
    }

    /// The eventfd to poll: readable once the job should stop.
    fn wake_fd(&self) -> std::os::fd::RawFd {
        self.wake.fd()
    }

    /// Empties the eventfd after a wake-up.
    fn clear(&self) {
        self.wake.clear();
    }
}

/// Everything a runner needs; moved onto its thread.
pub(crate) struct RunRequest {
    pub id: JobId,
    /// The newest job submitted to the queue when this one was handed to a runner: jobs up to
    /// it were waiting then (ids grow in submission order).
    pub newest: JobId,
    pub job: Job,
    pub input: Arc<Vec<u8>>,
    pub decode: Decoder,
    pub control: Arc<Control>,
    pub events: async_channel::Sender<RunnerEvent>,
}

/// How long a runner thread with no job waits for one before it ends.
const IDLE_THREAD_LIFETIME: Duration = Duration::from_secs(5);

/// Runner threads, kept between jobs: creating and ending a thread per job cost 10-30 µs of
/// the host's CPU per tiny job (BENCHMARKS.md, suite 1). A thread takes one request at a
/// time and runs it to the end; a request never waits for a busy thread, because `start`
/// creates a thread whenever there are more requests than idle threads. Idle threads end
/// after [`IDLE_THREAD_LIFETIME`], so an idle host keeps none.
struct Threads {
    state: Mutex<ThreadsState>,
    wake: Condvar,
}

#[derive(Default)]
struct ThreadsState {
    requests: VecDeque<RunRequest>,
    /// Threads waiting for a request.
    idle: usize,
    /// Threads alive.
    threads: usize,
}

fn threads() -> &'static Threads {
    static THREADS: OnceLock<Threads> = OnceLock::new();
    THREADS.get_or_init(|| Threads {
        state: Mutex::new(ThreadsState::default()),
        wake: Condvar::new(),
    })
}

impl Threads {
    fn lock(&self) -> MutexGuard<'_, ThreadsState> {
        // The state stays consistent at every unlock; a panic elsewhere cannot break it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts one job: on a persistent worker of `workers` when the job and its processor allow
/// it, else as a one-shot run on a pooled thread. `max_workers` is the queue's current
/// bound on running jobs, which also bounds its live workers.
pub(crate) fn start(
    request: RunRequest,
    workers: &Arc<Workers>,
    max_workers: usize,
) -> io::Result<()> {
    if workers.takes(&request.job) {
        workers.start(request, max_workers)
    } else {
        start_oneshot(request)
    }
}

/// Starts a one-shot run on a pooled thread (a new one if none is idle).
fn start_oneshot(request: RunRequest) -> io::Result<()> {
    let pool = threads();
    let control = request.control.clone();
    let mut state = pool.lock();
    state.requests.push_back(request);
    if state.requests.len() <= state.idle {
        pool.wake.notify_one();
        return Ok(());
    }
    state.threads += 1;
    drop(state);
    let spawned = std::thread::Builder::new()
        .name("offload-runner".into())
        .spawn(move || runner_thread(pool));
    let Err(err) = spawned else {
        return Ok(());
    };
    let mut state = pool.lock();
    state.threads -= 1;
    if state.threads > 0 {
        // A busy thread takes the request when its job ends.
        return Ok(());
    }
    // Nobody will run it: take it back, and the caller reports the job as not started.
    if let Some(at) = state
        .requests
        .iter()
        .position(|r| Arc::ptr_eq(&r.control, &control))
    {
        state.requests.remove(at);
    }
    Err(err)
}

fn runner_thread(pool: &Threads) {
    let mut state = pool.lock();
    state.idle += 1;
    loop {
        if let Some(request) = state.requests.pop_front() {
            state.idle -= 1;
            drop(state);
            let events = request.events.clone();
            let finished = oneshot::run(request);
            // Count this thread as idle before the queue hears of the end: the queue may start
            // the next job at once, and should find this thread rather than make another.
            pool.lock().idle += 1;
            let _ = events.try_send(finished);
            state = pool.lock();
            continue;
        }
        let (next, waited) = pool
            .wake
            .wait_timeout(state, IDLE_THREAD_LIFETIME)
            .unwrap_or_else(PoisonError::into_inner);
        state = next;
        if waited.timed_out() && state.requests.is_empty() {
            state.idle -= 1;
            state.threads -= 1;
            return;
        }
    }
}
