//! A worker's stdout, split into frames and judged against what the host waits for (PROTOCOL.md
//! 18.3 and 18.6): the hello, the running job's answer, harmless frames to ignore, and the
//! frames that break the stream.

use std::collections::VecDeque;
use std::fs::File;
use std::io;

use offload_sdk::decode::{hex_preview, DecodeError, DecodeLimits};
use offload_sdk::frame::{self, Frame};
use offload_sdk::protocol::ProgressItem;
use offload_sdk::sequence::SequenceBuffer;

use super::super::result::{self, Decoder};
use super::super::stop::{Stop, Watch};
use crate::job::RunLimits;
use crate::outcome::Reported;

/// Room for a frame's own fields around its payload.
const FRAME_OVERHEAD: usize = 1024;
/// How many of the last ids sent are remembered, to tell a second answer to one of them.
const REMEMBERED: usize = 1024;

/// What the host waits for.
pub(super) enum Expect {
    /// The worker's `hello`.
    Hello,
    /// The answer to job `id`, whose result `decode` turns into the caller's type.
    Answer {
        id: u64,
        decode: Decoder,
        limits: RunLimits,
    },
    /// Nothing more: the worker is being stopped; frames are ignored until it exits.
    Exit,
}

/// How an exchange with the worker ended.
pub(super) enum Exchange {
    Hello(u64),
    Result(Result<Box<dyn std::any::Any + Send>, String>),
    Error(Reported),
    /// The frame stream is unusable: why.
    Broken(String),
    /// A second answer to a job this worker answered before: the earlier job's fault, not
    /// the running one's. The worker is out of step.
    Stray(u64),
    /// It closed its stdin before the request was all written or read: it cannot have it.
    Refused,
    /// It closed its stdout and lives on: it can answer nothing any more.
    StdoutClosed,
    /// The process exited (it is not reaped yet).
    Exited,
}

/// Frames as they arrive on the worker's stdout.
pub(super) struct Frames {
    buffer: SequenceBuffer,
    /// Stdout ended (the worker closed it, or died).
    pub ended: bool,
    /// A frame declared more than the limit: read no more (the worker is being stopped).
    pub over: bool,
    /// The ids of the last jobs sent.
    sent: VecDeque<u64>,
}

impl Frames {
    pub(super) fn new(limits: &RunLimits) -> Self {
        Self {
            buffer: SequenceBuffer::new(frame_limits(limits)),
            ended: false,
            over: false,
            sent: VecDeque::new(),
        }
    }

    /// A job's frames may be as large as its result limit allows.
    pub(super) fn set_limits(&mut self, limits: &RunLimits) {
        self.buffer.set_limits(frame_limits(limits));
    }

    /// Job `id`'s request is going out.
    pub(super) fn sending(&mut self, id: u64) {
        self.sent.push_back(id);
        if self.sent.len() > REMEMBERED {
            self.sent.pop_front();
        }
    }

    /// Reads what stdout has now (bounded rounds, so that a flood cannot starve the loop); at
    /// its end (or an error, which ends it too) it is closed and `ended` says so.
    pub(super) fn read(&mut self, stdout: &mut Option<File>) {
        let Some(pipe) = stdout.as_mut() else {
            return;
        };
        for _ in 0..16 {
            match self.buffer.read_from(pipe, 64 * 1024) {
                Ok(0) => {
                    *stdout = None;
                    self.ended = true;
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    *stdout = None;
                    self.ended = true;
                    return;
                }
            }
        }
    }

    /// Acts on the complete frames received; gives the first that ends the exchange.
    pub(super) fn take(&mut self, expect: &mut Expect, watch: &mut Watch<'_>) -> Option<Exchange> {
        loop {
            let range = match self.buffer.next_range() {
                Ok(Some(range)) => range,
                Ok(None) => return None,
                Err(DecodeError::TooLarge { .. }) if matches!(expect, Expect::Answer { .. }) => {
                    // Drop what came, read no more, and stop the worker as a one-shot run over
                    // its output limit would be.
                    self.buffer = SequenceBuffer::new(DecodeLimits::default());
                    self.over = true;
                    watch.stop(Stop::OutputTooLarge);
                    return None;
                }
                Err(err) => {
                    let shown = hex_preview(self.buffer.pending_bytes(), 16);
                    return Some(Exchange::Broken(format!(
                        "{err} on stdout, which began with {shown}"
                    )));
                }
            };
            if let Expect::Exit = expect {
                continue;
            }
            let bytes = self.buffer.get(range);
            let frame = match Frame::parse(bytes) {
                Ok(frame) => frame,
                Err(why) => {
                    let shown = hex_preview(bytes, 16);
                    return Some(Exchange::Broken(format!("{why} (it began with {shown})")));
                }
            };
            if let Some(exchange) = judge(&frame, expect, watch, &self.sent) {
                return Some(exchange);
            }
        }
    }

    /// Drops the complete progress frames waiting (progress after a job's answer, or for
    /// another job, is harmless: PROTOCOL.md 18.3); whether nothing else waits.
    pub(super) fn only_late_progress(&mut self) -> bool {
        loop {
            match self.buffer.next_range() {
                Ok(Some(range)) => {
                    let progress = Frame::parse(self.buffer.get(range))
                        .is_ok_and(|frame| frame.kind() == frame::PROGRESS);
                    if !progress {
                        return false;
                    }
                }
                Ok(None) => return self.buffer.is_empty(),
                Err(_) => return false,
            }
        }
    }
}

/// What one frame means while the host waits for `expect`; `None`: go on.
fn judge(
    frame: &Frame<'_>,
    expect: &mut Expect,
    watch: &mut Watch<'_>,
    sent: &VecDeque<u64>,
) -> Option<Exchange> {
    let kind = frame.kind();
    let (expected, decode, limits) = match expect {
        Expect::Hello => {
            if kind == frame::HELLO {
                let protocol = frame.field::<u64>("protocol", small()).ok().flatten();
                return Some(Exchange::Hello(protocol.unwrap_or(0)));
            }
            if matches!(kind, frame::RESULT | frame::ERROR | frame::PROGRESS) {
                return Some(Exchange::Broken(format!(
                    "a {kind} frame came before its hello"
                )));
            }
            return None;
        }
        Expect::Answer { id, decode, limits } => (*id, *decode, *limits),
        Expect::Exit => return None,
    };
    let id = frame.id();
    match kind {
        frame::HELLO => Some(Exchange::Broken("a second hello".into())),
        // Progress of another job, or after its answer, is harmless: ignored.
        frame::PROGRESS => {
            if id == Ok(Some(expected)) {
                if let Some(item) = progress_item(frame) {
                    watch.progress(item);
                }
            }
            None
        }
        frame::RESULT | frame::ERROR => {
            match id {
                Ok(Some(got)) if got == expected => {}
                Ok(Some(got)) if sent.contains(&got) => return Some(Exchange::Stray(got)),
                Ok(Some(got)) => {
                    return Some(Exchange::Broken(format!(
                        "it answered job {got} while job {expected} was running"
                    )))
                }
                _ => {
                    return Some(Exchange::Broken(format!(
                        "a {kind} frame without a valid id"
                    )))
                }
            }
            if kind == frame::ERROR {
                let error = frame
                    .field::<String>("error", small())
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| "the processor reported an error".into());
                let kind = frame.field::<String>("kind", small()).ok().flatten();
                return Some(Exchange::Error(Reported { error, kind }));
            }
            let Some(bytes) = frame.field_bytes("result") else {
                return Some(Exchange::Broken("a result frame without a result".into()));
            };
            // Answered: a second answer is a stray from now on.
            *expect = Expect::Exit;
            Some(Exchange::Result(result::decode(
                decode,
                bytes,
                &limits,
                "the result",
            )))
        }
        // Types this version does not know are for later versions: ignored.
        _ => None,
    }
}

fn frame_limits(limits: &RunLimits) -> DecodeLimits {
    DecodeLimits {
        max_bytes: limits.max_output_bytes.saturating_add(FRAME_OVERHEAD),
        max_depth: limits.max_output_depth.saturating_add(1),
    }
}

/// A progress frame's item (its fraction clamped to 0..1), if it has a usable one.
fn progress_item(frame: &Frame<'_>) -> Option<ProgressItem> {
    let fraction = match frame.field::<ciborium::Value>("fraction", small()).ok()?? {
        ciborium::Value::Float(f) => f,
        ciborium::Value::Integer(i) => i128::from(i) as f64,
        _ => return None,
    };
    if !fraction.is_finite() {
        return None;
    }
    let message = frame.field::<String>("message", small()).ok().flatten();
    Some(ProgressItem {
        fraction: fraction.clamp(0.0, 1.0),
        message,
    })
}

/// Limits for a frame's small fields.
fn small() -> DecodeLimits {
    DecodeLimits {
        max_bytes: 1 << 20,
        max_depth: 16,
    }
}
