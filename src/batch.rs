//! Batches: many jobs submitted as one, with their own cancel, counts and fraction done,
//! their results in completion order, a future for the end of the batch, and (feature `model`)
//! their rows as a `gio::ListModel`.
//!
//! A batch is a view of some of a queue's jobs: the queue still runs them in submission order
//! with every other job, at most `max_running` at once, and still owns their state; the batch
//! observes its events like any caller. Each job carries the caller's tag (a file name, a row,
//! a tile), which comes back with its events and its result, and labels its row.
//!
//! Cancelled jobs are counted apart ([`Counts::cancelled`]) and are no part of the work done:
//! [`Batch::fraction`] stays where the work got to when a person presses Cancel, instead of
//! jumping to 100% as it would if a cancelled job counted as ended work.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::job::{Counts, Job, JobId, JobState};
use crate::outcome::{Finished, JobError};
use crate::queue::{ObserverId, Queue, QueueEvent, SubmitError};

/// One ended job of a batch: the caller's tag and what the job gave.
#[derive(Debug)]
pub struct BatchResult<T, O> {
    /// The tag the job was submitted with.
    pub tag: T,
    /// Its result (or failure) and what it cost.
    pub finished: Finished<O>,
}

/// Names an observer of a batch, for [`Batch::disconnect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchObserverId(u64);

/// Many jobs as one: see the module documentation.
///
/// Results arrive in completion order through [`Batch::next`]; [`Batch::finished`] resolves
/// once every job submitted so far has ended. Observers given to [`Batch::connect_events`]
/// hear only this batch's jobs, with their tags, and (as the queue's observers) never from
/// inside a call the caller made.
///
/// ```no_run
/// use offload::{Batch, Job, Processor, Queue};
///
/// let queue = Queue::new();
/// let job = Job::new(Processor::find("diag")?);
/// let batch: Batch<String, ciborium::Value> = Batch::new(&queue);
/// for name in ["a", "b", "c"] {
///     batch.submit(&job, &serde_json::json!({"echo": name}), name.to_owned())?;
/// }
/// glib::MainContext::default().block_on(async {
///     while let Some(ended) = batch.next().await {
///         println!("{}: {:?}", ended.tag, ended.finished.result.is_ok());
///     }
/// });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Batch<T, O> {
    queue: Queue,
    shared: Rc<Shared<T, O>>,
    observer: ObserverId,
}

struct Shared<T, O> {
    state: RefCell<State<T, O>>,
    observers: RefCell<Vec<(BatchObserverId, BatchObserver<T>)>>,
    next_observer: Cell<u64>,
    /// Says what a tag is, for its row.
    #[cfg(feature = "model")]
    label: Box<dyn Fn(&T) -> String>,
    #[cfg(feature = "model")]
    rows: crate::model::BatchList,
}

type BatchObserver<T> = Rc<dyn Fn(&T, &QueueEvent)>;

struct State<T, O> {
    /// Every job of the batch: its tag, state and last progress.
    jobs: HashMap<JobId, Entry<T>>,
    /// Results not taken yet, in the order they came.
    results: VecDeque<BatchResult<T, O>>,
    counts: Counts,
    /// The sum of the running jobs' last progress, for the fraction.
    running_progress: f64,
    /// Futures waiting for a result or for the end.
    wakers: Vec<Waker>,
}

struct Entry<T> {
    tag: T,
    state: JobState,
    fraction: f64,
}

impl<T, O> State<T, O> {
    fn fraction(&self) -> f64 {
        let total = self.counts.total();
        if total == 0 {
            return 0.0;
        }
        let done = (self.counts.succeeded + self.counts.failed) as f64 + self.running_progress;
        (done / total as f64).clamp(0.0, 1.0)
    }
}

impl<T: Clone + 'static, O: DeserializeOwned + Send + 'static> Batch<T, O> {
    /// A new, empty batch of `queue`'s jobs (its rows have no label: see
    /// [`Batch::with_labels`]).
    pub fn new(queue: &Queue) -> Self {
        Self::make(
            queue,
            #[cfg(feature = "model")]
            Box::new(|_| String::new()),
        )
    }

    /// A new, empty batch whose rows are labelled by `label` from their tags (a file's name
    /// for a path): what a list of the batch's jobs shows.
    #[cfg(feature = "model")]
    pub fn with_labels(queue: &Queue, label: impl Fn(&T) -> String + 'static) -> Self {
        Self::make(queue, Box::new(label))
    }

    fn make(queue: &Queue, #[cfg(feature = "model")] label: Box<dyn Fn(&T) -> String>) -> Self {
        let shared = Rc::new(Shared {
            state: RefCell::new(State {
                jobs: HashMap::new(),
                results: VecDeque::new(),
                counts: Counts::default(),
                running_progress: 0.0,
                wakers: Vec::new(),
            }),
            observers: RefCell::new(Vec::new()),
            next_observer: Cell::new(0),
            #[cfg(feature = "model")]
            label,
            #[cfg(feature = "model")]
            rows: crate::model::BatchList::new(),
        });
        let weak: Weak<Shared<T, O>> = Rc::downgrade(&shared);
        let observer = queue.connect_events(move |event| {
            if let Some(shared) = weak.upgrade() {
                shared.on_event(event);
            }
        });
        Self {
            queue: queue.clone(),
            shared,
            observer,
        }
    }

    /// Submits a job of this batch whose input is `input`, tagged `tag`.
    pub fn submit<I: Serialize + ?Sized>(
        &self,
        job: &Job,
        input: &I,
        tag: T,
    ) -> Result<JobId, SubmitError> {
        let mut bytes = Vec::new();
        ciborium::into_writer(input, &mut bytes)
            .map_err(|err| SubmitError::Encode(err.to_string()))?;
        self.submit_cbor(job, bytes, tag)
    }

    /// Submits a job of this batch whose input is already one CBOR item, tagged `tag`.
    pub fn submit_cbor(
        &self,
        job: &Job,
        input: impl Into<Arc<Vec<u8>>>,
        tag: T,
    ) -> Result<JobId, SubmitError> {
        let handle = self.queue.submit_cbor::<O>(job, input)?;
        let id = handle.id();
        self.shared.add(id, tag);
        let shared = self.shared.clone();
        handle.on_finished(move |finished| shared.on_result(finished));
        Ok(id)
    }

    /// Makes job `id`, which the caller submitted to the queue itself and whose result it
    /// takes from its own handle, a job of this batch, tagged `tag`: the batch counts it,
    /// lists it, cancels it and tells its events, but [`Batch::next`] does not give its
    /// result. Call it in the turn that submitted the job (before the queue tells of it);
    /// `false` if the queue does not know the job or the batch has it already.
    pub fn adopt(&self, id: JobId, tag: T) -> bool {
        if self.queue.job_state(id).is_none() || self.shared.state.borrow().jobs.contains_key(&id) {
            return false;
        }
        self.shared.add(id, tag);
        true
    }

    /// Cancels this batch's jobs that have not ended (other jobs of the queue go on). As every
    /// cancel, it returns before anything it causes is told.
    pub fn cancel(&self) {
        let ids: Vec<JobId> = self
            .shared
            .state
            .borrow()
            .jobs
            .iter()
            .filter(|(_, entry)| !entry.state.is_finished())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.queue.cancel(id);
        }
    }

    /// Gives this batch's jobs that have not started `priority` (see [`Job::priority`]);
    /// jobs submitted later keep the priority their [`Job`] says. How many jobs it moved.
    pub fn set_priority(&self, priority: i32) -> usize {
        self.waiting()
            .into_iter()
            .filter(|id| self.queue.set_priority(*id, priority))
            .count()
    }

    /// "Run Next" for a whole batch: its jobs that have not started go before every other
    /// queued job (their order among themselves stays submission order). How many it moved.
    pub fn run_next(&self) -> usize {
        let waiting = self.waiting();
        let Some(&first) = waiting.first() else {
            return 0;
        };
        if !self.queue.run_next(first) {
            return 0;
        }
        let Some(top) = self.queue.priority(first) else {
            return 1;
        };
        1 + waiting[1..]
            .iter()
            .filter(|id| self.queue.set_priority(**id, top))
            .count()
    }

    /// This batch's jobs still waiting to start, in submission order.
    fn waiting(&self) -> Vec<JobId> {
        let mut ids: Vec<JobId> = self
            .shared
            .state
            .borrow()
            .jobs
            .iter()
            .filter(|(_, entry)| entry.state == JobState::Queued)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    /// The batch's jobs by state; cancelled ones apart from failed ones.
    pub fn counts(&self) -> Counts {
        self.shared.state.borrow().counts
    }

    /// The share of the batch's work done, from 0.0 to 1.0: jobs that ended other than by a
    /// cancel count whole, running ones by their last progress report, cancelled ones not at
    /// all, over every job of the batch. So a Cancel leaves it where the work got to, and a
    /// batch that was cancelled never reaches 1.0. 0.0 for an empty batch.
    pub fn fraction(&self) -> f64 {
        self.shared.state.borrow().fraction()
    }

    /// The tag of a job of this batch.
    pub fn tag(&self, id: JobId) -> Option<T> {
        self.shared
            .state
            .borrow()
            .jobs
            .get(&id)
            .map(|e| e.tag.clone())
    }

    /// The state of a job of this batch.
    pub fn job_state(&self, id: JobId) -> Option<JobState> {
        self.shared.state.borrow().jobs.get(&id).map(|e| e.state)
    }

    /// Marks job `id`, which succeeded, as failed with `error` after all: for what the caller
    /// does with a result and can fail (writing the file it was to become). Its row and the
    /// counts move with it; `false` (and nothing changes) unless it is a job of this batch that
    /// succeeded.
    pub fn fail(&self, id: JobId, error: &JobError) -> bool {
        let (counts, fraction) = {
            let mut state = self.shared.state.borrow_mut();
            let state = &mut *state;
            let Some(entry) = state.jobs.get_mut(&id) else {
                return false;
            };
            if entry.state != JobState::Succeeded {
                return false;
            }
            let ended = JobState::ended(Some(error));
            state.counts.moved(JobState::Succeeded, ended);
            entry.state = ended;
            (state.counts, state.fraction())
        };
        self.shared.rows_failed(id, error, counts, fraction);
        true
    }

    /// The next result in completion order; `None` once every job submitted so far has ended
    /// and its result was taken.
    pub async fn next(&self) -> Option<BatchResult<T, O>> {
        std::future::poll_fn(|cx| {
            let mut state = self.shared.state.borrow_mut();
            if let Some(result) = state.results.pop_front() {
                return Poll::Ready(Some(result));
            }
            if state.counts.is_done() {
                return Poll::Ready(None);
            }
            state.wakers.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Waits until every job submitted so far has ended (their results stay for
    /// [`Batch::next`]); gives the final counts.
    pub async fn finished(&self) -> Counts {
        std::future::poll_fn(|cx: &mut Context<'_>| {
            let mut state = self.shared.state.borrow_mut();
            if state.counts.is_done() {
                return Poll::Ready(state.counts);
            }
            state.wakers.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Calls `observer` for every event of this batch's jobs, with the job's tag, after the
    /// batch's counts, fraction and rows have taken the event in; until
    /// [`Batch::disconnect`] is given the id it returns.
    pub fn connect_events(&self, observer: impl Fn(&T, &QueueEvent) + 'static) -> BatchObserverId {
        let id = BatchObserverId(self.shared.next_observer.get());
        self.shared.next_observer.set(id.0 + 1);
        self.shared
            .observers
            .borrow_mut()
            .push((id, Rc::new(observer)));
        id
    }

    /// Stops the observer `id` from hearing any more events (one already being told ends its
    /// call). An unknown id is ignored.
    pub fn disconnect(&self, id: BatchObserverId) {
        self.shared
            .observers
            .borrow_mut()
            .retain(|(other, _)| *other != id);
    }

    /// The batch's jobs as a `gio::ListModel` of [`JobObject`](crate::model::JobObject)s, in
    /// submission order, whose properties are its counts and [`fraction`](Batch::fraction):
    /// what a list of the batch's jobs and its progress bar bind to. The same list each time.
    #[cfg(feature = "model")]
    pub fn rows(&self) -> crate::model::BatchList {
        self.shared.rows.clone()
    }
}

impl<T: Clone + 'static, O: 'static> Shared<T, O> {
    /// A new job of the batch, queued.
    fn add(&self, id: JobId, tag: T) {
        let mut state = self.state.borrow_mut();
        state.jobs.insert(
            id,
            Entry {
                tag,
                state: JobState::Queued,
                fraction: 0.0,
            },
        );
        state.counts.add(JobState::Queued);
    }

    /// A job's result, which the queue hands over just before it tells `Finished`.
    fn on_result(&self, finished: Finished<O>) {
        let mut state = self.state.borrow_mut();
        let Some(entry) = state.jobs.get(&finished.id) else {
            return;
        };
        let tag = entry.tag.clone();
        state.results.push_back(BatchResult { tag, finished });
        wake(&mut state.wakers);
    }

    fn on_event(&self, event: &QueueEvent) {
        let id = match event {
            QueueEvent::Queued { id, .. }
            | QueueEvent::Started { id, .. }
            | QueueEvent::Progress { id, .. }
            | QueueEvent::Finished { id, .. } => *id,
        };
        let (tag, counts, fraction) = {
            let mut state = self.state.borrow_mut();
            let state = &mut *state;
            let Some(entry) = state.jobs.get_mut(&id) else {
                return;
            };
            if entry.state.is_finished() {
                return;
            }
            match event {
                QueueEvent::Queued { .. } => {}
                QueueEvent::Started { .. } => {
                    state.counts.moved(entry.state, JobState::Running);
                    entry.state = JobState::Running;
                }
                QueueEvent::Progress { fraction, .. } => {
                    let fraction = fraction.clamp(0.0, 1.0);
                    if entry.state == JobState::Running {
                        state.running_progress += fraction - entry.fraction;
                    }
                    entry.fraction = fraction;
                }
                QueueEvent::Finished { error, .. } => {
                    if entry.state == JobState::Running {
                        state.running_progress = (state.running_progress - entry.fraction).max(0.0);
                    }
                    let ended = JobState::ended(error.as_ref());
                    state.counts.moved(entry.state, ended);
                    entry.state = ended;
                    wake(&mut state.wakers);
                }
            }
            (entry.tag.clone(), state.counts, state.fraction())
        };
        self.tell_rows(event, &tag, counts, fraction);
        let observers: Vec<_> = self.observers.borrow().clone();
        for (observer_id, observer) in observers {
            // One disconnected by an earlier observer of this event hears no more.
            if self
                .observers
                .borrow()
                .iter()
                .any(|(id, _)| *id == observer_id)
            {
                observer(&tag, event);
            }
        }
    }

    /// The rows take in an event, and the counts and fraction after it.
    #[cfg(feature = "model")]
    fn tell_rows(&self, event: &QueueEvent, tag: &T, counts: Counts, fraction: f64) {
        let label = match event {
            QueueEvent::Queued { .. } => (self.label)(tag),
            _ => String::new(),
        };
        self.rows.on_event(event, &label, counts, fraction);
    }

    #[cfg(not(feature = "model"))]
    fn tell_rows(&self, _: &QueueEvent, _: &T, _: Counts, _: f64) {}

    /// A row that succeeded failed after all.
    #[cfg(feature = "model")]
    fn rows_failed(&self, id: JobId, error: &JobError, counts: Counts, fraction: f64) {
        self.rows.failed_after(id, error, counts, fraction);
    }

    #[cfg(not(feature = "model"))]
    fn rows_failed(&self, _: JobId, _: &JobError, _: Counts, _: f64) {}
}

fn wake(wakers: &mut Vec<Waker>) {
    for waker in wakers.drain(..) {
        waker.wake();
    }
}

impl<T, O> Drop for Batch<T, O> {
    /// The batch's jobs go on (as a dropped [`crate::JobHandle`]'s job does); nobody hears of
    /// them any more.
    fn drop(&mut self) {
        self.queue.disconnect(self.observer);
    }
}
