//! Reading `offload run`'s inputs as they come, on a thread of its own: one encoded input per
//! credit, so that jobs start as lines arrive and memory stays bounded however many there are.
//!
//! The run hands out a credit for every job it can take (a free slot, or room for a finished
//! result to wait for its turn in the output); the reader reads, encodes and sends one input
//! per credit, and blocks without one. A slow or endless producer is read only as fast as the
//! jobs go.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::{bail, Context as _};
use offload::inputs::{encode_json, json_lines_bounded, LineError};

/// Where inputs come from, in command-line order.
pub enum Source {
    /// JSON Lines, one input per line (`-`: standard input).
    Lines(PathBuf),
    /// One input, JSON or CBOR.
    Single(PathBuf),
    /// A file a processor takes (`--files`).
    File(PathBuf, std::sync::Arc<offload::files::FileJobs>),
}

/// What the reader tells the run.
pub enum Fed {
    /// Input number `.0`, encoded; from the file `.2` with `--files`.
    Input(usize, Vec<u8>, Option<PathBuf>),
    /// A file not run, and why.
    Skipped(PathBuf, String),
    /// A bad input: reading stops here, after this many inputs.
    Bad(usize, String),
    /// No more inputs: this many in all.
    End(usize),
}

/// Starts the reader: it sends what it reads with `send` (which says false once nobody
/// listens), one input per credit from `credits`.
pub fn start(
    sources: Vec<Source>,
    max_input: u64,
    credits: mpsc::Receiver<()>,
    send: impl Fn(Fed) -> bool + Send + 'static,
) {
    let reader = move || {
        let mut count = 0usize;
        for source in sources {
            match source {
                Source::Lines(path) => {
                    let name = if path == std::path::Path::new("-") {
                        "standard input".to_owned()
                    } else {
                        path.display().to_string()
                    };
                    let reader = match open(&path) {
                        Ok(file) => std::io::BufReader::new(file),
                        Err(err) => {
                            send(Fed::Bad(count, format!("{err:#}")));
                            return;
                        }
                    };
                    // Each line is read with the input limit: an endless line ends the
                    // reading once it is over, holding no more of it.
                    for encoded in json_lines_bounded(reader, &name, max_input) {
                        match encoded {
                            Ok(bytes) => {
                                if credits.recv().is_err() || !send(Fed::Input(count, bytes, None))
                                {
                                    return;
                                }
                                count += 1;
                            }
                            Err(why @ LineError::OverLimit { .. }) => {
                                send(Fed::Bad(count, format!("{why} (--max-input raises it)")));
                                return;
                            }
                            Err(why) => {
                                send(Fed::Bad(count, why.to_string()));
                                return;
                            }
                        }
                    }
                }
                Source::File(path, jobs) => match jobs.input(&path, max_input) {
                    Ok(bytes) => {
                        if credits.recv().is_err() || !send(Fed::Input(count, bytes, Some(path))) {
                            return;
                        }
                        count += 1;
                    }
                    Err(why) => {
                        if !send(Fed::Skipped(path, why)) {
                            return;
                        }
                    }
                },
                Source::Single(path) => match read_single(&path, max_input) {
                    Ok(bytes) => {
                        if credits.recv().is_err() || !send(Fed::Input(count, bytes, None)) {
                            return;
                        }
                        count += 1;
                    }
                    Err(err) => {
                        send(Fed::Bad(count, format!("{err:#}")));
                        return;
                    }
                },
            }
        }
        send(Fed::End(count));
    };
    // The thread may stay blocked on a producer that never ends; the process does not wait
    // for it.
    let _ = std::thread::Builder::new()
        .name("offload-inputs".into())
        .spawn(reader);
}

/// `bytes` if they are exactly one well-formed CBOR item, as a processor must get; else why not.
fn one_item(bytes: Vec<u8>, path: &Path, max_input: u64) -> anyhow::Result<Vec<u8>> {
    use offload_sdk::decode::{DecodeError, DecodeLimits};
    let limits = DecodeLimits {
        max_bytes: usize::try_from(max_input).unwrap_or(usize::MAX),
        ..DecodeLimits::default()
    };
    let why = if bytes.is_empty() {
        DecodeError::Empty
    } else {
        match offload_sdk::sequence::item_len(&bytes, limits) {
            Ok(Some(len)) if len == bytes.len() => return Ok(bytes),
            Ok(Some(len)) => DecodeError::TrailingBytes {
                extra: bytes.len() - len,
            },
            Ok(None) => DecodeError::Truncated,
            Err(err) => err,
        }
    };
    bail!(
        "{}: {why}; a processor's input must be exactly one CBOR item",
        path.display()
    )
}

fn open(path: &Path) -> anyhow::Result<Box<dyn Read + Send>> {
    if path == Path::new("-") {
        return Ok(Box::new(std::io::stdin()));
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Box::new(file))
}

/// One input from a file, JSON or (by the `.cbor` extension, or from standard input when
/// it is not JSON) CBOR, within the input limit.
fn read_single(path: &Path, max_input: u64) -> anyhow::Result<Vec<u8>> {
    let shown = path.display();
    let over = |size: u64| {
        anyhow::anyhow!(
            "{shown} is {size} bytes{}, over the input limit of {max_input} bytes: raise it \
             with --max-input SIZE (K, M, G allowed)",
            if size > max_input { "" } else { " or more" }
        )
    };
    // Refuse a file that is too large before reading it.
    if path != Path::new("-") {
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.is_file() && meta.len() > max_input {
                return Err(over(meta.len()));
            }
        }
    }
    let mut bytes = Vec::new();
    open(path)?
        .take(max_input.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {shown}"))?;
    if bytes.len() as u64 > max_input {
        return Err(over(bytes.len() as u64));
    }
    if path.extension().is_some_and(|e| e == "cbor") {
        return one_item(bytes, path, max_input);
    }
    match serde_json::from_slice(&bytes) {
        Ok(json) => offload::sdk::json::check_integers(&bytes)
            .map_err(|err| anyhow::anyhow!(err.0))
            .and_then(|()| Ok(encode_json(json)?))
            .with_context(|| path.display().to_string()),
        // From standard input, anything that is not JSON is passed on as CBOR.
        Err(_) if path == Path::new("-") => one_item(bytes, path, max_input),
        Err(err) => Err(err).with_context(|| {
            format!(
                "{}: not valid JSON (name CBOR files *.cbor)",
                path.display()
            )
        }),
    }
}
