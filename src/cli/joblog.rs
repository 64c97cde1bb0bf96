//! `offload run --joblog FILE`: one JSON line per finished job, appended and flushed as it
//! goes, so that the log survives the run being killed; and `--resume` / `--resume-failed`,
//! which read it back.
//!
//! A job is logged when its line is printed, so that the log and the output agree: after a
//! `kill -9`, the jobs in the log are the jobs in the output, and a rerun with `--resume`
//! prints the others.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::Context as _;
use serde_json::{json, Value};

/// A digest of an input, to tell a changed input from the one logged: 64-bit FNV-1a of its
/// CBOR bytes, in hex (stable across versions and machines; not cryptographic).
pub fn digest(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The log being written.
pub struct JobLog {
    file: File,
}

impl JobLog {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open the job log {}", path.display()))?;
        let mut log = Self { file };
        // A run killed mid-write leaves a line cut short: end it, so that the next entry
        // starts a line of its own (the reader skips the broken one).
        if ends_mid_line(path) {
            let _ = writeln!(log.file);
        }
        Ok(log)
    }

    /// Appends the entry of a printed job `line` (as `offload run` prints it), with its input's
    /// digest, when it started (Unix seconds) and how many tries it took.
    pub fn append(&mut self, line: &Value, digest: &str, started: f64, tries: u32) {
        let error = &line["error"];
        let entry = json!({
            "job": line["job"],
            "input": digest,
            "status": line["status"],
            "kind": error["kind"],
            "start": (started * 1e3).round() / 1e3,
            "wall_ms": line["stats"]["wall_ms"],
            "cpu_ms": line["stats"]["cpu_ms"],
            "exit_code": if line["status"] == "ok" { json!(0) } else { error["exit_code"].clone() },
            "signal": error["signal"],
            "tries": tries,
            "host": line["stats"]["host"],
        });
        // Best effort: a full disk must not stop the jobs.
        let _ = writeln!(self.file, "{entry}").and_then(|()| self.file.flush());
    }
}

/// Whether the file's last byte is something other than a newline.
fn ends_mid_line(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = File::open(path) else {
        return false;
    };
    let mut last = [0u8; 1];
    file.seek(SeekFrom::End(-1)).is_ok() && file.read_exact(&mut last).is_ok() && last[0] != b'\n'
}

/// What a log says of earlier runs: per job number, the input digest and whether it
/// succeeded (the last entry of a job wins). A missing file says nothing; a line that is not
/// an entry (one cut short by a kill) is skipped.
pub fn read(path: &Path) -> anyhow::Result<HashMap<usize, (String, bool)>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(err) => {
            return Err(err).with_context(|| format!("cannot read the job log {}", path.display()))
        }
    };
    let mut done = HashMap::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        let Ok(entry) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let (Some(job), Some(input)) = (entry["job"].as_u64(), entry["input"].as_str()) else {
            continue;
        };
        let ok = entry["status"] == "ok";
        if let Ok(job) = usize::try_from(job) {
            done.insert(job, (input.to_owned(), ok));
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::{digest, read, JobLog};

    #[test]
    fn a_line_cut_short_by_a_kill_does_not_swallow_the_next_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jobs.log");
        std::fs::write(
            &path,
            "{\"job\":0,\"input\":\"aa\",\"status\":\"ok\"}\n{\"job\":1,\"inp",
        )
        .expect("write");
        let mut log = JobLog::open(&path).expect("open");
        let line = serde_json::json!({"job": 2, "status": "ok", "stats": {}});
        log.append(&line, "bb", 0.0, 1);
        let logged = read(&path).expect("read");
        assert_eq!(logged.get(&0), Some(&("aa".to_owned(), true)));
        assert_eq!(logged.get(&2), Some(&("bb".to_owned(), true)));
        assert!(!logged.contains_key(&1));
    }

    #[test]
    fn the_digest_is_fnv1a_and_stable() {
        assert_eq!(digest(b""), "cbf29ce484222325");
        assert_eq!(digest(b"a"), "af63dc4c8601ec8c");
        assert_ne!(digest(&[0x01]), digest(&[0x02]));
    }
}
