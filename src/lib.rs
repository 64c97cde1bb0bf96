//! offload runs heavy work in separate processor processes while a GLib main loop stays free.
//!
//! A [`Queue`] lives on the main context (in a GTK app, the GTK thread). Each submitted [`Job`]
//! names a [`Processor`], an executable that reads one CBOR input on stdin and writes one CBOR
//! result on stdout (see PROTOCOL.md). The queue starts at most N processors at once, each
//! supervised by its own runner thread, and hands back results through [`JobHandle`]s and
//! progress through [`QueueEvent`]s, on the main context. This crate has no GTK dependency;
//! the app, the CLI and the tests all drive the same engine.
//!
//! ```no_run
//! use offload::{Job, Processor, Queue};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize)]
//! struct Tile { x0: f64, y0: f64, x1: f64, y1: f64, width: u32, height: u32, max_iter: u32 }
//! #[derive(Deserialize)]
//! struct Image { width: u32, height: u32, #[serde(with = "serde_bytes")] rgba: Vec<u8> }
//!
//! let queue = Queue::new();
//! let job = Job::new(Processor::find("mandelbrot")?);
//! let tile = Tile { x0: -2.5, y0: -1.25, x1: 1.0, y1: 1.25, width: 64, height: 64, max_iter: 200 };
//! let handle = queue.submit::<_, Image>(&job, &tile)?;
//! handle.on_finished(|finished| {
//!     if let Ok(image) = finished.result {
//!         println!("{}x{}: {} bytes", image.width, image.height, image.rgba.len());
//!     }
//! });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "gui")]
pub mod app;
pub mod batch;
pub mod files;
pub mod inputs;
pub mod job;
pub mod launcher;
#[cfg(feature = "model")]
pub mod model;
pub mod mosaic;
pub mod outcome;
pub mod output;
pub mod processor;
pub mod queue;
mod runner;
mod spawn;

pub use batch::{Batch, BatchObserverId, BatchResult};
/// The gio of the job model.
#[cfg(feature = "model")]
pub use gio;
/// The GLib this crate is built on, for callers to name its types with the same version.
pub use glib;
pub use job::{Counts, Job, JobId, JobState, Persistence, RunLimits, Sandbox};
pub use launcher::{Launcher, LauncherError, SshHost};
pub use offload_sdk as sdk;
pub use outcome::{
    CborItem, CpuShare, FailureKind, Finished, JobError, MemoryLimitKind, Reported, RunStats,
    WorkerRun,
};
pub use processor::{LookupError, Processor};
pub use queue::{JobHandle, ObserverId, Queue, QueueEvent, SubmitError};
pub use runner::{WorkerSettings, MAX_FAILED_STARTS, MEMORY_LIMIT_ENV};

/// The README's Rust samples, compiled by `cargo test --doc` so they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
