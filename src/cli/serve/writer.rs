//! `offload serve`'s stdout, written on a thread of its own: the main context hands events
//! over a channel and never waits for a client that reads slowly.

use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::events::Event;

/// The writer thread's end on the main context.
pub struct Writer {
    events: mpsc::Sender<Event>,
    thread: JoinHandle<()>,
}

impl Writer {
    /// Starts the thread on a duplicate of stdout; `gone` is called (on that thread) once
    /// stdout cannot be written any more: the client is gone.
    pub fn start(gone: impl FnOnce() + Send + 'static) -> io::Result<Self> {
        let stdout = std::fs::File::from(io::stdout().as_fd().try_clone_to_owned()?);
        let (events, received) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("offload-serve-out".into())
            .spawn(move || write_events(stdout, &received, gone))?;
        Ok(Self { events, thread })
    }

    /// Queues `event` to be written. Never blocks.
    pub fn send(&self, event: Event) {
        // The thread ends early only when stdout is gone, where events have nowhere to go.
        let _ = self.events.send(event);
    }

    /// Writes what is queued, then returns.
    pub fn finish(self) {
        drop(self.events);
        let _ = self.thread.join();
    }
}

fn write_events(stdout: std::fs::File, events: &mpsc::Receiver<Event>, gone: impl FnOnce()) {
    // Large results bypass the buffer; small events are gathered and flushed when no more wait.
    let mut out = BufWriter::with_capacity(64 * 1024, stdout);
    while let Ok(event) = events.recv() {
        let mut written = event.write_to(&mut out);
        drop(event);
        while written.is_ok() {
            match events.try_recv() {
                Ok(event) => written = event.write_to(&mut out),
                Err(_) => break,
            }
        }
        if let Err(err) = written.and_then(|()| out.flush()) {
            return stop(err, gone);
        }
    }
}

fn stop(err: io::Error, gone: impl FnOnce()) {
    if err.kind() != io::ErrorKind::BrokenPipe {
        eprintln!("offload serve: cannot write to stdout: {err}");
    }
    gone();
}
