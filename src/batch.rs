//! Batches: many jobs submitted as one, with their own cancel, counts and overall progress,
//! their results in completion order, and a future for the end of the batch.
//!
//! A batch is a view of some of a queue's jobs: the queue still runs them in submission order
//! with every other job, at most `max_running` at once. Each job carries the caller's tag (a
//! file name, a row, a tile), which comes back with its events and its result.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::job::{Counts, Job, JobId, JobState};
use crate::outcome::Finished;
use crate::queue::{ObserverId, Queue, QueueEvent, SubmitError};

/// One ended job of a batch: the caller's tag and what the job gave.
#[derive(Debug)]
pub struct BatchResult<T, O> {
    /// The tag the job was submitted with.
    pub tag: T,
    /// Its result (or failure) and what it cost.
    pub finished: Finished<O>,
}

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
    observers: RefCell<Vec<BatchObserver<T>>>,
}

type BatchObserver<T> = Rc<dyn Fn(&T, &QueueEvent)>;

struct State<T, O> {
    /// Jobs that have not ended: their tag, state and last progress.
    jobs: HashMap<JobId, Entry<T>>,
    /// Results not taken yet, in the order they came.
    results: VecDeque<BatchResult<T, O>>,
    counts: Counts,
    /// Futures waiting for a result or for the end.
    wakers: Vec<Waker>,
}

struct Entry<T> {
    tag: T,
    state: JobState,
    fraction: f64,
}

impl<T: Clone + 'static, O: DeserializeOwned + Send + 'static> Batch<T, O> {
    /// A new, empty batch of `queue`'s jobs.
    pub fn new(queue: &Queue) -> Self {
        let shared = Rc::new(Shared {
            state: RefCell::new(State {
                jobs: HashMap::new(),
                results: VecDeque::new(),
                counts: Counts::default(),
                wakers: Vec::new(),
            }),
            observers: RefCell::new(Vec::new()),
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
        {
            let mut state = self.shared.state.borrow_mut();
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
        let shared = self.shared.clone();
        handle.on_finished(move |finished| shared.on_result(finished));
        Ok(id)
    }

    /// Cancels this batch's jobs that have not ended (other jobs of the queue go on). As every
    /// cancel, it returns before anything it causes is told.
    pub fn cancel(&self) {
        let ids: Vec<JobId> = self.shared.state.borrow().jobs.keys().copied().collect();
        for id in ids {
            self.queue.cancel(id);
        }
    }

    /// The batch's jobs by state.
    pub fn counts(&self) -> Counts {
        self.shared.state.borrow().counts
    }

    /// Overall progress from 0.0 to 1.0: ended jobs count whole, running ones by their last
    /// progress report. 0.0 for an empty batch.
    pub fn progress(&self) -> f64 {
        let state = self.shared.state.borrow();
        if state.counts.total() == 0 {
            return 0.0;
        }
        let running: f64 = state
            .jobs
            .values()
            .filter(|e| e.state == JobState::Running)
            .map(|e| e.fraction)
            .sum();
        (state.counts.ended() as f64 + running) / state.counts.total() as f64
    }

    /// The tag of a job of this batch that has not ended.
    pub fn tag(&self, id: JobId) -> Option<T> {
        self.shared
            .state
            .borrow()
            .jobs
            .get(&id)
            .map(|e| e.tag.clone())
    }

    /// The next result in completion order; `None` once every job submitted so far has ended
    /// and its result was taken.
    pub async fn next(&self) -> Option<BatchResult<T, O>> {
        std::future::poll_fn(|cx| {
            let mut state = self.shared.state.borrow_mut();
            if let Some(result) = state.results.pop_front() {
                return Poll::Ready(Some(result));
            }
            if state.jobs.is_empty() {
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
            if state.jobs.is_empty() {
                return Poll::Ready(state.counts);
            }
            state.wakers.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Calls `observer` for every event of this batch's jobs, with the job's tag.
    pub fn connect_events(&self, observer: impl Fn(&T, &QueueEvent) + 'static) {
        self.shared.observers.borrow_mut().push(Rc::new(observer));
    }
}

impl<T: Clone + 'static, O: 'static> Shared<T, O> {
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
        let tag = {
            let mut state = self.state.borrow_mut();
            let state = &mut *state;
            let Some(entry) = state.jobs.get_mut(&id) else {
                return;
            };
            match event {
                QueueEvent::Queued { .. } => {}
                QueueEvent::Started { .. } => {
                    state.counts.moved(entry.state, JobState::Running);
                    entry.state = JobState::Running;
                }
                QueueEvent::Progress { fraction, .. } => entry.fraction = *fraction,
                QueueEvent::Finished { error, .. } => {
                    let ended = JobState::ended(error.as_ref());
                    state.counts.moved(entry.state, ended);
                    entry.state = ended;
                }
            }
            let heard = !self.observers.borrow().is_empty();
            if matches!(event, QueueEvent::Finished { .. }) {
                let entry = state.jobs.remove(&id);
                wake(&mut state.wakers);
                entry.filter(|_| heard).map(|e| e.tag)
            } else {
                heard.then(|| entry.tag.clone())
            }
        };
        let Some(tag) = tag else { return };
        let observers: Vec<_> = self.observers.borrow().clone();
        for observer in observers {
            observer(&tag, event);
        }
    }
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
