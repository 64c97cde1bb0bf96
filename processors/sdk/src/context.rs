//! What a processor function gets besides its input: progress reporting and cancellation.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::persistent::FrameWriter;
use crate::protocol::{ProgressItem, PROGRESS_FD_ENV};

/// In persistent mode, progress shares the pipe with results: at most one item per this long.
const FRAME_PROGRESS_INTERVAL: Duration = Duration::from_millis(20);

/// Set once the function has asked about cancellation: from then on SIGTERM only raises a flag.
static WATCHING: AtomicBool = AtomicBool::new(false);
/// Raised by SIGTERM while [`WATCHING`] is set.
static CANCELLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_: libc::c_int) {
    if WATCHING.load(Ordering::SeqCst) {
        CANCELLED.store(true, Ordering::SeqCst);
    } else {
        // Nobody polls for cancellation: die by SIGTERM exactly as without a handler.
        // SAFETY: signal() and raise() are async-signal-safe.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            libc::raise(libc::SIGTERM);
        }
    }
}

/// Starts a job of a persistent worker: SIGTERM kills at once again until this job asks about
/// cancellation (a job that never polls must not outlive the grace period because an earlier
/// one did).
pub(crate) fn unwatch() {
    WATCHING.store(false, Ordering::SeqCst);
}

/// Whether SIGTERM arrived while a job watched for it.
pub(crate) fn cancel_requested() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}

/// Installs the SIGTERM handler. A processor that never checks for cancellation still dies at
/// once on SIGTERM; one that does gets the chance to stop cleanly.
pub(crate) fn install_cancel_handler() {
    // SAFETY: the handler only touches atomics and calls async-signal-safe functions.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
    }
}

/// Handed to a processor function: reports progress and tells whether the host wants it to stop.
///
/// ```no_run
/// # use offload_sdk::{Context, Error};
/// fn work(rows: u32, ctx: &mut Context) -> Result<u32, Error> {
///     for row in 0..rows {
///         ctx.check_cancelled()?;
///         ctx.progress(f64::from(row) / f64::from(rows));
///     }
///     Ok(rows)
/// }
/// ```
pub struct Context {
    progress: Sink,
}

/// Where progress goes.
enum Sink {
    Nowhere,
    /// The descriptor named by `OFFLOAD_PROGRESS_FD` (one job per process).
    Fd(File),
    /// `progress` frames for job `id` (persistent mode).
    Frames {
        id: u64,
        writer: Arc<FrameWriter>,
        last: Option<Instant>,
    },
}

impl Context {
    /// A context that writes progress to the fd named by `OFFLOAD_PROGRESS_FD`, if any.
    pub(crate) fn from_env() -> Self {
        Self {
            progress: progress_file_from_env().map_or(Sink::Nowhere, Sink::Fd),
        }
    }

    /// A context for job `id` of a persistent worker: progress goes out as frames.
    pub(crate) fn for_job(id: u64, writer: Arc<FrameWriter>) -> Self {
        Self {
            progress: Sink::Frames {
                id,
                writer,
                last: None,
            },
        }
    }

    /// A context that reports nowhere, for calling a processor function from Rust tests.
    pub fn detached() -> Self {
        Self {
            progress: Sink::Nowhere,
        }
    }

    /// Whether progress goes anywhere (the host gave a progress fd, or this is a persistent
    /// worker).
    pub fn reports_progress(&self) -> bool {
        !matches!(self.progress, Sink::Nowhere)
    }

    /// Reports how much of the job is done, from 0.0 to 1.0.
    pub fn progress(&mut self, fraction: f64) {
        self.send(ProgressItem {
            fraction: fraction.clamp(0.0, 1.0),
            message: None,
        });
    }

    /// Reports progress with a short message for people.
    pub fn progress_message(&mut self, fraction: f64, message: impl Into<String>) {
        self.send(ProgressItem {
            fraction: fraction.clamp(0.0, 1.0),
            message: Some(message.into()),
        });
    }

    fn send(&mut self, item: ProgressItem) {
        let sent = match &mut self.progress {
            Sink::Nowhere => return,
            Sink::Fd(file) => {
                let mut bytes = Vec::with_capacity(32);
                ciborium::into_writer(&item, &mut bytes).is_ok() && file.write_all(&bytes).is_ok()
            }
            Sink::Frames { id, writer, last } => {
                let now = Instant::now();
                if last.is_some_and(|t| now < t + FRAME_PROGRESS_INTERVAL) {
                    return;
                }
                *last = Some(now);
                writer.write(&crate::frame::progress(*id, &item)).is_ok()
            }
        };
        if !sent {
            // The host stopped listening; progress is optional, the work is not.
            self.progress = Sink::Nowhere;
        }
    }

    /// Whether the host has asked the processor to stop (SIGTERM arrived).
    pub fn is_cancelled(&self) -> bool {
        WATCHING.store(true, Ordering::SeqCst);
        CANCELLED.load(Ordering::SeqCst)
    }

    /// `Err(Error::cancelled())` once the host has asked the processor to stop.
    pub fn check_cancelled(&self) -> Result<(), Error> {
        if self.is_cancelled() {
            Err(Error::cancelled())
        } else {
            Ok(())
        }
    }
}

fn progress_file_from_env() -> Option<File> {
    use std::os::fd::FromRawFd;
    let fd: libc::c_int = std::env::var(PROGRESS_FD_ENV).ok()?.trim().parse().ok()?;
    if fd <= 2 {
        return None;
    }
    // SAFETY: F_GETFD only inspects the descriptor table; a closed fd gives -1.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return None;
    }
    // SAFETY: the host passed this fd to us for progress and nothing else in the process owns it.
    Some(unsafe { File::from_raw_fd(fd) })
}
