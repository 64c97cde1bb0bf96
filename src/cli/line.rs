//! `offload run`'s output lines as types: one [`JobLine`] per job, with its [`LineStats`].
//!
//! The field order of these types is the key order of the printed JSON (serde_json keeps it),
//! so a script that reads the lines as text sees them as before: `job`, `status`, then
//! `output` and `result` or `error`, then `file` (`--files`), `stats` and, with `--retries`,
//! `tries`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use offload::{FailureKind, JobError, MemoryLimitKind, RunStats};
use serde::Serialize;

/// One finished job, as `offload run` prints it.
#[derive(Debug, Serialize)]
pub struct JobLine {
    /// The input's number, from 0.
    pub job: usize,
    /// `"status": "ok"` with the result, or `"status": "failed"` with the error.
    #[serde(flatten)]
    pub ended: Ended,
    /// With `--files`: the input file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<JsonPath>,
    pub stats: LineStats,
    /// With `--retries`: how many tries the job took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tries: Option<u32>,
}

/// How a job ended, as its line says.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Ended {
    Ok {
        /// The file the result went to (`--output-dir`, `--files`).
        #[serde(skip_serializing_if = "Option::is_none")]
        output: Option<JsonPath>,
        /// The result in its JSON form: the whole result, or with `--files` what is left of
        /// it once its output field went to the file. Absent when it went to `output` whole.
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<serde_json::Value>,
    },
    Failed {
        error: JobError,
    },
}

/// A line's `status`, alone (for the job log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Failed,
}

impl JobLine {
    /// A failed job's line that has no process behind it (a refused input, an output not
    /// written): no stats beyond `stats`, not tried again.
    pub fn failed(job: usize, error: JobError, stats: &RunStats) -> Self {
        Self {
            job,
            ended: Ended::Failed { error },
            file: None,
            stats: LineStats::new(stats),
            tries: None,
        }
    }

    pub fn status(&self) -> Status {
        match self.ended {
            Ended::Ok { .. } => Status::Ok,
            Ended::Failed { .. } => Status::Failed,
        }
    }

    /// The error, for a failed job.
    pub fn error(&self) -> Option<&JobError> {
        match &self.ended {
            Ended::Ok { .. } => None,
            Ended::Failed { error } => Some(error),
        }
    }

    /// The output file, for a job whose result went to one.
    pub fn output(&self) -> Option<&JsonPath> {
        match &self.ended {
            Ended::Ok { output, .. } => output.as_ref(),
            Ended::Failed { .. } => None,
        }
    }
}

/// The error of a job whose result came but whose output file could not be written: the
/// processor exited 0, so the exit code says 0.
pub fn output_not_written(message: String) -> JobError {
    JobError {
        exit_code: Some(0),
        ..JobError::new(FailureKind::OutputNotWritten, message)
    }
}

/// A job's `stats` in its line: times in milliseconds (to the microsecond).
#[derive(Debug, Serialize)]
pub struct LineStats {
    pub wall_ms: f64,
    pub cpu_ms: f64,
    pub peak_rss_bytes: u64,
    /// The persistent worker that ran the job; null for a process of its own.
    pub worker: Option<WorkerLine>,
    pub memory_limit: Option<MemoryLimitKind>,
    /// Where a launcher ran it; null on this machine.
    pub host: Option<String>,
    /// How it was made to yield the CPU (nice, autogroup, cgroup_weight); null at nice 0.
    pub cpu_share: Option<offload::CpuShare>,
}

/// `stats.worker`: which worker, its how-manieth job, and (for the job that started it) how
/// long it took to start.
#[derive(Debug, Serialize)]
pub struct WorkerLine {
    pub id: u64,
    pub job: u64,
    pub startup_ms: Option<f64>,
}

impl LineStats {
    pub fn new(stats: &RunStats) -> Self {
        Self {
            wall_ms: millis(stats.wall),
            cpu_ms: millis(stats.cpu),
            peak_rss_bytes: stats.peak_rss_bytes,
            worker: stats.worker.map(|run| WorkerLine {
                id: run.worker,
                job: run.job,
                startup_ms: run.startup.map(millis),
            }),
            memory_limit: stats.memory_limit,
            cpu_share: stats.cpu_share,
            host: stats.host.clone(),
        }
    }
}

/// Milliseconds, rounded to the microsecond.
fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// A path in a line or a log entry: a string, or where it is not UTF-8, its bytes as
/// `{"$bytes": "<base64>"}` (the JSON form of a byte string), so that it is kept exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath(pub PathBuf);

impl JsonPath {
    pub fn new(path: &Path) -> Self {
        Self(path.to_path_buf())
    }

    /// The JSON form.
    pub fn to_json(&self) -> serde_json::Value {
        use std::os::unix::ffi::OsStrExt as _;
        match self.0.to_str() {
            Some(text) => serde_json::Value::String(text.to_owned()),
            None => offload::sdk::json::cbor_to_json(&ciborium::Value::Bytes(
                self.0.as_os_str().as_bytes().to_vec(),
            )),
        }
    }

    /// The path that [`JsonPath::to_json`] wrote.
    pub fn from_json(value: &serde_json::Value) -> Option<PathBuf> {
        use std::os::unix::ffi::OsStringExt as _;
        match value {
            serde_json::Value::String(text) => Some(PathBuf::from(text)),
            serde_json::Value::Object(_) => {
                match offload::sdk::json::json_to_cbor(value.clone()).ok()? {
                    ciborium::Value::Bytes(bytes) => {
                        Some(std::ffi::OsString::from_vec(bytes).into())
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

impl Serialize for JsonPath {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

/// `value` as one JSON line, newline included.
pub fn json_line(value: &impl Serialize) -> serde_json::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec(value)?;
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(line: &JobLine) -> String {
        String::from_utf8(json_line(line).expect("serializes")).expect("UTF-8")
    }

    /// The key order scripts have always seen, each kind of line.
    #[test]
    fn lines_keep_their_key_order() {
        let stats = RunStats {
            wall: Duration::from_micros(1500),
            worker: Some(offload::WorkerRun {
                worker: 2,
                job: 1,
                startup: Some(Duration::from_micros(250)),
            }),
            ..RunStats::default()
        };
        let ok = JobLine {
            job: 3,
            ended: Ended::Ok {
                output: Some(JsonPath::new(Path::new("out/a.png"))),
                result: Some(serde_json::json!({"width": 4})),
            },
            file: Some(JsonPath::new(Path::new("in/a.jpg"))),
            stats: LineStats::new(&stats),
            tries: Some(2),
        };
        assert_eq!(
            text(&ok),
            "{\"job\":3,\"status\":\"ok\",\"output\":\"out/a.png\",\"result\":{\"width\":4},\
             \"file\":\"in/a.jpg\",\"stats\":{\"wall_ms\":1.5,\"cpu_ms\":0.0,\
             \"peak_rss_bytes\":0,\"worker\":{\"id\":2,\"job\":1,\"startup_ms\":0.25},\
             \"memory_limit\":null,\"host\":null,\"cpu_share\":null},\"tries\":2}\n"
        );
        let failed = JobLine::failed(
            0,
            output_not_written("disk full".into()),
            &RunStats::default(),
        );
        assert_eq!(
            text(&failed),
            "{\"job\":0,\"status\":\"failed\",\"error\":{\"kind\":\"output_not_written\",\
             \"message\":\"disk full\",\"exit_code\":0,\"signal\":null,\"stderr_tail\":\"\"},\
             \"stats\":{\"wall_ms\":0.0,\"cpu_ms\":0.0,\"peak_rss_bytes\":0,\"worker\":null,\
             \"memory_limit\":null,\"host\":null,\"cpu_share\":null}}\n"
        );
    }

    #[test]
    fn paths_that_are_not_utf8_are_kept_as_bytes() {
        use std::os::unix::ffi::OsStrExt as _;
        let odd = PathBuf::from(std::ffi::OsStr::from_bytes(b"out/caf\xe9.png"));
        let json = JsonPath(odd.clone()).to_json();
        assert_eq!(json, serde_json::json!({"$bytes": "b3V0L2NhZukucG5n"}));
        assert_eq!(JsonPath::from_json(&json), Some(odd));
    }
}
