//! A batch as a person thinks of it: the jobs that one action added (a folder of photos, a JSON
//! Lines file, the demo, a retry), with its own counts, progress, time left, cancel and end.
//!
//! Its jobs are an [`offload::Batch`](crate::Batch), whose counts, fraction, cancel and rows
//! (labelled as the job list labels them) are the library's; what is the app's own is here:
//! its total counts the inputs not submitted yet (files still to be read, slices still to be
//! submitted), so "12 of 60" is true from the first second of a 60-file folder; a cancel stops
//! what is waiting as well as the jobs in the queue (and counts it cancelled); and it ends once
//! every result has been handled (a file job's output is written after its job ends).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::model::BatchList;
use crate::{Batch, BatchObserverId, Counts, JobError, JobId, Processor, Queue, QueueEvent};

/// The window over which a batch's jobs per second are measured.
const RATE_WINDOW: Duration = Duration::from_secs(8);

/// One batch: see the module documentation.
pub struct AppBatch {
    /// What a person calls it ("Make Thumbnails · photos").
    title: String,
    processor: Processor,
    /// The parameters it runs with, `KEY=VALUE`.
    params: Vec<String>,
    /// Where its outputs go, for a batch on files.
    output_dir: Option<PathBuf>,
    /// Its jobs, tagged with their rows' labels. Their results go to the window's handles
    /// (three result types), so the jobs are adopted, not submitted, by the batch.
    jobs: Batch<String, ()>,
    /// Inputs not submitted yet.
    waiting: Cell<usize>,
    /// Inputs a cancel kept from being submitted: counted cancelled.
    cancelled_waiting: Cell<usize>,
    /// Results not handled yet (a file job's output is written after its end).
    unhandled: Cell<usize>,
    finish_times: Rc<RefCell<VecDeque<Instant>>>,
    files_written: Cell<usize>,
    cancelled: Cell<bool>,
    /// Whether its end has been reported.
    reported: Cell<bool>,
}

impl std::fmt::Debug for AppBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppBatch")
            .field("title", &self.title)
            .field("counts", &self.counts())
            .field("waiting", &self.waiting.get())
            .finish_non_exhaustive()
    }
}

impl AppBatch {
    pub fn new(
        queue: &Queue,
        title: impl Into<String>,
        processor: &Processor,
        params: Vec<String>,
        output_dir: Option<PathBuf>,
    ) -> Self {
        let jobs = Batch::with_labels(queue, Clone::clone);
        let finish_times: Rc<RefCell<VecDeque<Instant>>> = Rc::default();
        {
            let finish_times = finish_times.clone();
            jobs.connect_events(move |_, event| {
                if let QueueEvent::Finished { .. } = event {
                    finish_times.borrow_mut().push_back(Instant::now());
                }
            });
        }
        Self {
            title: title.into(),
            processor: processor.clone(),
            params,
            output_dir,
            jobs,
            waiting: Cell::new(0),
            cancelled_waiting: Cell::new(0),
            unhandled: Cell::new(0),
            finish_times,
            files_written: Cell::new(0),
            cancelled: Cell::new(false),
            reported: Cell::new(false),
        }
    }

    pub fn title(&self) -> &str {
        &self.title
    }

    pub fn processor(&self) -> &Processor {
        &self.processor
    }

    /// The parameters it runs with, `KEY=VALUE`, as `offload run --param` takes them.
    pub fn params(&self) -> &[String] {
        &self.params
    }

    pub fn output_dir(&self) -> Option<&std::path::Path> {
        self.output_dir.as_deref()
    }

    /// Its jobs by state; cancelled also counts the inputs a cancel kept from being
    /// submitted (what still waits is not in it: see [`AppBatch::waiting`]).
    pub fn counts(&self) -> Counts {
        let mut counts = self.jobs.counts();
        counts.cancelled += self.cancelled_waiting.get();
        counts
    }

    /// Its jobs as a list model, with their counts and fraction as properties.
    pub fn rows(&self) -> BatchList {
        self.jobs.rows()
    }

    /// Calls `observer` for each event of its jobs, after its counts have taken it in.
    pub fn connect_events(&self, observer: impl Fn(&QueueEvent) + 'static) -> BatchObserverId {
        self.jobs.connect_events(move |_, event| observer(event))
    }

    /// Inputs not submitted yet.
    pub fn waiting(&self) -> usize {
        self.waiting.get()
    }

    /// Everything the batch is to do: its jobs and what waits.
    pub fn total(&self) -> usize {
        self.waiting.get() + self.counts().total()
    }

    /// What is left to do: what waits, is queued or runs.
    pub fn left(&self) -> usize {
        self.waiting.get() + self.jobs.counts().unfinished()
    }

    pub fn files_written(&self) -> usize {
        self.files_written.get()
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.get()
    }

    /// `count` more inputs will be submitted (or dropped) later.
    pub fn add_waiting(&self, count: usize) {
        self.waiting.set(self.waiting.get() + count);
    }

    /// `count` inputs that were expected will not run: unreadable, not taken.
    pub fn drop_waiting(&self, count: usize) {
        self.waiting.set(self.waiting.get().saturating_sub(count));
    }

    /// An expected input became job `id` (submitted in this turn), whose row reads `label`.
    pub fn submitted(&self, id: JobId, label: String) {
        self.drop_waiting(1);
        if self.jobs.adopt(id, label) {
            self.unhandled.set(self.unhandled.get() + 1);
        }
    }

    /// Job `id`, which succeeded, failed after all (its output could not be written).
    pub fn failed_after(&self, id: JobId, error: &JobError) {
        self.jobs.fail(id, error);
    }

    /// A job's result has been handled (its output written, or kept for the inspector).
    pub fn handled(&self, wrote_file: bool) {
        self.unhandled.set(self.unhandled.get().saturating_sub(1));
        if wrote_file {
            self.files_written.set(self.files_written.get() + 1);
        }
    }

    /// Stops the batch: what waits is not submitted (and counts as cancelled), and its jobs in
    /// the queue are cancelled.
    pub fn cancel(&self) {
        self.cancelled.set(true);
        let waiting = self.waiting.replace(0);
        self.cancelled_waiting
            .set(self.cancelled_waiting.get() + waiting);
        self.jobs.cancel();
    }

    /// Whether every job has ended and every result been handled.
    pub fn is_done(&self) -> bool {
        self.waiting.get() == 0 && self.jobs.counts().is_done() && self.unhandled.get() == 0
    }

    /// Marks the end as reported; whether it had not been.
    pub fn take_end(&self) -> bool {
        self.is_done() && !self.reported.replace(true)
    }

    /// From 0.0 to 1.0: the work its jobs have done (the library's fraction: a cancelled job
    /// is none), over everything the batch is to do (what waits, and what a cancel kept from
    /// being submitted, included). A Cancel leaves the bar where the work got to.
    pub fn fraction(&self) -> f64 {
        let jobs = self.jobs.counts().total();
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        (self.jobs.fraction() * jobs as f64 / total as f64).clamp(0.0, 1.0)
    }

    /// Jobs ended per second lately (0 until two have ended).
    pub fn rate(&self) -> f64 {
        let mut times = self.finish_times.borrow_mut();
        while times.front().is_some_and(|t| t.elapsed() > RATE_WINDOW) {
            times.pop_front();
        }
        match (times.front(), times.len()) {
            (Some(first), n) if n >= 2 => (n - 1) as f64 / first.elapsed().as_secs_f64().max(0.25),
            _ => 0.0,
        }
    }

    /// "12 of 60 done · about 40 s left", "paused", or the end's summary.
    pub fn progress_text(&self, paused: bool) -> String {
        let done = format!("{} of {} done", self.counts().ended(), self.total());
        if self.is_done() {
            return self.summary();
        }
        if self.is_cancelled() {
            return format!("{done} · cancelling");
        }
        if paused {
            return format!("{done} · paused");
        }
        let rate = self.rate();
        let left = self.left();
        if rate > 0.0 && left > 0 {
            format!(
                "{done} · about {} left",
                format_duration(left as f64 / rate)
            )
        } else {
            done
        }
    }

    /// The end in a few words: "30 done", "28 done, 2 failed", "12 done, 48 cancelled".
    pub fn summary(&self) -> String {
        let counts = self.counts();
        let mut parts = vec![format!("{} done", counts.succeeded)];
        if counts.failed > 0 {
            parts.push(format!("{} failed", counts.failed));
        }
        if counts.cancelled > 0 {
            parts.push(format!("{} cancelled", counts.cancelled));
        }
        parts.join(", ")
    }
}

/// "40 s", "3 min 05 s", "1 h 02 min".
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(1.0).round() as u64;
    if s >= 3600 {
        format!("{} h {:02} min", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

/// "1 job", "3 jobs": a count with its noun.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_counts_what_waits_and_a_cancel_stops_it() {
        let context = glib::MainContext::new();
        context
            .with_thread_default(|| {
                let queue = Queue::new();
                queue.set_paused(true);
                let processor = Processor::at("/bin/true");
                let batch = AppBatch::new(&queue, "t", &processor, Vec::new(), None);
                batch.add_waiting(60);
                for label in ["a", "b"] {
                    let job = crate::Job::new(processor.clone());
                    let handle = queue
                        .submit_cbor::<ciborium::Value>(&job, vec![0xf6])
                        .expect("submit");
                    batch.submitted(handle.id(), label.to_owned());
                }
                assert_eq!(batch.total(), 60);
                assert_eq!(batch.progress_text(false), "0 of 60 done");
                assert_eq!(batch.progress_text(true), "0 of 60 done · paused");
                batch.cancel();
                assert!(batch.is_cancelled());
                assert_eq!(batch.waiting(), 0);
                assert_eq!(batch.counts().cancelled, 58, "what waited, at once");
                assert!(!batch.is_done(), "its two jobs have not ended yet");
                while !batch.counts().is_done() {
                    context.iteration(true);
                }
                assert!(!batch.is_done(), "nor been handled");
                batch.handled(false);
                batch.handled(false);
                assert!(batch.is_done());
                assert!(batch.take_end());
                assert!(!batch.take_end(), "reported once");
                assert_eq!(batch.summary(), "0 done, 60 cancelled");
                assert_eq!(batch.fraction(), 0.0, "a cancel is no work done");
                assert_eq!(batch.rows().cancelled(), 2);
            })
            .expect("a context of its own");
    }

    #[test]
    fn durations_and_counts_read_as_words() {
        assert_eq!(format_duration(0.2), "1 s");
        assert_eq!(format_duration(185.0), "3 min 05 s");
        assert_eq!(count(1, "job", "jobs"), "1 job");
        assert_eq!(count(2, "job", "jobs"), "2 jobs");
    }
}
