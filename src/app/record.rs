//! What the app keeps of a job besides its row (the row is the library's
//! [`crate::model::JobObject`]): what it is for, its input, its output, and how it ran, for the
//! inspector and the retry action.

use std::rc::Rc;
use std::sync::Arc;

use crate::mosaic::Tile;
use crate::{JobError, Processor, RunStats};

/// What a job is for, so that a retry can do the same with its result.
#[derive(Debug, Clone)]
pub enum JobKind {
    /// A tile of the Mandelbrot demo.
    Tile(Tile),
    /// A job added by the user; its result is kept for the inspector. `label` says which
    /// ("input 3").
    Batch { label: String },
    /// A job on a file: its output is written to a file, and the result is not kept (a retry
    /// reads the file again).
    File {
        path: std::path::PathBuf,
        jobs: Arc<crate::files::FileJobs>,
    },
}

/// What a finished job produced, for the inspector.
#[derive(Debug, Clone)]
pub enum JobOutput {
    /// A demo tile, already a texture.
    Tile(gtk::gdk::Texture),
    /// Any other processor's result, decoded off the main thread.
    Value(Rc<ciborium::Value>),
    /// The file a job on a file wrote.
    File(std::path::PathBuf),
}

/// The parts of a job that are not shown in columns.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub processor: Processor,
    pub kind: JobKind,
    /// The input as the CBOR item sent, shared with the queue (kept once, however large):
    /// retries send it again, the inspector decodes it off the main thread to show it. Empty
    /// for a job on a file, which is read again when needed.
    pub input: Arc<Vec<u8>>,
    pub output: Option<JobOutput>,
    pub error: Option<JobError>,
    pub stats: RunStats,
    pub started_at: Option<std::time::Instant>,
    /// The batch it belongs to (each action's jobs are one).
    pub batch: Option<std::rc::Rc<crate::app::batch::AppBatch>>,
}

impl JobRecord {
    /// What the job is about, for its row: a file's name, a tile, an input's number.
    pub fn label(&self) -> String {
        match &self.kind {
            JobKind::Tile(tile) => format!("tile at {}, {}", tile.x, tile.y),
            JobKind::Batch { label } => label.clone(),
            JobKind::File { path, .. } => path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into(),
            ),
        }
    }
}
