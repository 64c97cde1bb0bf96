//! Persistent mode on the processor's side (PROTOCOL.md, section 18): one process serves job
//! after job, with the same function and the same exit codes as one-shot mode.
//!
//! The loop reads `job` frames from stdin, calls the processor's function, and answers with a
//! `result` or `error` frame. An error leaves the worker serving; a panic is answered with an
//! error frame and then ends the process (exit 70), since the function's state may be broken;
//! a cancelled function (SIGTERM) ends it with 143, as in one-shot mode.
//!
//! Stray prints: frames go to a private duplicate of the original stdout, and descriptor 1 is
//! pointed at stderr before the function ever runs, so a `println!` in the function, in a
//! library, or in a child process lands in stderr (the host keeps its tail) instead of
//! breaking the frame stream.

use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;
use std::os::fd::FromRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::Context;
use crate::decode::DecodeLimits;
use crate::error::{Error, ErrorKind, EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_FAILED, EXIT_PANIC};
use crate::frame::{self, Frame};
use crate::protocol::PROTOCOL_VERSION;
use crate::sequence::SequenceBuffer;

/// Room for a request frame's own fields around its input.
const FRAME_OVERHEAD: usize = 1024;

/// The frame stream to the host, shared by the loop and every job's [`Context`].
pub(crate) struct FrameWriter {
    out: Mutex<File>,
}

impl FrameWriter {
    /// Takes the process's stdout for frames and points descriptor 1 at stderr.
    fn take_stdout() -> io::Result<Self> {
        std::io::stdout().flush()?;
        // SAFETY: F_DUPFD_CLOEXEC and dup2 on the standard descriptors; the duplicate is new
        // and owned by nothing else, so it may become a File.
        unsafe {
            let private = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
            if private == -1 {
                return Err(io::Error::last_os_error());
            }
            if libc::dup2(2, 1) == -1 {
                let err = io::Error::last_os_error();
                libc::close(private);
                return Err(err);
            }
            Ok(Self {
                out: Mutex::new(File::from_raw_fd(private)),
            })
        }
    }

    /// Writes one whole frame. Frames from several threads never interleave.
    pub(crate) fn write(&self, bytes: &[u8]) -> io::Result<()> {
        // A panic while writing leaves at worst a torn frame, which the host detects.
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.write_all(bytes)
    }
}

/// What the processor's runtime hands the loop.
pub(crate) struct Worker<'a> {
    pub executable: &'a str,
    pub name: &'a str,
    pub version: Option<&'a str>,
    pub limits: DecodeLimits,
    /// Declared parameters, checked in every input.
    pub parameters: &'a [crate::params::Parameter],
}

/// Serves jobs until stdin ends; returns the exit code.
pub(crate) fn serve<I, O, F>(worker: &Worker<'_>, mut work: F) -> ExitCode
where
    I: DeserializeOwned,
    O: Serialize,
    F: FnMut(I, &mut Context) -> Result<O, Error>,
{
    let exe = worker.executable;
    let say = |message: &str| eprintln!("{exe}: {message}");
    let writer = match FrameWriter::take_stdout() {
        Ok(writer) => Arc::new(writer),
        Err(err) => {
            say(&format!("persistent mode: cannot set up stdout: {err}"));
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let frame_limits = DecodeLimits {
        max_bytes: worker.limits.max_bytes.saturating_add(FRAME_OVERHEAD),
        max_depth: worker.limits.max_depth.saturating_add(1),
    };
    let mut frames = FrameReader {
        buffer: SequenceBuffer::new(frame_limits),
        stdin: std::io::stdin().lock(),
    };

    // The host speaks first; we answer once ready.
    match frames.next() {
        Ok(Some(range)) => {
            let hello = Frame::parse(frames.get(range))
                .ok()
                .filter(|f| f.kind() == frame::HELLO);
            let Some(hello) = hello else {
                say("persistent mode: the host's first frame is not a hello");
                return ExitCode::from(EXIT_BAD_INPUT);
            };
            // The host says the highest version it speaks; this worker speaks 2 (18.4).
            let host = hello
                .field::<u64>("protocol", DecodeLimits::default())
                .ok()
                .flatten();
            if host.is_none_or(|v| v < u64::from(PROTOCOL_VERSION)) {
                say(&format!(
                    "persistent mode: the host speaks protocol {}, this worker {PROTOCOL_VERSION}",
                    host.map_or("(none said)".to_owned(), |v| v.to_string())
                ));
                return ExitCode::from(EXIT_BAD_INPUT);
            }
        }
        Ok(None) => return ExitCode::SUCCESS,
        Err(message) => {
            say(&format!("persistent mode: {message}"));
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    }
    let hello = frame::hello(PROTOCOL_VERSION, Some(worker.name), worker.version);
    if writer.write(&hello).is_err() {
        return ExitCode::from(EXIT_FAILED);
    }

    loop {
        let range = match frames.next() {
            Ok(Some(range)) => range,
            // End of stdin between frames: the host is done with this worker.
            Ok(None) => return ExitCode::SUCCESS,
            Err(message) => {
                say(&format!("persistent mode: {message}"));
                return ExitCode::from(EXIT_BAD_INPUT);
            }
        };
        let request = match Frame::parse(frames.get(range)) {
            Ok(request) => request,
            Err(message) => {
                say(&format!("persistent mode: a malformed frame: {message}"));
                return ExitCode::from(EXIT_BAD_INPUT);
            }
        };
        if request.kind() != frame::JOB {
            // Frames of types this version does not know are for later versions: skip them.
            continue;
        }
        let (id, input) = match (request.id(), request.field_bytes("input")) {
            (Ok(Some(id)), Some(input)) => (id, input),
            _ => {
                say("persistent mode: a job frame without an id or an input");
                return ExitCode::from(EXIT_BAD_INPUT);
            }
        };
        let answer = |frame: &[u8]| writer.write(frame).is_ok();
        let input: I = match crate::processor::decode_input(input, worker.limits, worker.parameters)
        {
            Ok(input) => input,
            Err(message) => {
                say(&message);
                if answer(&frame::error(
                    id,
                    &message,
                    ErrorKind::InvalidInput.as_str(),
                )) {
                    continue;
                }
                return ExitCode::from(EXIT_FAILED);
            }
        };
        crate::context::unwatch();
        let mut ctx = Context::for_job(id, writer.clone());
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| work(input, &mut ctx)));
        drop(ctx);
        let (reply, exit) = match outcome {
            Ok(Ok(output)) => match frame::result(id, &output) {
                Ok(reply) => (reply, None),
                Err(message) => {
                    say(&message);
                    (frame::error(id, &message, ErrorKind::Failed.as_str()), None)
                }
            },
            Ok(Err(err)) => {
                let message = err.to_string();
                say(&message);
                let exit = (err.kind() == ErrorKind::Cancelled).then_some(EXIT_CANCELLED);
                (frame::error(id, &message, err.kind().as_str()), exit)
            }
            Err(_) => {
                // The panic hook has already said what happened on stderr.
                let message = format!("internal error: {}", crate::processor::last_panic());
                (
                    frame::error(id, &message, ErrorKind::Failed.as_str()),
                    Some(EXIT_PANIC),
                )
            }
        };
        if !answer(&reply) {
            // The host is gone.
            return ExitCode::from(EXIT_FAILED);
        }
        if let Some(code) = exit {
            return ExitCode::from(code);
        }
        if crate::context::cancel_requested() {
            // SIGTERM came while the job watched for it, and the job finished anyway: the host
            // is stopping this worker.
            return ExitCode::from(EXIT_CANCELLED);
        }
    }
}

/// Frames read from stdin, one complete item at a time.
struct FrameReader<R> {
    buffer: SequenceBuffer,
    stdin: R,
}

impl<R: io::Read> FrameReader<R> {
    /// Where the next frame lies (see [`FrameReader::get`]); `Ok(None)` at end of input
    /// between frames.
    fn next(&mut self) -> Result<Option<Range<usize>>, String> {
        loop {
            match self.buffer.next_range() {
                Ok(Some(range)) => return Ok(Some(range)),
                Ok(None) => {}
                Err(err) => return Err(format!("the frame stream broke: {err}")),
            }
            match self.buffer.read_from(&mut self.stdin, 64 * 1024) {
                Ok(0) if self.buffer.is_empty() => return Ok(None),
                Ok(0) => {
                    return Err(format!(
                        "stdin ended inside a frame ({} bytes of it arrived)",
                        self.buffer.pending()
                    ))
                }
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(format!("cannot read stdin: {err}")),
            }
        }
    }

    /// The bytes of the frame at `range`, until the next call to [`FrameReader::next`].
    fn get(&self, range: Range<usize>) -> &[u8] {
        self.buffer.get(range)
    }
}
