//! A batch as a person thinks of it: the jobs that one action added (a folder of photos, a JSON
//! Lines file, the demo, a retry), with its own counts, progress, time left, cancel and end.
//!
//! Its total counts the inputs not submitted yet (files still to be read, slices still to be
//! submitted), so "12 of 60" is true from the first second of a 60-file folder; a cancel stops
//! what is waiting as well as the jobs in the queue. The per-batch logic lives here alone, so
//! that it can move onto `offload::Batch` once that is a list model with counts.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::{Counts, JobId, JobState, Processor, Queue};

/// The window over which a batch's jobs per second are measured.
const RATE_WINDOW: Duration = Duration::from_secs(8);

#[derive(Debug, Default)]
struct State {
    /// Its jobs by state; cancelled also counts the inputs a cancel kept from being submitted.
    counts: Counts,
    /// Inputs not submitted yet.
    waiting: usize,
    /// Progress of the running jobs.
    progress: HashMap<JobId, f64>,
    /// Jobs submitted and not ended, and results not yet handled (a file job's output is
    /// written after its end): the batch has ended when both are empty and nothing waits.
    unfinished: std::collections::HashSet<JobId>,
    unhandled: usize,
    finish_times: VecDeque<Instant>,
    files_written: usize,
}

/// One batch: see the module documentation.
#[derive(Debug)]
pub struct AppBatch {
    /// What a person calls it ("Make Thumbnails · photos").
    title: String,
    processor: Processor,
    /// The parameters it runs with, `KEY=VALUE`.
    params: Vec<String>,
    /// Where its outputs go, for a batch on files.
    output_dir: Option<PathBuf>,
    state: RefCell<State>,
    cancelled: Cell<bool>,
    /// Whether its end has been reported.
    reported: Cell<bool>,
}

impl AppBatch {
    pub fn new(
        title: impl Into<String>,
        processor: &Processor,
        params: Vec<String>,
        output_dir: Option<PathBuf>,
    ) -> Self {
        Self {
            title: title.into(),
            processor: processor.clone(),
            params,
            output_dir,
            state: RefCell::default(),
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

    /// Its jobs by state (what waits is not in it: see [`AppBatch::waiting`]).
    pub fn counts(&self) -> Counts {
        self.state.borrow().counts
    }

    /// Inputs not submitted yet.
    pub fn waiting(&self) -> usize {
        self.state.borrow().waiting
    }

    /// Everything the batch is to do: its jobs and what waits.
    pub fn total(&self) -> usize {
        let state = self.state.borrow();
        state.waiting + state.counts.total()
    }

    /// What is left to do: what waits, is queued or runs.
    pub fn left(&self) -> usize {
        let state = self.state.borrow();
        state.waiting + state.counts.unfinished()
    }

    pub fn files_written(&self) -> usize {
        self.state.borrow().files_written
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.get()
    }

    /// `count` more inputs will be submitted (or dropped) later.
    pub fn add_waiting(&self, count: usize) {
        self.state.borrow_mut().waiting += count;
    }

    /// `count` inputs that were expected will not run: unreadable, not taken.
    pub fn drop_waiting(&self, count: usize) {
        let mut state = self.state.borrow_mut();
        state.waiting = state.waiting.saturating_sub(count);
    }

    /// An expected input became job `id`.
    pub fn submitted(&self, id: JobId) {
        let mut state = self.state.borrow_mut();
        state.waiting = state.waiting.saturating_sub(1);
        state.counts.add(JobState::Queued);
        state.unfinished.insert(id);
        state.unhandled += 1;
    }

    pub fn started(&self, id: JobId) {
        let mut state = self.state.borrow_mut();
        if state.unfinished.contains(&id) && !state.progress.contains_key(&id) {
            state.counts.moved(JobState::Queued, JobState::Running);
            state.progress.insert(id, 0.0);
        }
    }

    pub fn progressed(&self, id: JobId, fraction: f64) {
        if let Some(progress) = self.state.borrow_mut().progress.get_mut(&id) {
            *progress = fraction.clamp(0.0, 1.0);
        }
    }

    /// Job `id` ended, in `ending` (succeeded, failed or cancelled).
    pub fn finished(&self, id: JobId, ending: JobState) {
        let mut state = self.state.borrow_mut();
        if !state.unfinished.remove(&id) {
            return;
        }
        let before = if state.progress.remove(&id).is_some() {
            JobState::Running
        } else {
            JobState::Queued
        };
        state.counts.moved(before, ending);
        state.finish_times.push_back(Instant::now());
    }

    /// A job that succeeded failed after all (its output could not be written).
    pub fn failed_after(&self) {
        let mut state = self.state.borrow_mut();
        state.counts.moved(JobState::Succeeded, JobState::Failed);
    }

    /// A job's result has been handled (its output written, or kept for the inspector).
    pub fn handled(&self, wrote_file: bool) {
        let mut state = self.state.borrow_mut();
        state.unhandled = state.unhandled.saturating_sub(1);
        if wrote_file {
            state.files_written += 1;
        }
    }

    /// Stops the batch: what waits is not submitted (and counts as cancelled), and its jobs in
    /// the queue are cancelled.
    pub fn cancel(&self, queue: &Queue) {
        self.cancelled.set(true);
        let ids: Vec<JobId> = {
            let mut state = self.state.borrow_mut();
            let waiting = std::mem::take(&mut state.waiting);
            state.counts.cancelled += waiting;
            state.unfinished.iter().copied().collect()
        };
        for id in ids {
            queue.cancel(id);
        }
    }

    /// Whether every job has ended and every result been handled.
    pub fn is_done(&self) -> bool {
        let state = self.state.borrow();
        state.waiting == 0
            && state.counts.is_done()
            && state.unfinished.is_empty()
            && state.unhandled == 0
    }

    /// Marks the end as reported; whether it had not been.
    pub fn take_end(&self) -> bool {
        self.is_done() && !self.reported.replace(true)
    }

    /// From 0.0 to 1.0: ended jobs whole, running ones by their progress, over everything the
    /// batch is to do (what waits included).
    pub fn fraction(&self) -> f64 {
        let state = self.state.borrow();
        let total = state.waiting + state.counts.total();
        if total == 0 {
            return 0.0;
        }
        let running: f64 = state.progress.values().sum();
        ((state.counts.ended() as f64 + running) / total as f64).clamp(0.0, 1.0)
    }

    /// Jobs ended per second lately (0 until two have ended).
    pub fn rate(&self) -> f64 {
        let mut state = self.state.borrow_mut();
        while state
            .finish_times
            .front()
            .is_some_and(|t| t.elapsed() > RATE_WINDOW)
        {
            state.finish_times.pop_front();
        }
        match (state.finish_times.front(), state.finish_times.len()) {
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

    fn batch() -> AppBatch {
        AppBatch::new("t", &Processor::at("/bin/true"), Vec::new(), None)
    }

    #[test]
    fn the_total_counts_what_waits_and_a_cancel_stops_it() {
        let batch = batch();
        batch.add_waiting(60);
        batch.submitted(JobId(1));
        batch.submitted(JobId(2));
        batch.started(JobId(1));
        batch.finished(JobId(1), JobState::Succeeded);
        batch.handled(true);
        assert_eq!(batch.total(), 60);
        assert_eq!(batch.progress_text(false), "1 of 60 done");
        assert_eq!(batch.progress_text(true), "1 of 60 done · paused");
        let queue = Queue::new();
        batch.cancel(&queue);
        assert!(batch.is_cancelled());
        assert_eq!(batch.waiting(), 0);
        assert_eq!(batch.counts().cancelled, 58);
        assert!(!batch.is_done(), "job 2 has not ended yet");
        batch.finished(JobId(2), JobState::Cancelled);
        batch.handled(false);
        assert!(batch.is_done());
        assert!(batch.take_end());
        assert!(!batch.take_end(), "reported once");
        assert_eq!(batch.summary(), "1 done, 59 cancelled");
    }

    #[test]
    fn durations_and_counts_read_as_words() {
        assert_eq!(format_duration(0.2), "1 s");
        assert_eq!(format_duration(185.0), "3 min 05 s");
        assert_eq!(count(1, "job", "jobs"), "1 job");
        assert_eq!(count(2, "job", "jobs"), "2 jobs");
    }
}
