//! What a one-shot processor writes besides stderr: its result on stdout, read up to the
//! output limit and judged by the sizes its heads declare as they arrive, and its progress
//! stream (PROTOCOL.md 6), whose latest valid item is the job's progress. A worker's result
//! and progress come in frames instead (`worker/frames.rs`).

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};

use offload_sdk::decode::{decode_one, DecodeError, DecodeLimits};
use offload_sdk::protocol::ProgressItem;
use offload_sdk::sequence::{ItemScanner, SequenceBuffer};

use super::process::drain;
use crate::job::RunLimits;

/// The largest progress item read; a longer one breaks the progress stream (ignored then).
const MAX_PROGRESS_ITEM: usize = 64 * 1024;

/// The result as it arrives on stdout.
pub(super) struct Output {
    bytes: Vec<u8>,
    max_bytes: usize,
    /// Where the result item ends, as its heads declare (a `--describe` answer is JSON, not
    /// CBOR: only its size counts, and this is `None`).
    heads: Option<ItemScanner>,
}

/// What one read of stdout came to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reading {
    /// More may come.
    Open,
    /// The end of stdout (or it broke).
    Ended,
    /// More than the output limit came, or a head declared more: stop the job.
    TooLarge,
}

impl Output {
    /// An empty result of at most `limits.max_output_bytes`; `cbor` when it must be one CBOR
    /// item (a job's, not the describe probe's).
    pub fn new(limits: &RunLimits, cbor: bool) -> Self {
        Self {
            bytes: Vec::new(),
            max_bytes: limits.max_output_bytes,
            heads: cbor.then(|| {
                ItemScanner::new(DecodeLimits {
                    max_bytes: limits.max_output_bytes,
                    max_depth: limits.max_output_depth,
                })
            }),
        }
    }

    /// Reads what `pipe` has now.
    pub fn read(&mut self, pipe: &mut File) -> Reading {
        let cap = self
            .max_bytes
            .saturating_add(1)
            .saturating_sub(self.bytes.len());
        let ended = match pipe.take(cap as u64).read_to_end(&mut self.bytes) {
            Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ),
        };
        let over = self.bytes.len() > self.max_bytes;
        let declared_over = self.heads.as_mut().is_some_and(|heads| {
            matches!(heads.scan(&self.bytes), Err(DecodeError::TooLarge { .. }))
        });
        if over || declared_over {
            // Judged now; what else it says no longer matters.
            self.heads = None;
            Reading::TooLarge
        } else if ended {
            Reading::Ended
        } else {
            Reading::Open
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// The progress pipe and the items read from it so far.
pub(super) struct Progress {
    pipe: Option<File>,
    /// `None` once the stream broke: it is ignored from then on.
    items: Option<SequenceBuffer>,
    scratch: Vec<u8>,
}

impl Progress {
    pub fn new(pipe: Option<File>) -> Self {
        Self {
            pipe,
            items: Some(SequenceBuffer::new(small_with(MAX_PROGRESS_ITEM))),
            scratch: vec![0u8; 64 * 1024],
        }
    }

    /// The pipe to wait on, while it is open.
    pub fn fd(&self) -> Option<RawFd> {
        self.pipe.as_ref().map(AsRawFd::as_raw_fd)
    }

    pub fn is_open(&self) -> bool {
        self.pipe.is_some()
    }

    /// Reads what the pipe has; gives each complete, valid item in order (the latest is the
    /// job's progress).
    pub fn read(&mut self, mut each: impl FnMut(ProgressItem)) {
        let items = &mut self.items;
        let ended = drain(&mut self.pipe, &mut self.scratch, |chunk| {
            if let Some(items) = items.as_mut() {
                items.extend(chunk);
            }
        });
        if ended {
            self.pipe = None;
        }
        let Some(buffer) = self.items.as_mut() else {
            return;
        };
        let broken = loop {
            match buffer.next_item() {
                Ok(Some(item)) => {
                    if let Ok(item) = decode_one::<ProgressItem>(item, small()) {
                        if item.fraction.is_finite() {
                            each(item);
                        }
                    }
                }
                Ok(None) => break buffer.pending() > MAX_PROGRESS_ITEM,
                Err(_) => break true,
            }
        };
        if broken {
            self.items = None;
        }
    }
}

/// Limits for the small items a host reads besides results (progress, error reports).
pub(super) fn small() -> DecodeLimits {
    small_with(1 << 20)
}

fn small_with(max_bytes: usize) -> DecodeLimits {
    DecodeLimits {
        max_bytes,
        max_depth: 16,
    }
}
