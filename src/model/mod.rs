//! The job model for widgets (feature `model`: gio, no GTK): a [`JobList`] is a
//! `gio::ListModel` of [`JobObject`]s, one per job of a queue in submission order, whose
//! GObject properties a `GtkColumnView` or `GtkListView` binds to; the list's own properties
//! are the counts and the overall progress, for a `GtkProgressBar` or a label.
//!
//! The list is fed by the queue's events, so it changes only from the queue's dispatch on the
//! main context, never inside a call the caller made. [`BatchList`] is the same for one
//! [`Batch`](crate::Batch)'s jobs ([`Batch::rows`](crate::Batch::rows)), with the batch's own
//! counts and fraction.
//!
//! ```no_run
//! use offload::model::JobList;
//! use offload::{Job, Processor, Queue};
//!
//! let queue = Queue::new();
//! let jobs = JobList::new(&queue);
//! // column_view.set_model(Some(&gtk::NoSelection::new(Some(jobs.clone()))));
//! // jobs.bind_property("fraction", &progress_bar, "fraction").build();
//! jobs.connect_running_notify(|jobs| println!("{} running", jobs.running()));
//! let job = Job::new(Processor::find("diag")?);
//! queue.submit::<_, ciborium::Value>(&job, &serde_json::json!({"echo": 1}))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use gio::prelude::*;
use gio::subclass::prelude::*;
use glib::Properties;

mod batch_list;
mod rows;

pub use batch_list::BatchList;

use crate::outcome::{JobError, RunStats, WorkerRun};
use crate::queue::{ObserverId, Queue, QueueEvent};
use crate::{Counts, JobId, JobState};

mod job_imp {
    use super::*;

    #[derive(Default, Properties)]
    #[properties(wrapper_type = super::JobObject)]
    pub struct JobObject {
        /// The job's id (`JobId.0`).
        #[property(get)]
        pub id: Cell<u64>,
        /// Its processor's name.
        #[property(get)]
        pub processor: RefCell<String>,
        /// Where the job is: a [`JobState`] (a GObject enum, `OffloadJobState`).
        #[property(get, builder(JobState::Queued))]
        pub state: Cell<JobState>,
        /// From 0.0 to 1.0: the processor's last report; 1.0 once succeeded.
        #[property(get, minimum = 0.0, maximum = 1.0)]
        pub progress: Cell<f64>,
        /// The processor's last progress message.
        #[property(get)]
        pub message: RefCell<String>,
        /// Wall time once ended, in milliseconds.
        #[property(get)]
        pub elapsed_ms: Cell<f64>,
        /// Peak resident memory once ended, in bytes (0: unknown).
        #[property(get)]
        pub peak_rss: Cell<u64>,
        /// The failure's kind ("timed_out", ...); empty unless failed or cancelled.
        #[property(get)]
        pub failure_kind: RefCell<String>,
        /// The failure's message; empty unless failed or cancelled.
        #[property(get)]
        pub reason: RefCell<String>,
        /// Which persistent worker runs or ran it ("worker 3 · job 17"); empty for a process of
        /// its own.
        #[property(get)]
        pub worker: RefCell<String>,
        /// Where a launcher ran it (a Slurm node, an ssh host); empty on this machine.
        #[property(get)]
        pub host: RefCell<String>,
        /// Its processor's process id once started (a worker's), else 0.
        #[property(get)]
        pub pid: Cell<u32>,
        /// What the job is about, for people: a file's name, a line of a file. Empty unless
        /// the app that submitted it says (`JobObject::set_label`).
        #[property(get)]
        pub label: RefCell<String>,
        /// The file its result became, when the app wrote one (`JobObject::set_output`);
        /// empty otherwise.
        #[property(get)]
        pub output: RefCell<String>,
        pub error: RefCell<Option<JobError>>,
        /// When it started running, for the live elapsed time.
        pub started: Cell<Option<std::time::Instant>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for JobObject {
        const NAME: &'static str = "OffloadModelJob";
        type Type = super::JobObject;
    }

    #[glib::derived_properties]
    impl ObjectImpl for JobObject {}
}

glib::wrapper! {
    /// One job as widgets show it; its properties change as the job goes.
    pub struct JobObject(ObjectSubclass<job_imp::JobObject>);
}

impl JobObject {
    fn new(id: JobId, processor: &str) -> Self {
        let object: Self = glib::Object::new();
        let imp = object.imp();
        imp.id.set(id.0);
        imp.processor.replace(processor.to_owned());
        object
    }

    /// The job's id.
    pub fn job_id(&self) -> JobId {
        JobId(self.id())
    }

    /// Whether the job has ended, one way or another.
    pub fn is_finished(&self) -> bool {
        self.state().is_finished()
    }

    /// The failure, once the job failed or was cancelled.
    pub fn error(&self) -> Option<JobError> {
        self.imp().error.borrow().clone()
    }

    /// Says what the job is about, for a list to show (a file's name, "line 3"): the queue
    /// knows only the processor, the app that submitted the job knows what it is for.
    pub fn set_label(&self, label: &str) {
        self.set_text(&self.imp().label, label, "label");
    }

    /// Says which file the job's result became (the app writes it): a list can preview it.
    pub fn set_output(&self, path: &std::path::Path) {
        self.set_text(&self.imp().output, &path.to_string_lossy(), "output");
    }

    fn set_text(&self, field: &RefCell<String>, value: &str, name: &str) {
        if field.borrow().as_str() != value {
            field.replace(value.to_owned());
            self.notify(name);
        }
    }

    fn set_state(&self, value: JobState) {
        if self.imp().state.replace(value) != value {
            self.notify_state();
        }
    }

    fn set_progress(&self, value: f64) {
        let value = value.clamp(0.0, 1.0);
        if self.imp().progress.get() != value {
            self.imp().progress.set(value);
            self.notify_progress();
        }
    }

    /// A progress report: its fraction, and its message when it has one.
    fn progressed(&self, fraction: f64, message: Option<&str>) {
        self.set_progress(fraction);
        if let Some(message) = message {
            self.set_text(&self.imp().message, message, "message");
        }
    }

    fn started(&self, pid: u32, worker: Option<WorkerRun>) {
        let _guard = self.freeze_notify();
        self.imp().started.set(Some(std::time::Instant::now()));
        self.set_state(JobState::Running);
        self.imp().pid.set(pid);
        self.notify_pid();
        self.set_text(&self.imp().worker, &worker_label(worker), "worker");
    }

    /// A job that succeeded failed after all: what its caller did with the result failed.
    fn failed_after(&self, error: &JobError) {
        let _guard = self.freeze_notify();
        let imp = self.imp();
        self.set_text(&imp.failure_kind, error.kind.as_str(), "failure-kind");
        self.set_text(&imp.reason, &reason(error), "reason");
        imp.error.replace(Some(error.clone()));
        self.set_state(JobState::ended(Some(error)));
    }

    fn finished(&self, error: Option<&JobError>, stats: &RunStats) {
        let _guard = self.freeze_notify();
        let imp = self.imp();
        let new = JobState::ended(error);
        if error.is_none() {
            self.set_progress(1.0);
        }
        imp.elapsed_ms.set(stats.wall.as_secs_f64() * 1e3);
        self.notify_elapsed_ms();
        imp.peak_rss.set(stats.peak_rss_bytes);
        self.notify_peak_rss();
        if stats.worker.is_some() {
            self.set_text(&imp.worker, &worker_label(stats.worker), "worker");
        }
        self.set_text(&imp.host, stats.host.as_deref().unwrap_or(""), "host");
        self.set_text(
            &imp.failure_kind,
            error.map_or("", |e| e.kind.as_str()),
            "failure-kind",
        );
        self.set_text(&imp.reason, &error.map_or(String::new(), reason), "reason");
        imp.error.replace(error.cloned());
        self.set_state(new);
    }
}

/// A failure's message, and the processor's own kind when it reported one ("bad header
/// (invalid_input)"), apart from offload's kind (the `failure-kind` property).
fn reason(error: &JobError) -> String {
    match error.reported.as_ref().and_then(|r| r.kind.as_ref()) {
        Some(kind) => format!("{} ({kind})", error.message),
        None => error.message.clone(),
    }
}

/// "worker 3 · job 17", "worker 3 · job 1 (started)", or "" for a process of its own.
pub fn worker_label(run: Option<WorkerRun>) -> String {
    match run {
        Some(run) if run.is_cold() => format!("worker {} · job {} (started)", run.worker, run.job),
        Some(run) => format!("worker {} · job {}", run.worker, run.job),
        None => String::new(),
    }
}

mod list_imp {
    use super::*;

    #[derive(Default, Properties)]
    #[properties(wrapper_type = super::JobList)]
    pub struct JobList {
        pub(in crate::model) rows: super::rows::Rows,
        /// Rows of running jobs, for [`JobList::refresh_elapsed`](super::JobList::refresh_elapsed).
        pub running_rows: RefCell<HashMap<u64, super::JobObject>>,
        pub observer: Cell<Option<ObserverId>>,
        pub queue: RefCell<Option<Queue>>,
        /// The rows by state: the list's `queued`, `running`, `succeeded`, `failed`,
        /// `cancelled` and `total` properties (`total`: every row).
        #[property(name = "queued", get = |l: &Self| count(l.counts.get().queued), type = u32)]
        #[property(name = "running", get = |l: &Self| count(l.counts.get().running), type = u32)]
        #[property(name = "succeeded", get = |l: &Self| count(l.counts.get().succeeded), type = u32)]
        #[property(name = "failed", get = |l: &Self| count(l.counts.get().failed), type = u32)]
        #[property(name = "cancelled", get = |l: &Self| count(l.counts.get().cancelled), type = u32)]
        #[property(name = "total", get = |l: &Self| count(l.counts.get().total()), type = u32)]
        pub counts: Cell<Counts>,
        /// Overall progress from 0.0 to 1.0: ended jobs whole, running ones by their progress.
        #[property(get, minimum = 0.0, maximum = 1.0)]
        pub fraction: Cell<f64>,
        /// Sum of the listed running jobs' progress, for `fraction`.
        pub running_progress: Cell<f64>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for JobList {
        const NAME: &'static str = "OffloadModelJobList";
        type Type = super::JobList;
        type Interfaces = (gio::ListModel,);
    }

    #[glib::derived_properties]
    impl ObjectImpl for JobList {
        fn dispose(&self) {
            if let (Some(queue), Some(id)) = (self.queue.take(), self.observer.take()) {
                queue.disconnect(id);
            }
        }
    }

    impl ListModelImpl for JobList {
        fn item_type(&self) -> glib::Type {
            super::JobObject::static_type()
        }

        fn n_items(&self) -> u32 {
            self.rows.n_items()
        }

        fn item(&self, position: u32) -> Option<glib::Object> {
            self.rows.item(position)
        }
    }
}

glib::wrapper! {
    /// Every job of a queue, in submission order, as a `gio::ListModel` of [`JobObject`]s;
    /// its properties are the counts of its rows by state and the overall progress.
    pub struct JobList(ObjectSubclass<list_imp::JobList>)
        @implements gio::ListModel;
}

impl JobList {
    /// A list of `queue`'s jobs from now on, kept up to date by its events.
    pub fn new(queue: &Queue) -> Self {
        let list: Self = glib::Object::new();
        let weak = list.downgrade();
        let observer = queue.connect_events(move |event| {
            if let Some(list) = weak.upgrade() {
                list.on_event(event);
            }
        });
        list.imp().observer.set(Some(observer));
        list.imp().queue.replace(Some(queue.clone()));
        list
    }

    /// The row of job `id`, once the queue has told of it (it may join the list itself a
    /// moment later: rows are appended in groups).
    pub fn job(&self, id: JobId) -> Option<JobObject> {
        self.imp().rows.get(id)
    }

    /// Removes the rows of ended jobs; the counts are of the rows left.
    pub fn clear_finished(&self) {
        self.remove_where(JobObject::is_finished);
    }

    /// Removes the rows of these jobs if they have ended (a running or queued job keeps its
    /// row); the counts are of the rows left.
    pub fn remove_finished(&self, ids: &[JobId]) {
        let ids: std::collections::HashSet<u64> = ids.iter().map(|id| id.0).collect();
        self.remove_where(|job| job.is_finished() && ids.contains(&job.id()));
    }

    /// Marks job `id`, which succeeded, as failed with `error` after all: for what the caller
    /// does with a result and can fail, such as writing the output file it was to become
    /// ([`FailureKind::OutputNotWritten`](crate::FailureKind::OutputNotWritten)). The row shows `failed` with the error's kind and
    /// message, and the counts move with it. A job that has not succeeded (still running,
    /// already failed, no row) is left as it is; gives whether the row changed.
    pub fn fail(&self, id: JobId, error: JobError) -> bool {
        self.flush_pending();
        let Some(job) = self.job(id) else {
            return false;
        };
        if job.state() != JobState::Succeeded {
            return false;
        }
        let _guard = self.freeze_notify();
        self.change_counts(|counts| {
            counts.moved(JobState::Succeeded, JobState::ended(Some(&error)));
        });
        job.failed_after(&error);
        self.update_fraction();
        true
    }

    /// Sets the `elapsed-ms` of running jobs to the time since they started: call it from a
    /// timer for a live column (only running rows are touched).
    pub fn refresh_elapsed(&self) {
        for job in self.imp().running_rows.borrow().values() {
            if let Some(started) = job.imp().started.get() {
                job.imp()
                    .elapsed_ms
                    .set(started.elapsed().as_secs_f64() * 1e3);
                job.notify_elapsed_ms();
            }
        }
    }

    fn remove_where(&self, remove: impl Fn(&JobObject) -> bool) {
        self.flush_pending();
        let imp = self.imp();
        let (before, removed) = {
            let mut items = imp.rows.items.borrow_mut();
            let before = items.len();
            let mut removed = Vec::new();
            items.retain(|item| {
                let gone = remove(item);
                if gone {
                    removed.push(item.clone());
                }
                !gone
            });
            (before, removed)
        };
        if removed.is_empty() {
            return;
        }
        let _guard = self.freeze_notify();
        {
            let mut by_id = imp.rows.by_id.borrow_mut();
            for job in &removed {
                by_id.remove(&job.id());
            }
        }
        self.change_counts(|counts| {
            for job in &removed {
                counts.remove(job.state());
            }
        });
        self.update_fraction();
        // One change for the whole list: simpler for views than one per removed run.
        let now = imp.rows.n_items();
        self.items_changed(0, count(before), now);
    }

    /// Appends the pending rows, with one `items-changed`.
    fn flush_pending(&self) {
        if let Some((position, added)) = self.imp().rows.flush() {
            self.items_changed(position, 0, added);
        }
    }

    fn on_event(&self, event: &QueueEvent) {
        let imp = self.imp();
        if !matches!(event, QueueEvent::Queued { .. }) {
            // A row changes state only once it is listed: views and the counts agree.
            self.flush_pending();
        }
        match event {
            QueueEvent::Queued { id, processor } => {
                // After this dispatch: every row it tells of joins the list at once.
                imp.rows
                    .add(JobObject::new(*id, processor), self, Self::flush_pending);
                let _guard = self.freeze_notify();
                self.change_counts(|counts| counts.add(JobState::Queued));
                self.update_fraction();
            }
            QueueEvent::Started { id, pid, worker } => {
                let Some(job) = self.job(*id) else { return };
                let _guard = self.freeze_notify();
                let before = job.state();
                self.change_counts(|counts| counts.moved(before, JobState::Running));
                job.started(*pid, *worker);
                imp.running_rows.borrow_mut().insert(id.0, job);
            }
            QueueEvent::Progress {
                id,
                fraction,
                message,
            } => {
                let Some(job) = self.job(*id) else { return };
                let before = job.progress();
                job.progressed(*fraction, message.as_deref());
                imp.running_progress
                    .set(imp.running_progress.get() + job.progress() - before);
                self.update_fraction();
            }
            QueueEvent::Finished { id, error, stats } => {
                let Some(job) = self.job(*id) else { return };
                let _guard = self.freeze_notify();
                imp.running_rows.borrow_mut().remove(&id.0);
                let before = job.state();
                if before == JobState::Running {
                    imp.running_progress
                        .set((imp.running_progress.get() - job.progress()).max(0.0));
                }
                self.change_counts(|counts| {
                    counts.moved(before, JobState::ended(error.as_ref()));
                });
                job.finished(error.as_ref(), stats);
                self.update_fraction();
            }
        }
    }

    /// The rows by state, as the list's count properties give them one by one.
    pub fn counts(&self) -> Counts {
        self.imp().counts.get()
    }

    /// Changes the counts and tells of each count property that changed.
    fn change_counts(&self, change: impl FnOnce(&mut Counts)) {
        let before = self.imp().counts.get();
        let mut after = before;
        change(&mut after);
        self.imp().counts.set(after);
        notify_counts(self.upcast_ref(), before, after);
    }

    fn update_fraction(&self) {
        let imp = self.imp();
        let counts = imp.counts.get();
        let fraction = if counts.total() == 0 {
            0.0
        } else {
            ((counts.ended() as f64 + imp.running_progress.get()) / counts.total() as f64)
                .clamp(0.0, 1.0)
        };
        if imp.fraction.get() != fraction {
            imp.fraction.set(fraction);
            self.notify_fraction();
        }
    }
}

/// A count as a `u32` property gives it.
pub(crate) fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Tells of the count properties (`queued`, ..., `total`) of `object` that differ between
/// `before` and `after`.
pub(crate) fn notify_counts(object: &glib::Object, before: Counts, after: Counts) {
    for state in JobState::ALL {
        if before.get(state) != after.get(state) {
            object.notify(state.as_str());
        }
    }
    if before.total() != after.total() {
        object.notify("total");
    }
}
