//! `offload serve`'s loop on the main context: one method per message, from the reader (a
//! request, the end of stdin), the queue (a job started, progressed, finished), a signal or
//! the writer (the client is gone), until the session has ended and every accepted job has
//! had its `finished` event.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use offload::{CborItem, FailureKind, Finished, JobError, JobId, Queue, QueueEvent, RunStats};

use super::events::Event;
use super::reader::Heard;
use super::requests::{BatchLabel, Read, Request, Submit};
use super::writer::Writer;

/// How long serve waits, once it has killed every job, for their runners to report before it
/// reports them itself: a margin for a loaded machine (a killed job ends in milliseconds).
const LAST_REPORTS: Duration = Duration::from_secs(10);

/// Exit status of a session whose request stream broke (as a worker's, PROTOCOL.md 18.3).
pub const EXIT_BROKEN: u8 = 65;

/// What the loop hears.
pub enum Msg {
    /// From the reader.
    Heard(Heard),
    /// From the queue's observer.
    Started {
        job: JobId,
        pid: u32,
        worker: Option<u64>,
    },
    Progress {
        job: JobId,
        fraction: f64,
        message: Option<String>,
    },
    /// From a job's handle.
    Finished(Finished<CborItem>),
    /// SIGINT or SIGTERM.
    Stop,
    /// Stdout cannot be written: nobody hears us any more.
    ClientGone,
    /// The runners of the jobs killed at the end did not all report in time.
    GiveUp,
}

/// A job that has not had its `finished` event.
struct Live {
    /// The client's id for it.
    id: u64,
    batch: Option<BatchLabel>,
}

/// The session's state: the jobs between `queued` and `finished`, and whether it is ending.
pub struct Session {
    queue: Queue,
    writer: Writer,
    /// Back to this loop, for the handles' callbacks and the timer at the end.
    tx: async_channel::Sender<Msg>,
    live: HashMap<JobId, Live>,
    by_id: HashMap<u64, JobId>,
    batches: HashMap<BatchLabel, HashSet<JobId>>,
    /// Set once the session ends: the exit status.
    ending: Option<u8>,
}

impl Session {
    /// A session over `queue`; its observer reports to `tx`.
    pub fn new(queue: Queue, writer: Writer, tx: async_channel::Sender<Msg>) -> Self {
        let observer = tx.clone();
        queue.connect_events(move |event| {
            let msg = match event {
                QueueEvent::Started { id, pid, worker } => Msg::Started {
                    job: *id,
                    pid: *pid,
                    worker: worker.map(|run| run.worker),
                },
                QueueEvent::Progress {
                    id,
                    fraction,
                    message,
                } => Msg::Progress {
                    job: *id,
                    fraction: *fraction,
                    message: message.clone(),
                },
                // `queued` is told as the submit is accepted, `finished` from the handle,
                // which has the result.
                _ => return,
            };
            let _ = observer.try_send(msg);
        });
        Self {
            queue,
            writer,
            tx,
            live: HashMap::new(),
            by_id: HashMap::new(),
            batches: HashMap::new(),
            ending: None,
        }
    }

    /// Runs until the session has ended and every accepted job has been reported; writes the
    /// last events and gives the exit status.
    pub async fn run(mut self, rx: async_channel::Receiver<Msg>) -> u8 {
        self.writer.send(Event::Hello {
            max_running: self.queue.max_running(),
        });
        while let Ok(msg) = rx.recv().await {
            match msg {
                Msg::Heard(Heard::Frame(read)) => self.on_read(read),
                Msg::Heard(Heard::End) | Msg::Stop | Msg::ClientGone => self.end(0),
                Msg::Heard(Heard::Broken(why)) => self.on_broken(why),
                Msg::Started { job, pid, worker } => self.on_started(job, pid, worker),
                Msg::Progress {
                    job,
                    fraction,
                    message,
                } => self.on_progress(job, fraction, message),
                Msg::Finished(finished) => self.on_finished(finished),
                Msg::GiveUp => self.give_up(),
            }
            if self.ending.is_some() && self.live.is_empty() {
                break;
            }
        }
        let status = self.ending.unwrap_or(0);
        self.writer.finish();
        status
    }

    fn on_read(&mut self, read: Read) {
        match read {
            Read::Request(Request::Submit(submit)) => self.submit(*submit),
            Read::Request(request) => self.act(request),
            Read::Refused { id, why } => self.writer.send(Event::Refused { id, error: why }),
            Read::NotUnderstood(message) => self.writer.send(Event::Error { message }),
            Read::Ignored => {}
        }
    }

    fn submit(&mut self, submit: Submit) {
        let Submit {
            id,
            job,
            input,
            batch,
        } = submit;
        if self.ending.is_some() {
            let error = "serve is ending: it queues no more jobs".to_owned();
            self.writer.send(Event::Refused { id, error });
            return;
        }
        if self.by_id.contains_key(&id) {
            let message = format!("a \"submit\" whose id {id} is a job's that has not finished");
            self.writer.send(Event::Error { message });
            return;
        }
        let handle = match self.queue.submit_raw(&job, input) {
            Ok(handle) => handle,
            Err(err) => {
                let error = err.to_string();
                self.writer.send(Event::Refused { id, error });
                return;
            }
        };
        let job_id = handle.id();
        let tx = self.tx.clone();
        handle.on_finished(move |finished| {
            let _ = tx.try_send(Msg::Finished(finished));
        });
        if let Some(batch) = &batch {
            self.batches
                .entry(batch.clone())
                .or_default()
                .insert(job_id);
        }
        self.live.insert(job_id, Live { id, batch });
        self.by_id.insert(id, job_id);
        self.writer.send(Event::Queued { id });
    }

    /// Acts on a request other than `submit`. Ids of jobs that have finished (or never were)
    /// are passed over: a job may finish while the client asks to cancel it.
    fn act(&mut self, request: Request) {
        match request {
            Request::Cancel { id } => {
                if let Some(&job) = self.by_id.get(&id) {
                    self.queue.cancel(job);
                }
            }
            Request::CancelBatch { batch } => {
                for &job in self.batches.get(&batch).into_iter().flatten() {
                    self.queue.cancel(job);
                }
            }
            Request::CancelAll => self.queue.cancel_all(),
            Request::SetPriority { id, priority } => {
                if let Some(&job) = self.by_id.get(&id) {
                    self.queue.set_priority(job, priority);
                }
            }
            Request::Pause { paused } => self.queue.set_paused(paused),
            Request::SetMaxRunning { max_running } => self.queue.set_max_running(max_running),
            // Handled by `submit`.
            Request::Submit(_) => {}
        }
    }

    fn on_started(&mut self, job: JobId, pid: u32, worker: Option<u64>) {
        if let Some(live) = self.live.get(&job) {
            self.writer.send(Event::Started {
                id: live.id,
                pid,
                worker,
            });
        }
    }

    fn on_progress(&mut self, job: JobId, fraction: f64, message: Option<String>) {
        if let Some(live) = self.live.get(&job) {
            self.writer.send(Event::Progress {
                id: live.id,
                fraction,
                message,
            });
        }
    }

    fn on_finished(&mut self, finished: Finished<CborItem>) {
        let Finished { id, result, stats } = finished;
        self.report(id, result, stats);
    }

    /// A job's `finished` event, once.
    fn report(&mut self, job: JobId, result: Result<CborItem, JobError>, stats: RunStats) {
        let Some(live) = self.live.remove(&job) else {
            return;
        };
        self.by_id.remove(&live.id);
        if let Some(batch) = &live.batch {
            if let Some(jobs) = self.batches.get_mut(batch) {
                jobs.remove(&job);
                if jobs.is_empty() {
                    self.batches.remove(batch);
                }
            }
        }
        self.writer.send(Event::Finished {
            id: live.id,
            result,
            stats,
        });
    }

    /// The stream of requests broke: say why, and end as at the end of stdin, with status 65.
    fn on_broken(&mut self, why: String) {
        eprintln!("offload serve: {why}");
        self.writer.send(Event::Error { message: why });
        self.end(EXIT_BROKEN);
    }

    /// Ends the session (once): every job is stopped now, as `Queue::shutdown` does, and
    /// reported as it ends.
    fn end(&mut self, status: u8) {
        if self.ending.is_some() {
            return;
        }
        self.ending = Some(status);
        self.queue.shutdown();
        let tx = self.tx.clone();
        glib::timeout_add_local_once(LAST_REPORTS, move || {
            let _ = tx.try_send(Msg::GiveUp);
        });
    }

    /// The runners that have not reported by now will not be waited for: their jobs are
    /// reported as cancelled, so that each still gets its one `finished`.
    fn give_up(&mut self) {
        let jobs: Vec<JobId> = self.live.keys().copied().collect();
        if !jobs.is_empty() {
            eprintln!(
                "offload serve: {} jobs not reported {LAST_REPORTS:?} after they were killed",
                jobs.len()
            );
        }
        for job in jobs {
            let error = JobError::new(
                FailureKind::Cancelled,
                "cancelled: serve ended before its runner reported",
            );
            self.report(job, Err(error), RunStats::default());
        }
    }
}
