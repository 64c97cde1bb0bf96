//! `offload run`'s loop: what it does with each message, from the input reader, a finished
//! job or a signal, until every input read has been printed (or skipped, or kept from
//! running by `--halt`).
//!
//! Every job goes through one waiting map: its line waits there for its turn (in input order,
//! or unordered for stdout) and is then printed and logged together. A job not run (done in an
//! earlier run, or kept from starting by `--halt`) waits there too, as nothing to print, so
//! that the lines after it are not held up.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{mpsc, Arc};

use ciborium::Value;
use offload::{Counts, FailureKind, Finished, Job, JobError, JobId, JobState, Queue};

use super::commit::Sink;
use super::feed::Fed;
use super::halt::{Halt, When};
use super::line::{json_line, JobLine};
use super::outputs::{Done as Kept, Outputs};

/// What the run's loop hears: from the reader, from finished jobs, from a signal.
pub enum Msg {
    Fed(Fed),
    Done(Box<Done>),
    /// The queue refused input `.0` (over the input limit, ...) for the reason `.1`; `.2`
    /// is its digest for the job log.
    Refused(usize, String, String),
    /// Stop reading inputs (SIGINT, SIGTERM).
    Stop,
}

/// A job that ended, as its handle told it.
pub struct Done {
    index: usize,
    finished: Finished<Value>,
    /// The input, to run it again (`--retries`).
    input: Arc<Vec<u8>>,
    /// The input's digest for the job log (empty without one).
    digest: String,
    tries: u32,
}

/// What the loop is told once, before it starts.
pub struct Settings {
    /// Print in input order (not `--unordered`).
    pub ordered: bool,
    /// `--retries`.
    pub retries: u32,
    /// `--halt`.
    pub halt: Option<Halt>,
    /// Whether there is a job log (which needs each input's digest).
    pub logging: bool,
    /// What the job log says earlier runs did (`--resume`): per job, the input's digest and
    /// whether it succeeded.
    pub done_before: HashMap<usize, (String, bool)>,
    /// `--resume-failed`: run the jobs that failed before again.
    pub resume_failed: bool,
}

/// The loop's state: what has been read, what runs, what waits to be printed.
pub struct RunLoop {
    queue: Queue,
    job: Job,
    settings: Settings,
    outputs: Outputs,
    /// Where lines and log entries go.
    sink: Sink,
    /// Tells the input reader it may read one more input.
    credit: mpsc::Sender<()>,
    /// Back to this loop: finished jobs, refused inputs.
    tx: async_channel::Sender<Msg>,
    bar: indicatif::ProgressBar,
    interrupted: Rc<Cell<bool>>,
    summary: Summary,
    /// Lines waiting to be printed (ordered: for their turn): None for a job not run
    /// (skipped by --resume, or kept from starting by --halt).
    waiting: BTreeMap<usize, Option<Printed>>,
    /// The next job to print, in input order.
    next: usize,
    /// How many inputs there are, once the reading ended (or was stopped).
    total: Option<usize>,
    /// Inputs read so far.
    read: usize,
    /// Why the reading stopped early, if a bad input stopped it.
    bad: Option<String>,
    /// Jobs in the queue, by input number.
    outstanding: HashMap<usize, JobId>,
    /// Jobs a --halt cancelled before they started: not run, so not printed (a --resume runs
    /// them).
    not_started: HashSet<usize>,
    /// Jobs that ended, for --halt (when they end, not when they are printed).
    ended: Counts,
    /// With --files: the file of each job not printed yet.
    file_of: HashMap<usize, PathBuf>,
}

/// A job's line, ready to print, and what its job log entry needs.
struct Printed {
    line: JobLine,
    digest: String,
    /// When it started, in Unix seconds.
    started: f64,
    tries: u32,
}

/// How the run went: its jobs counted as their lines were printed, and what else it did.
#[derive(Default)]
pub struct Summary {
    /// The printed jobs by how they ended (`cancelled`: by `--halt now`, an interrupt, or a
    /// closed stdout).
    pub printed: Counts,
    /// Jobs done in an earlier run (`--resume`).
    pub skipped: usize,
    /// Jobs printed or skipped.
    ended: usize,
    /// Stdout is closed: nothing more is printed.
    broken: bool,
    /// Files --files skipped (not taken, unreadable).
    pub not_taken: usize,
    /// Jobs a --halt cancelled before they started.
    pub not_run: usize,
    /// The --halt condition that stopped the batch.
    pub halted: Option<Halt>,
}

/// How the loop ended.
pub struct Outcome {
    pub summary: Summary,
    /// Why the reading stopped early, if a bad input stopped it.
    pub bad: Option<String>,
}

/// Everything the loop is given.
pub struct Parts {
    pub queue: Queue,
    pub job: Job,
    pub settings: Settings,
    pub outputs: Outputs,
    pub sink: Sink,
    pub credit: mpsc::Sender<()>,
    pub tx: async_channel::Sender<Msg>,
    pub bar: indicatif::ProgressBar,
    pub interrupted: Rc<Cell<bool>>,
}

impl RunLoop {
    pub fn new(parts: Parts) -> Self {
        let Parts {
            queue,
            job,
            settings,
            outputs,
            sink,
            credit,
            tx,
            bar,
            interrupted,
        } = parts;
        Self {
            queue,
            job,
            settings,
            outputs,
            sink,
            credit,
            tx,
            bar,
            interrupted,
            summary: Summary::default(),
            waiting: BTreeMap::new(),
            next: 0,
            total: None,
            read: 0,
            bad: None,
            outstanding: HashMap::new(),
            not_started: HashSet::new(),
            ended: Counts::default(),
            file_of: HashMap::new(),
        }
    }

    /// Runs until every input read has been printed or skipped (or the channel closes);
    /// waits for every line and entry to be written before it returns.
    pub async fn run(mut self, rx: async_channel::Receiver<Msg>) -> Outcome {
        while let Ok(msg) = rx.recv().await {
            match msg {
                Msg::Fed(Fed::Input(index, bytes, path)) => self.on_input(index, bytes, path),
                Msg::Fed(Fed::Skipped(path, why)) => self.on_skipped(&path, &why),
                Msg::Fed(Fed::Bad(count, why)) => self.on_bad(count, why),
                Msg::Fed(Fed::End(count)) => self.on_end(count),
                Msg::Stop => self.on_stop(),
                Msg::Done(done) => self.on_done(*done),
                Msg::Refused(index, why, digest) => self.on_refused(index, why, digest),
            }
            self.halt_if_reached();
            self.print_ready();
            if self.is_over() {
                break;
            }
        }
        // Every line and entry written before the exit status says anything.
        self.sink.finish();
        Outcome {
            summary: self.summary,
            bad: self.bad,
        }
    }

    /// Input `index` was read: run it, unless an earlier run did.
    fn on_input(&mut self, index: usize, bytes: Vec<u8>, path: Option<PathBuf>) {
        self.read += 1;
        if let Some(path) = path {
            self.file_of.insert(index, path);
        }
        // Read after the reading stopped: not run.
        if self.total.is_some() {
            return;
        }
        // Only a job log needs the input's digest: hashed once, here.
        let digest = if self.settings.logging {
            super::joblog::digest(&bytes)
        } else {
            String::new()
        };
        if self.done_before(index, &digest) {
            // Done in an earlier run: not run, not printed again.
            self.waiting.insert(index, None);
            self.summary.skipped += 1;
        } else {
            self.bar.inc_length(1);
            self.submit(index, Arc::new(bytes), digest, 1);
        }
    }

    /// Whether the job log shows input `index` done, with this input (`--resume`), and
    /// succeeded (`--resume-failed`).
    fn done_before(&self, index: usize, digest: &str) -> bool {
        self.settings
            .done_before
            .get(&index)
            .is_some_and(|(logged, ok)| logged == digest && (*ok || !self.settings.resume_failed))
    }

    /// A file `--files` does not run.
    fn on_skipped(&mut self, path: &std::path::Path, why: &str) {
        eprintln!("offload: skipped {}: {why}", path.display());
        self.summary.not_taken += 1;
    }

    /// A bad input stopped the reading after `count` inputs.
    fn on_bad(&mut self, count: usize, why: String) {
        self.bad = Some(why);
        self.total.get_or_insert(count);
    }

    /// The reading ended: `count` inputs in all.
    fn on_end(&mut self, count: usize) {
        if count == 0 {
            self.bad = Some("no inputs: the input files hold none".to_owned());
        }
        self.total.get_or_insert(count);
    }

    /// SIGINT or SIGTERM: read no more.
    fn on_stop(&mut self) {
        self.total.get_or_insert(self.read);
    }

    /// A job ended: run it again, or keep its result and line it up to be printed.
    fn on_done(&mut self, done: Done) {
        let Done {
            index,
            finished,
            input,
            digest,
            tries,
        } = done;
        self.outstanding.remove(&index);
        let cancelled = finished
            .result
            .as_ref()
            .is_err_and(|err| err.kind == FailureKind::Cancelled);
        if cancelled && self.not_started.remove(&index) {
            // Halted before it started: not run, not printed.
            self.bar.inc(1);
            self.summary.not_run += 1;
            self.waiting.insert(index, None);
            return;
        }
        if tries <= self.settings.retries
            && finished.result.as_ref().is_err_and(worth_retrying)
            && !self.interrupted.get()
            && self.summary.halted.is_none()
        {
            self.submit(index, input, digest, tries + 1);
            return;
        }
        self.bar.inc(1);
        self.ended
            .add(JobState::ended(finished.result.as_ref().err()));
        let started = since_unix_epoch()
            .saturating_sub(finished.stats.wall)
            .as_secs_f64();
        let kept = Kept {
            index,
            finished,
            file: self.file_of.remove(&index),
            digest: &digest,
        };
        let mut line = self.outputs.keep(kept, &mut self.sink);
        if self.settings.retries > 0 {
            line.tries = Some(tries);
        }
        let printed = Printed {
            line,
            digest,
            started,
            tries,
        };
        self.waiting.insert(index, Some(printed));
    }

    /// The queue refused an input: a `could_not_start` line with empty stats.
    fn on_refused(&mut self, index: usize, why: String, digest: String) {
        self.bar.inc(1);
        self.ended.add(JobState::Failed);
        let error = JobError::new(FailureKind::CouldNotStart, why);
        let mut line = JobLine::failed(index, error, &offload::RunStats::default());
        line.file = self.file_of.remove(&index).map(super::line::JsonPath);
        let printed = Printed {
            line,
            digest,
            started: since_unix_epoch().as_secs_f64(),
            tries: 1,
        };
        self.waiting.insert(index, Some(printed));
    }

    /// Submits input `index` (its `tries`th try); a refusal comes back as a message.
    fn submit(&mut self, index: usize, input: Arc<Vec<u8>>, digest: String, tries: u32) {
        let tx = self.tx.clone();
        match self.queue.submit_cbor::<Value>(&self.job, input.clone()) {
            Ok(handle) => {
                self.outstanding.insert(index, handle.id());
                handle.on_finished(move |finished| {
                    let _ = tx.try_send(Msg::Done(Box::new(Done {
                        index,
                        finished,
                        input,
                        digest,
                        tries,
                    })));
                });
            }
            Err(err) => {
                let _ = tx.try_send(Msg::Refused(index, err.to_string(), digest));
            }
        }
    }

    /// Once the --halt condition holds: start no more jobs (and, `now`, cancel the running
    /// ones); read no more.
    fn halt_if_reached(&mut self) {
        let Some(halt) = self.settings.halt else {
            return;
        };
        if self.summary.halted.is_some() || !halt.reached(self.ended, self.read) {
            return;
        }
        self.summary.halted = Some(halt);
        self.total.get_or_insert(self.read);
        for (&index, &id) in &self.outstanding {
            if self.queue.job_state(id) == Some(JobState::Queued) {
                self.not_started.insert(index);
            }
        }
        match halt.when {
            When::Soon => self.queue.cancel_queued(),
            When::Now => self.queue.cancel_all(),
        }
    }

    /// Prints what may be printed: in input order, or (unordered) all that waits.
    fn print_ready(&mut self) {
        loop {
            let printed = if self.settings.ordered {
                let printed = self.waiting.remove(&self.next);
                if printed.is_some() {
                    self.next += 1;
                }
                printed
            } else {
                self.waiting.pop_first().map(|(_, printed)| printed)
            };
            let Some(printed) = printed else { break };
            self.emit(printed);
        }
    }

    /// A job's turn: its line printed and its entry logged, together; None for a job not
    /// run, which only makes room for the next input.
    fn emit(&mut self, printed: Option<Printed>) {
        let _ = self.credit.send(());
        self.summary.ended += 1;
        let Some(printed) = printed else { return };
        self.summary
            .printed
            .add(JobState::ended(printed.line.error()));
        if self.summary.broken {
            return;
        }
        let line = json_line(&printed.line);
        let entry = if self.settings.logging {
            super::joblog::entry(
                &printed.line,
                &printed.digest,
                printed.started,
                printed.tries,
            )
        } else {
            Ok(Vec::new())
        };
        let (line, entry) = match (line, entry) {
            (Ok(line), Ok(entry)) => (line, entry),
            (Err(err), _) | (_, Err(err)) => {
                // Not seen to happen: every part of a line is plain JSON.
                eprintln!("offload: job {} cannot be printed: {err}", printed.line.job);
                return;
            }
        };
        if self.sink.commit(&line, &entry).is_err() {
            // Nobody reads our output any more: stop the rest.
            self.summary.broken = true;
            self.queue.cancel_all();
        }
    }

    /// Whether every input read has had its turn, once the reading ended.
    fn is_over(&self) -> bool {
        self.total
            .is_some_and(|total| self.summary.ended >= total.min(self.read))
    }
}

/// Now, as Unix time.
fn since_unix_epoch() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Whether a failure may go away when the job runs again: a crash, a non-zero exit, a timeout
/// or a launcher's failure may; a cancel, a processor that cannot start, a resource limit, bad
/// output and an input the processor called invalid will not.
fn worth_retrying(error: &JobError) -> bool {
    let invalid_input = error
        .reported
        .as_ref()
        .and_then(|r| r.kind.as_deref())
        .is_some_and(|kind| kind == "invalid_input");
    !invalid_input
        && matches!(
            error.kind,
            FailureKind::Failed
                | FailureKind::Killed
                | FailureKind::TimedOut
                | FailureKind::LaunchFailed
        )
}
