//! Where a finished job's result goes in `offload run`: into its line, to `DIR/<job>.cbor`
//! (`--output-dir`), or with `--files` to an output file named after its input; and the line
//! that says so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use ciborium::Value;
use offload::files::FileJobs;
use offload::sdk::json::cbor_to_json;
use offload::Finished;

use super::commit::Sink;
use super::joblog::Writing;
use super::line::{output_not_written, Ended, JobLine, JsonPath, LineStats};

/// How results are kept: printed, or written where the command line says.
pub struct Outputs {
    /// `--output-dir` without `--files`: each result to `DIR/<job>.cbor`.
    dir: Option<PathBuf>,
    /// `--files`: each result's output field to a file.
    files: Option<Arc<FileJobs>>,
    /// The output files a killed run was writing, per job (`--resume`).
    earlier: HashMap<usize, Writing>,
}

/// A finished job whose result is to be kept.
pub struct Done<'a> {
    pub index: usize,
    pub finished: Finished<Value>,
    /// With `--files`: the input file.
    pub file: Option<PathBuf>,
    /// The input's digest (empty without a job log).
    pub digest: &'a str,
}

impl Outputs {
    pub fn new(
        dir: Option<PathBuf>,
        files: Option<Arc<FileJobs>>,
        earlier: HashMap<usize, Writing>,
    ) -> Self {
        Self {
            dir,
            files,
            earlier,
        }
    }

    /// Keeps a finished job's result and gives its line; with a job log, a `--files` output's
    /// name goes to the log (through `sink`) before the file has it.
    pub fn keep(&self, done: Done<'_>, sink: &mut Sink) -> JobLine {
        match (&self.files, done.file.as_deref()) {
            (Some(jobs), Some(input)) => {
                let output = FileOutput {
                    jobs,
                    input,
                    index: done.index,
                    digest: done.digest,
                    // What a killed run was writing for this input, if it was this input.
                    earlier: self
                        .earlier
                        .get(&done.index)
                        .filter(|w| w.input == done.digest),
                };
                file_line(done.finished, &output, sink)
            }
            _ => self.report_line(done.index, done.finished),
        }
    }

    /// The line of a job not run with `--files`: its result, or where it was written.
    fn report_line(&self, index: usize, finished: Finished<Value>) -> JobLine {
        let ended = match (finished.result, &self.dir) {
            (Ok(value), None) => Ended::Ok {
                output: None,
                result: Some(cbor_to_json(&value)),
            },
            (Ok(value), Some(dir)) => match write_atomically(dir, index, &value) {
                Ok(path) => Ended::Ok {
                    output: Some(JsonPath(path)),
                    result: None,
                },
                Err(err) => Ended::Failed {
                    error: output_not_written(format!("{err:#}")),
                },
            },
            (Err(error), _) => Ended::Failed { error },
        };
        JobLine {
            job: index,
            ended,
            file: None,
            stats: LineStats::new(&finished.stats),
            tries: None,
        }
    }
}

/// A `--files` job's output, to be written.
struct FileOutput<'a> {
    jobs: &'a FileJobs,
    /// The input file.
    input: &'a Path,
    index: usize,
    /// The input's digest (empty without a job log).
    digest: &'a str,
    /// The output a killed run was writing for this job and input (`--resume`).
    earlier: Option<&'a Writing>,
}

/// A `--files` job's line: the input file, the output file written from the result's output
/// field, and the rest of the result.
fn file_line(finished: Finished<Value>, output: &FileOutput<'_>, sink: &mut Sink) -> JobLine {
    let written = finished.result.map(|value| {
        output
            .jobs
            .split_result(value)
            .and_then(|(bytes, rest)| Ok((write_file_output(output, &bytes, sink)?, rest)))
    });
    let ended = match written {
        Ok(Ok((written, rest))) => Ended::Ok {
            output: Some(JsonPath(written)),
            result: Some(cbor_to_json(&rest)),
        },
        Ok(Err(err)) => Ended::Failed {
            error: output_not_written(err),
        },
        Err(error) => Ended::Failed { error },
    };
    JobLine {
        job: output.index,
        ended,
        file: Some(JsonPath::new(output.input)),
        stats: LineStats::new(&finished.stats),
        tries: None,
    }
}

/// Writes a `--files` job's output file. With a job log, the log hears the output's path
/// (and a digest of its bytes) before the file gets that name, so that a `--resume` after a
/// kill knows the file for this job's: the job runs again (for its line) and its output
/// replaces that file instead of taking a new name beside it.
fn write_file_output(
    output: &FileOutput<'_>,
    bytes: &[u8],
    sink: &mut Sink,
) -> Result<PathBuf, String> {
    let jobs = output.jobs;
    let mut announce = |path: &Path| {
        if !sink.logs() {
            return Ok(());
        }
        let cannot = |err: &dyn std::fmt::Display| {
            format!("the job log cannot take the output's name: {err}")
        };
        let entry = super::joblog::writing_entry(output.index, output.digest, path, bytes)
            .map_err(|err| std::io::Error::other(cannot(&err)))?;
        sink.log(&entry)
            .map_err(|err| std::io::Error::new(err.kind(), cannot(&err)))
    };
    if let Some(earlier) = output.earlier {
        if let Some(name) = earlier_output(jobs, earlier) {
            let path = jobs.output_dir().join(&name);
            announce(&path).map_err(|err| err.to_string())?;
            return offload::output::replace(jobs.output_dir(), &name, bytes)
                .map_err(|err| err.to_string());
        }
    }
    jobs.write_announced(output.input, bytes, &mut announce)
}

/// The name of the output a killed run wrote for a job, if it is there as it was written: in
/// the same output directory, a regular file of this user's (not a link), with the bytes the
/// log's digest says.
fn earlier_output(jobs: &FileJobs, earlier: &Writing) -> Option<String> {
    if earlier.output.parent() != Some(jobs.output_dir()) {
        return None;
    }
    let name = earlier.output.file_name()?.to_str()?.to_owned();
    let limit = offload_sdk::decode::DEFAULT_MAX_BYTES as u64;
    let bytes = offload::output::read_own(jobs.output_dir(), &name, limit).ok()?;
    (super::joblog::digest(&bytes) == earlier.output_digest).then_some(name)
}

/// Writes DIR/<index>.cbor so that it is either absent or complete, over an existing one (or
/// a link planted there: replaced, never followed).
fn write_atomically(dir: &Path, index: usize, value: &Value) -> anyhow::Result<PathBuf> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).context("cannot encode the result")?;
    Ok(offload::output::replace(
        dir,
        &format!("{index}.cbor"),
        &bytes,
    )?)
}
