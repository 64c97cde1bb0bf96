//! Every job exactly once across a run, a `kill -9` of it and its `--resume`: its lines, and
//! with `--files` its output files; and the job log itself: locked, opened without following
//! a link, and read past a broken line.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{offload, root};
use serde_json::Value;

/// How long any one wait may take before the test gives up: generous, for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A run that was started with its stdout piped to us.
struct Watched {
    child: std::process::Child,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Watched {
    fn start(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON line: {line:?}: {e}"));
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Takes the lines printed so far, waiting up to `wait` for the first one.
    fn take_lines(&mut self, wait: Duration) -> bool {
        match self.lines.recv_timeout(wait) {
            Ok(line) => self.seen.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) => return true,
            Err(mpsc::RecvTimeoutError::Disconnected) => return false,
        }
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        true
    }

    /// Kills the run with SIGKILL once `when` says so (asked after each line, and every few
    /// milliseconds), unless it ends first; then reads its stdout to the end (the log writer
    /// finishes what it was given). Gives whether it was killed.
    fn kill_when(&mut self, mut when: impl FnMut(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + PATIENCE;
        let mut open = true;
        while open && !when(&self.seen) {
            assert!(Instant::now() < deadline, "the run never got there");
            open = self.take_lines(Duration::from_millis(5));
        }
        let killed = open && self.child.try_wait().ok().flatten().is_none();
        if killed {
            // SAFETY: killing a process this test started.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        }
        let status = self.child.wait().expect("wait");
        while self.take_lines(PATIENCE) {
            assert!(Instant::now() < deadline + PATIENCE, "stdout never ended");
        }
        killed && status.code().is_none()
    }
}

/// Job numbers of `lines`, with how many times each came.
fn count_jobs(lines: &[Value]) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for line in lines {
        let job = line["job"].as_u64().unwrap_or_else(|| panic!("{line}"));
        *counts.entry(job).or_insert(0) += 1;
    }
    counts
}

/// Asserts that the run's and the resume's lines together hold each of `count` jobs once,
/// each a success.
fn assert_each_job_once(trial: &str, run: &[Value], resume: &[Value], count: u64) {
    let both: Vec<Value> = run.iter().chain(resume).cloned().collect();
    let counts = count_jobs(&both);
    let wrong: Vec<_> = (0..count)
        .filter(|job| counts.get(job) != Some(&1))
        .map(|job| (job, counts.get(&job).copied().unwrap_or(0)))
        .collect();
    assert!(
        wrong.is_empty() && counts.len() as u64 == count,
        "{trial}: jobs not printed exactly once (job, times): {wrong:?}; the run printed {:?}, the resume {:?}",
        count_jobs(run).keys().collect::<Vec<_>>(),
        count_jobs(resume).keys().collect::<Vec<_>>(),
    );
    for line in &both {
        assert_eq!(line["status"], "ok", "{trial}: {line}");
    }
}

/// A small PNG (`side` pixels square) whose pixels depend on `seed`.
fn write_png(path: &Path, side: u32, seed: u8) {
    let file = std::fs::File::create(path).expect("create");
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), side, side);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let pixels: Vec<u8> = (0..side * side * 3)
        .map(|i| (i as u8).wrapping_mul(seed | 1))
        .collect();
    let mut writer = encoder.write_header().expect("header");
    writer.write_image_data(&pixels).expect("pixels");
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// 20 trials of `offload run diag --inputs ... --joblog LOG`, each killed with SIGKILL after
/// a different number of lines has appeared on its stdout (ordered and unordered, at -j 2
/// and 3; in half of them job 0 is slow, so the kill often comes in the middle of the burst
/// of lines that waited for it), then resumed: the two outputs together hold each job
/// exactly once. Before the log writer, a kill between a line and its log entry (73
/// `write` calls long) printed that job again on resume.
#[test]
fn twenty_kills_and_resumes_print_every_job_exactly_once() {
    let count = 40u64;
    let mut killed = 0;
    let mut printed_before_kill = Vec::new();
    for trial in 0..20u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let slow_first = trial % 2 == 0;
        let inputs: String = (0..count)
            .map(|i| {
                let sleep = if i == 0 && slow_first {
                    120
                } else {
                    3 + (i + trial) % 4
                };
                format!("{{\"echo\": {i}, \"sleep_ms\": {sleep}}}\n")
            })
            .collect();
        let file = dir.path().join("in.jsonl");
        std::fs::write(&file, inputs).expect("write");
        let log = dir.path().join("jobs.log");
        let jobs = if trial % 3 == 0 { "3" } else { "2" };
        let unordered = trial % 4 == 3;
        let command = |resume: bool| {
            let mut command = offload();
            command
                .args(["run", "diag", "-j", jobs, "--inputs"])
                .arg(&file);
            command.arg("--joblog").arg(&log);
            if unordered {
                command.arg("--unordered");
            }
            if resume {
                command.arg("--resume");
            }
            command
        };
        let after = 1 + (trial * 7) % 30;
        let mut run = Watched::start(command(false));
        if run.kill_when(|lines| lines.len() as u64 >= after) {
            killed += 1;
        }
        printed_before_kill.push(run.seen.len());
        let resume = offload_output(command(true));
        assert_each_job_once(
            &format!("trial {trial} (killed after {after} lines)"),
            &run.seen,
            &resume,
            count,
        );
    }
    eprintln!("lines printed by the killed runs: {printed_before_kill:?}");
    assert!(
        killed >= 10,
        "only {killed} of 20 runs were killed mid-batch"
    );
}

/// The lines of a run to its end.
fn offload_output(mut command: Command) -> Vec<Value> {
    let out = command.output().expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// 20 trials of `offload run blur --files ... --output-dir OUT --joblog LOG`, each killed
/// with SIGKILL once a different number of output files exist (in half of them the first
/// file is much larger, so with ordered output the others' files are on disk before any
/// line is printed), then resumed: the lines together hold each job exactly once, and each
/// input file has exactly one output file, under its own name (no `NAME-2.png` beside it).
/// Before the log named an output before it was written, the resume wrote every output
/// already on disk a second time.
#[test]
fn twenty_kills_and_resumes_write_every_output_file_exactly_once() {
    let count = 12u64;
    let mut killed = 0;
    let mut on_disk_at_kill = Vec::new();
    for trial in 0..20u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let inputs = dir.path().join("in");
        std::fs::create_dir(&inputs).expect("mkdir");
        let slow_first = trial % 2 == 0;
        let files: Vec<PathBuf> = (0..count)
            .map(|i| {
                let path = inputs.join(format!("f{i:02}.png"));
                if i == 0 && slow_first {
                    std::fs::copy(root().join("data/images/glow.png"), &path).expect("copy");
                } else {
                    write_png(&path, 6 + (i as u32 % 5), (i + trial) as u8);
                }
                path
            })
            .collect();
        let out = dir.path().join("out");
        let log = dir.path().join("jobs.log");
        let unordered = trial % 4 == 3;
        let command = |resume: bool| {
            let mut command = offload();
            command.args(["run", "blur", "-j", "2", "--param", "radius=1", "--files"]);
            command.args(&files).arg("--output-dir").arg(&out);
            command.arg("--joblog").arg(&log);
            if unordered {
                command.arg("--unordered");
            }
            if resume {
                command.arg("--resume");
            }
            command
        };
        let after = 1 + trial % (count as usize - 2) as u64;
        let mut run = Watched::start(command(false));
        let mut outputs = 0;
        if run.kill_when(|_| {
            outputs = names_in(&out).len();
            outputs as u64 >= after
        }) {
            killed += 1;
        }
        on_disk_at_kill.push((outputs, run.seen.len()));
        let resume = offload_output(command(true));
        let name = format!("trial {trial} (killed once {after} outputs were written)");
        assert_each_job_once(&name, &run.seen, &resume, count);
        let expected: Vec<String> = (0..count).map(|i| format!("f{i:02}.png")).collect();
        assert_eq!(names_in(&out), expected, "{name}: one output per input");
        for line in run.seen.iter().chain(&resume) {
            let output = PathBuf::from(line["output"].as_str().expect("an output"));
            let bytes = std::fs::read(&output).expect("the output named in the line");
            assert!(common::png_size(&bytes).is_some(), "{name}: {line}");
        }
    }
    eprintln!("(outputs on disk, lines printed) at each kill: {on_disk_at_kill:?}");
    assert!(
        killed >= 10,
        "only {killed} of 20 runs were killed mid-batch"
    );
}

/// A second run on a job log that a run holds is refused with a clear error, after waiting
/// 2 s for it (two runs on one log interleaved 61 of 400 lines); the log holds the first
/// run's entries alone, whole.
#[test]
fn a_job_log_another_run_holds_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Long enough to outlast the 2 s a second run waits for the lock.
    let inputs: String = (0..10)
        .map(|i| format!("{{\"echo\": {i}, \"sleep_ms\": 800}}\n"))
        .collect();
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, inputs).expect("write");
    let log = dir.path().join("jobs.log");
    let mut first = offload();
    first
        .args(["run", "diag", "-j", "1", "--inputs"])
        .arg(&file);
    first.arg("--joblog").arg(&log);
    let mut first = Watched::start(first);
    // Its first line: it holds the log by now (taken before any job starts).
    assert!(first.take_lines(PATIENCE) && !first.seen.is_empty());
    let second = offload()
        .args(["run", "diag", "--inputs"])
        .arg(&file)
        .arg("--joblog")
        .arg(&log)
        .output()
        .expect("run");
    assert_eq!(second.status.code(), Some(2), "{}", text(&second.stderr));
    assert!(second.stdout.is_empty(), "the second run ran nothing");
    let stderr = text(&second.stderr);
    assert!(
        stderr.contains("is in use by another offload run"),
        "{stderr}"
    );
    assert!(first.kill_when(|_| true), "still running after the refusal");
    let entries: Vec<Value> = std::fs::read_to_string(&log)
        .expect("the log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a whole entry"))
        .collect();
    assert_eq!(
        count_jobs(&entries),
        count_jobs(&first.seen),
        "the first run's alone"
    );
}

/// `--joblog` at a name where someone planted a symbolic link (say, in a shared directory,
/// to a file of root's) is refused and the file it points to is untouched: the log is
/// opened with O_NOFOLLOW.
#[test]
fn a_link_planted_at_the_job_log_is_refused_not_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").expect("write");
    let link = dir.path().join("jobs.log");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    let out = offload()
        .args(["run", "diag", "--input", "-", "--joblog"])
        .arg(&link)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&victim).expect("read"),
        "precious\n"
    );
}

/// A job log with a line that is not UTF-8 (a disk error, a stray write) still resumes: the
/// line is skipped like any broken one, as the code always said.
#[test]
fn a_job_log_with_a_line_that_is_not_utf8_still_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, "{\"echo\": 0}\n{\"echo\": 1}\n{\"echo\": 2}\n").expect("write");
    let log = dir.path().join("jobs.log");
    let run = |resume: bool| {
        let mut command = offload();
        command.args(["run", "diag", "--inputs"]).arg(&file);
        command.arg("--joblog").arg(&log);
        if resume {
            command.arg("--resume");
        }
        command.output().expect("run")
    };
    assert!(run(false).status.success());
    // Job 1's entry is replaced by bytes that are not UTF-8.
    let kept: Vec<u8> = std::fs::read_to_string(&log)
        .expect("read")
        .lines()
        .filter(|l| !l.starts_with("{\"job\":1,"))
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect();
    let mut broken = b"\xff\xfe not an entry \xc3\n".to_vec();
    broken.extend(kept);
    std::fs::write(&log, broken).expect("write");
    let out = run(true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(count_jobs(&lines).keys().collect::<Vec<_>>(), [&1]);
}

/// A `--files` name and an `--output-dir` that are not UTF-8 neither panic nor stop the
/// files after them (they did, after the output was written), and `--resume` then runs
/// nothing again: lines carry such a path as its bytes (`{"$bytes": base64}`).
#[test]
fn names_that_are_not_utf8_run_resume_and_are_written_once() {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let odd = |name: &[u8]| dir.path().join(std::ffi::OsStr::from_bytes(name));
    let inputs = odd(b"in\xff");
    std::fs::create_dir(&inputs).expect("mkdir");
    let files: Vec<PathBuf> = [&b"caf\xe9.png"[..], b"b.png", b"c\xfe.png"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let path = inputs.join(std::ffi::OsStr::from_bytes(name));
            write_png(&path, 5, i as u8);
            path
        })
        .collect();
    let out = odd(b"out\xfe");
    let log = dir.path().join("jobs.log");
    let run = |resume: bool| {
        let mut command = offload();
        command.args(["run", "blur", "--files"]).args(&files);
        command
            .arg("--output-dir")
            .arg(&out)
            .arg("--joblog")
            .arg(&log);
        if resume {
            command.arg("--resume");
        }
        command.output().expect("run")
    };
    let first = run(false);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let lines: Vec<Value> = text(&first.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let odd_file = &lines[0]["file"]["$bytes"];
    assert!(odd_file.is_string(), "{}", lines[0]);
    assert!(
        lines[1]["file"].is_object(),
        "its directory is not UTF-8 either"
    );
    assert_eq!(names_in(&out).len(), 3, "{:?}", names_in(&out));
    let again = run(true);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(again.stdout.is_empty(), "{}", text(&again.stdout));
    assert_eq!(names_in(&out).len(), 3, "{:?}", names_in(&out));
}
