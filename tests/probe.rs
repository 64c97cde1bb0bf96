//! The `--describe` probe is a job like any other (src/runner/probe.rs): below the guard, in
//! the job's sandbox, with the job's environment and a hard deadline; its answer is remembered,
//! and `--no-persistent` skips it. Each test runs `offload run` as a person would, on a
//! version-1 shell script that does not know the flag, and looks at what the script did.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A directory of its own for one test, under the build's temporary directory.
fn scratch(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("probe-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// Writes an executable shell script.
fn script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write the script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// The live processes whose command line holds `marker`.
fn holding(marker: &str) -> Vec<u32> {
    common::processes()
        .into_iter()
        .filter(|p| p.state != 'Z')
        .filter(|p| {
            std::fs::read(format!("/proc/{}/cmdline", p.pid))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .map(|p| p.pid)
        .collect()
}

/// Waits for `child` at most `bound` (generous: it is a hang detector, not a timing), killing
/// it if it is still running then.
fn wait_bounded(mut child: std::process::Child, bound: Duration) -> Option<std::process::Output> {
    let until = Instant::now() + bound;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return Some(child.wait_with_output().expect("output"));
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lines the script logged, one per run: "describe" or "job", and what it saw.
fn runs(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A version-1 processor that does not know `--describe`, as PROTOCOL.md allows: it reads
/// stdin and writes one item (here an empty CBOR map, whatever it is asked). Each run logs
/// itself and whether it saw the host's secret; it ignores SIGTERM and leaves a `setsid`
/// sleeper behind that holds its stdout. With `hang_on_describe`, the probe never ends.
fn naive_processor(dir: &Path, marker: &str, hang_on_describe: bool) -> PathBuf {
    let path = dir.join("naive.sh");
    let hang = if hang_on_describe {
        format!("[ \"$1\" = --describe ] && exec sleep {marker}9")
    } else {
        String::new()
    };
    script(
        &path,
        &format!(
            r#"#!/bin/sh
trap '' TERM
what=job; [ "$1" = --describe ] && what=describe
echo "$what secret=${{SECRET_TOKEN:-none}}" >> "$OFFLOAD_TEST_LOG"
setsid sh -c 'trap "" TERM; exec sleep {marker}' &
{hang}
cat > /dev/null
printf '\240'
"#
        ),
    );
    path
}

fn offload_run(processor: &Path, dir: &Path, extra: &[&str]) -> Command {
    let inputs = dir.join("inputs.jsonl");
    std::fs::write(&inputs, "{}\n{}\n{}\n").expect("inputs");
    let mut command = common::offload();
    command
        .arg("run")
        .arg(processor)
        .arg("--inputs")
        .arg(&inputs)
        .args(extra)
        .env("SECRET_TOKEN", "hunter2")
        .env("OFFLOAD_TEST_LOG", dir.join("runs.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// A unique sleep duration, so that this test's leftovers are told apart from any other's.
fn marker(n: u32) -> String {
    format!("{n}{}.5", std::process::id() % 100_000)
}

#[test]
fn a_processor_that_ignores_describe_is_probed_once_confined_and_leaves_nothing() {
    let dir = scratch("ignores");
    let marker = marker(711);
    let processor = naive_processor(&dir, &marker, false);
    let out = wait_bounded(
        offload_run(&processor, &dir, &[]).spawn().expect("offload"),
        Duration::from_secs(120),
    )
    .expect("offload run ends although the probe left a sleeper holding its stdout");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines().all(|l| l.contains("\"status\":\"ok\"")),
        "{text}"
    );
    let runs = runs(&dir.join("runs.log"));
    let describes = runs.iter().filter(|r| r.starts_with("describe")).count();
    assert_eq!(describes, 1, "probed once for the whole run: {runs:?}");
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert!(
        runs.iter().all(|r| r.ends_with("secret=none")),
        "neither the probe nor a job sees the host's environment: {runs:?}"
    );
    assert!(
        holding(&marker).is_empty(),
        "the sleepers the probe and the jobs left are gone"
    );
}

#[test]
fn no_persistent_runs_the_processor_once_per_job_and_never_probes_it() {
    let dir = scratch("never");
    let marker = marker(712);
    let processor = naive_processor(&dir, &marker, false);
    let out = wait_bounded(
        offload_run(&processor, &dir, &["--no-persistent"])
            .spawn()
            .expect("offload"),
        Duration::from_secs(120),
    )
    .expect("offload run ends");
    assert!(out.status.success(), "{out:?}");
    let runs = runs(&dir.join("runs.log"));
    assert_eq!(runs, ["job secret=none"; 3], "one run per job, no probe");
    assert!(holding(&marker).is_empty());
}

#[test]
fn a_probe_that_hangs_ignoring_sigterm_is_killed_at_its_deadline() {
    let dir = scratch("hangs");
    let marker = marker(713);
    let processor = naive_processor(&dir, &marker, true);
    let out = wait_bounded(
        offload_run(&processor, &dir, &[]).spawn().expect("offload"),
        Duration::from_secs(120),
    )
    .expect("offload run ends although the probe never does");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("\"status\":\"ok\""))
            .count(),
        3,
        "the jobs run one-shot after the probe timed out: {text}"
    );
    assert!(holding(&marker).is_empty(), "nothing of the probe is left");
}

#[test]
fn sigterm_during_a_hung_probe_stops_offload_and_the_probe() {
    let dir = scratch("interrupt");
    let marker = marker(714);
    let processor = naive_processor(&dir, &marker, true);
    let child = offload_run(&processor, &dir, &[]).spawn().expect("offload");
    // Once the probe runs (it logged itself), interrupt.
    let log = dir.join("runs.log");
    let until = Instant::now() + Duration::from_secs(60);
    while !runs(&log).iter().any(|r| r.starts_with("describe")) {
        assert!(Instant::now() < until, "the probe never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = wait_bounded(child, Duration::from_secs(60)).expect("SIGTERM ends offload run");
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    assert!(holding(&marker).is_empty(), "nothing of the probe is left");
}

#[test]
fn with_files_and_the_sandbox_the_probe_is_sandboxed_and_sees_only_the_jobs_environment() {
    let dir = scratch("files");
    let trap = dir.join("written-by-the-probe");
    let processor = dir.join("files.sh");
    // Declares files when asked; tries to write outside its sandbox either way.
    script(
        &processor,
        &format!(
            r#"#!/bin/sh
touch {trap} 2>/dev/null
if [ "$1" = --describe ]; then
  # A secret it could see would show in the output files' names.
  echo '{{"name": "files", "summary": "s", "protocol": 2, "example_input": {{}},
         "files": {{"input_field": "data", "accepts": ["txt"], "output_field": "data",
                   "output_extension": "out'"${{SECRET_TOKEN:-}}"'"}}}}'
  exit 0
fi
cat > /dev/null
printf '\241\144data\103abc'
"#,
            trap = trap.display()
        ),
    );
    let input = dir.join("a.txt");
    std::fs::write(&input, "hello").expect("an input file");
    let outputs = dir.join("out");
    let mut command = common::offload();
    command
        .arg("run")
        .arg(&processor)
        .arg("--files")
        .arg(&input)
        .arg("--output-dir")
        .arg(&outputs)
        .arg("--sandbox")
        .env("SECRET_TOKEN", "hunter2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = wait_bounded(command.spawn().expect("offload"), Duration::from_secs(120))
        .expect("offload run ends");
    assert!(out.status.success(), "{out:?}");
    let written: Vec<String> = std::fs::read_dir(&outputs)
        .expect("the output directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(written, ["a.out"], "the probe saw no secret");
    assert_eq!(
        std::fs::read(outputs.join("a.out")).expect("the output"),
        b"abc"
    );
    assert!(
        !trap.exists(),
        "neither the probe nor the job could write outside the sandbox"
    );
}
