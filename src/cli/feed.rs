//! Reading `offload run`'s inputs as they come, on a thread of its own: one encoded input per
//! credit, so that jobs start as lines arrive and memory stays bounded however many there are.
//!
//! The run hands out a credit for every job it can take (a free slot, or room for a finished
//! result to wait for its turn in the output); the reader reads, encodes and sends one input
//! per credit, and blocks without one. A slow or endless producer is read only as fast as the
//! jobs go.

use std::path::PathBuf;
use std::sync::mpsc;

use offload::inputs::{json_lines_bounded, LineError};

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
                    let reader = match super::run::open(&path) {
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
                Source::Single(path) => match super::run::read_single(&path, max_input) {
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
