//! One row of the job list: a GObject whose properties the columns bind to, and the Rust-side
//! record the inspector and the retry action read.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use gtk::glib;
use gtk::prelude::*;
use gtk::subclass::prelude::*;

use crate::mosaic::Tile;
use crate::{JobError, JobId, Processor, RunStats, WorkerRun};

/// What a job is for, so that a retry can do the same with its result.
#[derive(Debug, Clone)]
pub enum JobKind {
    /// A tile of the Mandelbrot demo.
    Tile(Tile),
    /// A job added by the user; its result is kept for the inspector.
    Batch,
}

/// What a finished job produced, for the inspector.
#[derive(Debug, Clone)]
pub enum JobOutput {
    /// A demo tile, already a texture.
    Tile(gtk::gdk::Texture),
    /// Any other processor's result, decoded off the main thread.
    Value(Rc<ciborium::Value>),
}

/// The parts of a job that are not shown in columns.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub processor: Processor,
    pub kind: JobKind,
    /// The input as the CBOR item sent, shared with the queue (kept once, however large):
    /// retries send it again, the inspector decodes it off the main thread to show it.
    pub input: Arc<Vec<u8>>,
    pub output: Option<JobOutput>,
    pub error: Option<JobError>,
    pub stats: RunStats,
    pub started_at: Option<std::time::Instant>,
}

/// The states a row shows, as its `state` property.
pub mod state {
    pub const QUEUED: &str = "queued";
    pub const RUNNING: &str = "running";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const CANCELLED: &str = "cancelled";
}

mod imp {
    use super::*;

    #[derive(Default, glib::Properties)]
    #[properties(wrapper_type = super::JobObject)]
    pub struct JobObject {
        #[property(get, set)]
        pub id: std::cell::Cell<u64>,
        #[property(get, set)]
        pub processor: RefCell<String>,
        #[property(get, set)]
        pub state: RefCell<String>,
        #[property(get, set, minimum = 0.0, maximum = 1.0)]
        pub progress: std::cell::Cell<f64>,
        #[property(get, set)]
        pub elapsed_ms: std::cell::Cell<f64>,
        #[property(get, set)]
        pub peak_rss: std::cell::Cell<u64>,
        #[property(get, set)]
        pub reason: RefCell<String>,
        /// Which persistent worker ran it ("worker 3 · job 17"); empty for a process of its own.
        #[property(get, set)]
        pub worker: RefCell<String>,
        pub record: RefCell<Option<JobRecord>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for JobObject {
        const NAME: &'static str = "OffloadJobObject";
        type Type = super::JobObject;
    }

    #[glib::derived_properties]
    impl ObjectImpl for JobObject {}
}

glib::wrapper! {
    /// A job as the list shows it.
    pub struct JobObject(ObjectSubclass<imp::JobObject>);
}

impl JobObject {
    pub fn new(id: JobId, record: JobRecord) -> Self {
        let object: Self = glib::Object::builder()
            .property("id", id.0)
            .property("processor", record.processor.name())
            .property("state", state::QUEUED)
            .build();
        object.imp().record.replace(Some(record));
        object
    }

    pub fn job_id(&self) -> JobId {
        JobId(self.id())
    }

    /// A copy of the record.
    pub fn record(&self) -> Option<JobRecord> {
        self.imp().record.borrow().clone()
    }

    /// Changes the record in place.
    pub fn update_record(&self, change: impl FnOnce(&mut JobRecord)) {
        if let Some(record) = self.imp().record.borrow_mut().as_mut() {
            change(record);
        }
    }

    /// The tile this job renders, if it is a demo job (without copying the whole record).
    pub fn tile(&self) -> Option<Tile> {
        match &self.imp().record.borrow().as_ref()?.kind {
            JobKind::Tile(tile) => Some(tile.clone()),
            JobKind::Batch => None,
        }
    }

    /// When its processor started, if it has.
    pub fn started_at(&self) -> Option<std::time::Instant> {
        self.imp().record.borrow().as_ref()?.started_at
    }

    /// Shows which worker runs the job (`None`: a process of its own).
    pub fn set_worker_run(&self, run: Option<WorkerRun>) {
        self.set_worker(worker_label(run));
    }

    pub fn is_finished(&self) -> bool {
        let state = self.state();
        state != state::QUEUED && state != state::RUNNING
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
