//! `offload run --joblog FILE`: one JSON line per finished job, appended as it goes, so that
//! the log survives the run being killed; and `--resume` / `--resume-failed`, which read it
//! back.
//!
//! The log is opened without following a link at its name and held under an exclusive
//! `flock` for the whole run (and by the log writer after it: `commit.rs`), so two runs never
//! append to one log, and a `--resume` reads it only once nothing writes it any more. Each
//! entry is one `write(2)` of a whole line on an `O_APPEND` descriptor, so a kill leaves an
//! entry whole or absent, never cut.
//!
//! Besides a finished job's entry, a `--files` job's output gets an entry of its own before
//! the file is given its name (`"writing"`: the output's path and a digest of its bytes), so
//! that a `--resume` after a kill recognises the file that job wrote, and replaces it instead
//! of writing a second one beside it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use offload::FailureKind;
use serde::Serialize;
use serde_json::Value;

use super::line::{json_line, JobLine, JsonPath, Status};

/// A digest of an input, to tell a changed input from the one logged: 64-bit FNV-1a of its
/// CBOR bytes, in hex (stable across versions and machines; not cryptographic). Also of an
/// output file's bytes, to recognise the file a job wrote.
pub fn digest(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The log, open and locked.
pub struct JobLog {
    file: File,
    path: PathBuf,
}

impl JobLog {
    /// Opens (or creates) the log at `path` for appending, refusing a symbolic link at that
    /// name (in a shared directory it could point anywhere, and offload often runs as root),
    /// anything that is not a regular file, and a log that another run holds.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let shown = path.display();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o644)
            // O_NONBLOCK: a FIFO planted at the name must not block the open.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|err| match err.raw_os_error() {
                Some(libc::ELOOP) => anyhow::anyhow!(
                    "the job log {shown} is a symbolic link: give the file itself (a link \
                     could make offload append to any file)"
                ),
                _ => anyhow::Error::new(err).context(format!("cannot open the job log {shown}")),
            })?;
        let meta = file
            .metadata()
            .with_context(|| format!("cannot open the job log {shown}"))?;
        if !meta.is_file() {
            bail!("the job log {shown} is not a regular file");
        }
        lock(&file).map_err(|err| match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => anyhow::anyhow!(
                "the job log {shown} is in use by another offload run (it holds a lock on \
                 it): wait for that run to end, or give another --joblog FILE"
            ),
            _ => anyhow::Error::new(err).context(format!("cannot lock the job log {shown}")),
        })?;
        let log = Self {
            file,
            path: path.to_path_buf(),
        };
        // A run killed mid-write by an older offload could leave a line cut short: end it,
        // so that the next entry starts a line of its own (the reader skips the broken one).
        if log.ends_mid_line() {
            log.append(b"\n")
                .with_context(|| format!("cannot write the job log {shown}"))?;
        }
        Ok(log)
    }

    /// The open log, for the log writer to inherit (with its lock).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Appends `entry` (whole lines) with one `write(2)`: on an `O_APPEND` descriptor a kill
    /// then leaves all of it or none. Gives the number of `write` calls it took: 1, unless
    /// the disk filled up or a signal cut it short, in which case the rest is written after.
    pub fn append(&self, entry: &[u8]) -> std::io::Result<usize> {
        append_to(&self.file, entry)
    }

    /// Whether the file's last byte is something other than a newline.
    fn ends_mid_line(&self) -> bool {
        use std::os::unix::fs::FileExt as _;
        let Ok(len) = self.file.metadata().map(|m| m.len()) else {
            return false;
        };
        let mut last = [0u8; 1];
        len > 0 && self.file.read_exact_at(&mut last, len - 1).is_ok() && last[0] != b'\n'
    }

    /// What the log says of earlier runs: per job number, the last finished entry's input
    /// digest and whether it succeeded, and the output file each `--files` job was writing.
    /// A line that is not an entry (cut short by an older offload, not UTF-8, not JSON) is
    /// skipped.
    pub fn read(&self) -> anyhow::Result<Logged> {
        use std::io::{Seek as _, SeekFrom};
        let mut text = Vec::new();
        // From the start: appending moved the offset (writes go to the end regardless).
        (&self.file)
            .seek(SeekFrom::Start(0))
            .and_then(|_| (&self.file).read_to_end(&mut text))
            .with_context(|| format!("cannot read the job log {}", self.path.display()))?;
        let mut logged = Logged::default();
        for line in text.split(|&b| b == b'\n') {
            let Ok(entry) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            let (Some(job), Some(input)) = (entry["job"].as_u64(), entry["input"].as_str()) else {
                continue;
            };
            let Ok(job) = usize::try_from(job) else {
                continue;
            };
            if let Some(output) = JsonPath::from_json(&entry["writing"]) {
                let Some(output_digest) = entry["output_digest"].as_str() else {
                    continue;
                };
                logged.writing.insert(
                    job,
                    Writing {
                        input: input.to_owned(),
                        output,
                        output_digest: output_digest.to_owned(),
                    },
                );
            } else if entry.get("status").is_some() {
                logged
                    .done
                    .insert(job, (input.to_owned(), entry["status"] == "ok"));
            }
        }
        Ok(logged)
    }
}

/// How long [`lock`] waits for a log that another run holds: enough for the log writer of a
/// run killed a moment ago to write what it was handed and exit (`kill -9` and `--resume` in
/// a script), not for a run that goes on.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes the log's exclusive lock (`flock(LOCK_EX | LOCK_NB)`), asking again for up to
/// [`LOCK_PATIENCE`] while another holds it; `EWOULDBLOCK` if it is still held then.
fn lock(file: &File) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        // SAFETY: flock on a descriptor the caller owns.
        let done = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(file),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        if done == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) || std::time::Instant::now() > deadline {
            return Err(err);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// [`JobLog::append`] on any descriptor (the log writer's inherited one).
pub fn append_to(mut file: &File, entry: &[u8]) -> std::io::Result<usize> {
    let written = file.write(entry)?;
    if written == entry.len() {
        return Ok(1);
    }
    file.write_all(&entry[written..])?;
    Ok(2)
}

/// What the log says of earlier runs.
#[derive(Debug, Default)]
pub struct Logged {
    /// Per job: the input digest and whether it succeeded (the last entry wins).
    pub done: HashMap<usize, (String, bool)>,
    /// Per `--files` job: the output it was giving a name to (the last one wins).
    pub writing: HashMap<usize, Writing>,
}

/// An output file a job was writing: whichever name it took is recorded before the file had
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writing {
    /// The job's input digest.
    pub input: String,
    pub output: PathBuf,
    /// [`digest`] of the output's bytes.
    pub output_digest: String,
}

/// A finished job's entry in the log.
#[derive(Serialize)]
struct Entry<'a> {
    job: usize,
    /// The input's [`digest`].
    input: &'a str,
    status: Status,
    /// The failure's kind; null for a job that succeeded.
    kind: Option<FailureKind>,
    /// When it started, in Unix seconds (to the millisecond).
    start: f64,
    wall_ms: f64,
    cpu_ms: f64,
    /// 0 for a job that succeeded.
    exit_code: Option<i32>,
    signal: Option<i32>,
    tries: u32,
    host: Option<&'a str>,
    /// With `--files`: the input file, and the output file if it was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a JsonPath>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a JsonPath>,
}

/// The entry of a printed job `line`, with its input's digest, when it started (Unix seconds)
/// and how many tries it took; a `--files` job's entry also names its input file and output.
/// One line, newline included.
pub fn entry(
    line: &JobLine,
    digest: &str,
    started: f64,
    tries: u32,
) -> serde_json::Result<Vec<u8>> {
    let error = line.error();
    json_line(&Entry {
        job: line.job,
        input: digest,
        status: line.status(),
        kind: error.map(|error| error.kind),
        start: (started * 1e3).round() / 1e3,
        wall_ms: line.stats.wall_ms,
        cpu_ms: line.stats.cpu_ms,
        exit_code: error.map_or(Some(0), |error| error.exit_code),
        signal: error.and_then(|error| error.signal),
        tries,
        host: line.stats.host.as_deref(),
        file: line.file.as_ref(),
        output: line.output(),
    })
}

/// The entry that says a `--files` job is giving its output a name.
#[derive(Serialize)]
struct WritingEntry<'a> {
    job: usize,
    /// The input's [`digest`].
    input: &'a str,
    /// The output's path.
    writing: JsonPath,
    /// The [`digest`] of the output's bytes.
    output_digest: String,
}

/// The entry that says job `job` (input digest `input`) is giving its output the name
/// `output`, with a digest of the output's bytes. One line, newline included.
pub fn writing_entry(
    job: usize,
    input: &str,
    output: &Path,
    output_bytes: &[u8],
) -> serde_json::Result<Vec<u8>> {
    json_line(&WritingEntry {
        job,
        input,
        writing: JsonPath::new(output),
        output_digest: digest(output_bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::super::line::{Ended, LineStats};
    use super::*;

    /// A job's line as `offload run` prints it: `ended`, with `stats`.
    fn line(job: usize, ended: Ended, stats: &offload::RunStats) -> JobLine {
        JobLine {
            job,
            ended,
            file: None,
            stats: LineStats::new(stats),
            tries: None,
        }
    }

    fn log_at(dir: &Path, text: &[u8]) -> PathBuf {
        let path = dir.join("jobs.log");
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn a_line_cut_short_by_a_kill_does_not_swallow_the_next_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = log_at(
            dir.path(),
            b"{\"job\":0,\"input\":\"aa\",\"status\":\"ok\"}\n{\"job\":1,\"inp",
        );
        let log = JobLog::open(&path).expect("open");
        let ok = Ended::Ok {
            output: None,
            result: None,
        };
        let line = line(2, ok, &offload::RunStats::default());
        log.append(&entry(&line, "bb", 0.0, 1).expect("an entry"))
            .expect("append");
        let logged = log.read().expect("read");
        assert_eq!(logged.done.get(&0), Some(&("aa".to_owned(), true)));
        assert_eq!(logged.done.get(&2), Some(&("bb".to_owned(), true)));
        assert!(!logged.done.contains_key(&1));
    }

    /// A line that is not UTF-8 (a disk error, a stray write) is skipped like any broken
    /// line: it used to make `--resume` refuse to run.
    #[test]
    fn a_line_that_is_not_utf8_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = log_at(
            dir.path(),
            b"{\"job\":0,\"input\":\"aa\",\"status\":\"ok\"}\n\xff\xfe{\"job\n{\"job\":1,\"input\":\"bb\",\"status\":\"failed\"}\n",
        );
        let logged = JobLog::open(&path).expect("open").read().expect("read");
        assert_eq!(logged.done.len(), 2);
        assert_eq!(logged.done.get(&1), Some(&("bb".to_owned(), false)));
    }

    /// Each entry is one write(2), counted by the kernel for this thread (`syscw`).
    #[test]
    fn an_entry_is_one_write() {
        let writes = || -> u64 {
            std::fs::read_to_string("/proc/thread-self/io")
                .expect("/proc/thread-self/io")
                .lines()
                .find_map(|l| l.strip_prefix("syscw: "))
                .and_then(|n| n.parse().ok())
                .expect("syscw")
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let log = JobLog::open(&dir.path().join("jobs.log")).expect("open");
        let error = offload::JobError {
            signal: Some(9),
            ..offload::JobError::new(FailureKind::TimedOut, "ran longer than 5 s")
        };
        let stats = offload::RunStats {
            wall: std::time::Duration::from_micros(1500),
            cpu: std::time::Duration::from_micros(250),
            ..offload::RunStats::default()
        };
        let mut line = line(7, Ended::Failed { error }, &stats);
        line.file = Some(JsonPath::new(Path::new("in/a.png")));
        let entry = entry(&line, &digest(b"input"), 1_795_552_641.25, 3).expect("an entry");
        assert_eq!(
            entry,
            b"{\"job\":7,\"input\":\"1ebbae8f5810b65b\",\"status\":\"failed\",\
              \"kind\":\"timed_out\",\"start\":1795552641.25,\"wall_ms\":1.5,\"cpu_ms\":0.25,\
              \"exit_code\":null,\"signal\":9,\"tries\":3,\"host\":null,\"file\":\"in/a.png\"}\n"
        );
        let before = writes();
        assert_eq!(log.append(&entry).expect("append"), 1);
        assert_eq!(
            writes() - before,
            1,
            "one write(2) for {} bytes",
            entry.len()
        );
        let text = std::fs::read(dir.path().join("jobs.log")).expect("read");
        assert_eq!(text, entry);
    }

    #[test]
    fn a_second_open_is_refused_while_the_first_holds_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jobs.log");
        let first = JobLog::open(&path).expect("open");
        let err = JobLog::open(&path).err().expect("refused").to_string();
        assert!(err.contains("in use by another offload run"), "{err}");
        drop(first);
        JobLog::open(&path).expect("free again");
    }

    #[test]
    fn writing_entries_and_paths_that_are_not_utf8_are_read_back() {
        use std::os::unix::ffi::OsStrExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = JobLog::open(&dir.path().join("jobs.log")).expect("open");
        let odd = PathBuf::from(std::ffi::OsStr::from_bytes(b"out/caf\xe9.png"));
        log.append(&writing_entry(4, "cc", &odd, b"png bytes").expect("an entry"))
            .expect("append");
        let logged = log.read().expect("read");
        assert_eq!(
            logged.writing.get(&4),
            Some(&Writing {
                input: "cc".into(),
                output: odd,
                output_digest: digest(b"png bytes"),
            })
        );
        assert!(logged.done.is_empty());
    }

    #[test]
    fn the_digest_is_fnv1a_and_stable() {
        assert_eq!(digest(b""), "cbf29ce484222325");
        assert_eq!(digest(b"a"), "af63dc4c8601ec8c");
        assert_ne!(digest(&[0x01]), digest(&[0x02]));
    }
}
