//! RELIABILITY.md's contract, row by row: each misbehaving processor ends as a classified
//! failure, the host's memory stays bounded, and nothing is left behind.

mod common;

use common::field;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use ciborium::Value;
use common::{diag_job, on_main_context, wait_group_gone, SETTLE};
use offload::{FailureKind, Finished, Job, Processor, Queue, RunLimits, SubmitError};
use serde_json::json;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run_all(job: &Job, inputs: &[serde_json::Value]) -> Vec<Finished<Value>> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    common::run_jobs(job, inputs, cores, None)
}

fn lines(out: &Output) -> Vec<serde_json::Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn one_failing_job_leaves_the_others_unaffected() {
    let mut inputs: Vec<_> = (0..12).map(|i| json!({"echo": i})).collect();
    inputs[3] = json!({"fail": "exit:3", "stderr": "disk full\n"});
    inputs[7] = json!({"fail": "segv"});
    let results = run_all(&diag_job(), &inputs);
    for (i, finished) in results.iter().enumerate() {
        match i {
            3 => {
                let err = finished.result.as_ref().expect_err("exit 3");
                assert_eq!((err.kind, err.exit_code), (FailureKind::Failed, Some(3)));
                assert!(err.stderr_tail.contains("disk full"));
            }
            7 => {
                let err = finished.result.as_ref().expect_err("segv");
                assert_eq!(
                    (err.kind, err.signal),
                    (FailureKind::Killed, Some(libc::SIGSEGV))
                );
            }
            _ => {
                let value = finished.result.as_ref().expect("healthy job");
                assert_eq!(field(value, "echo"), Some(&Value::Integer(i.into())));
            }
        }
    }
}

#[test]
fn ten_gib_on_stdout_is_bad_output_over_the_limit_with_bounded_host_memory() {
    let mut command = common::offload();
    // One-shot: the flood is the processor's stdout itself (tests/persistent.rs has a
    // worker's result over the limit).
    command.args([
        "run",
        "diag",
        "--no-persistent",
        "--max-output",
        "64M",
        "--input",
        "-",
    ]);
    let started = Instant::now();
    let child = common::spawn_with_input(command, br#"{"fail": "flood_stdout:10737418240"}"#);
    let (out, peak) = common::wait_sampling_peak_rss(child);
    let line = &lines(&out)[0];
    assert_eq!(line["error"]["kind"], "bad_output", "{line}");
    assert!(line["error"]["message"]
        .as_str()
        .expect("text")
        .contains("over the limit of 67108864 bytes"));
    assert!(
        peak < 200 << 20,
        "host peak RSS {} MiB for a 64 MiB limit",
        peak >> 20
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped early, not after 10 GiB"
    );
}

#[test]
fn one_gib_on_stderr_keeps_only_a_bounded_tail() {
    let mut command = common::offload();
    command.args(["run", "diag", "--input", "-"]);
    let child = common::spawn_with_input(command, br#"{"fail": "flood_stderr:1073741824"}"#);
    let (out, peak) = common::wait_sampling_peak_rss(child);
    let line = &lines(&out)[0];
    // It wrote nothing on stdout and exited 0: that is its own outcome, bad output.
    assert_eq!(line["error"]["kind"], "bad_output", "{line}");
    let tail = line["error"]["stderr_tail"].as_str().expect("text");
    assert!(
        !tail.is_empty() && tail.len() <= 8 * 1024,
        "{} bytes of tail",
        tail.len()
    );
    assert!(peak < 100 << 20, "host peak RSS {} MiB", peak >> 20);
}

#[test]
fn a_processor_that_never_reads_stdin_is_judged_by_its_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("offload-no-read");
    // Writes an empty CBOR map and exits 0 without reading its 32 MiB input.
    std::fs::write(&script, "#!/bin/sh\nprintf '\\240'\n").expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let big = json!({"data": "x".repeat(32 << 20)});
    let results = run_all(&Job::new(Processor::at(&script)), &[big]);
    assert_eq!(
        results[0].result,
        Ok(Value::Map(Vec::new())),
        "{:?}",
        results[0].result
    );
}

#[test]
fn memory_and_cpu_limits_end_as_resource_limit_failures() {
    for persistence in [offload::Persistence::Never, offload::Persistence::Always] {
        limits_end_as_resource_limit_failures(persistence);
    }
}

fn limits_end_as_resource_limit_failures(persistence: offload::Persistence) {
    let limits = RunLimits {
        max_memory_bytes: Some(64 << 20),
        ..RunLimits::default()
    };
    let results = run_all(
        &diag_job().limits(limits).persistence(persistence),
        &[json!({"fail": "alloc:536870912"}), json!({"echo": 1})],
    );
    let err = results[0]
        .result
        .as_ref()
        .expect_err("over the memory limit");
    assert_eq!(err.kind, FailureKind::ResourceLimit, "{err:?}");
    assert!(
        err.message.contains("memory limit of 64.0 MiB"),
        "{}",
        err.message
    );
    assert!(
        results[1].result.is_ok(),
        "{persistence:?}: a job within the limit runs: {:?}",
        results[1].result
    );

    let limits = RunLimits {
        max_cpu_time: Some(Duration::from_secs(1)),
        ..RunLimits::default()
    };
    let results = run_all(
        &diag_job().limits(limits).persistence(persistence),
        &[json!({"fail": "spin"})],
    );
    let err = results[0].result.as_ref().expect_err("over the CPU limit");
    assert_eq!(err.kind, FailureKind::ResourceLimit, "{err:?}");
    assert!(
        err.message.contains("CPU-time limit of 1s"),
        "{}",
        err.message
    );
}

#[test]
fn processors_get_only_stdio_and_the_progress_fd_and_lead_their_own_group() {
    // One-shot; tests/persistent.rs checks what a worker gets.
    let job = diag_job().persistence(offload::Persistence::Never);
    let results = run_all(&job, &[json!({"inspect": true})]);
    let value = results[0].result.as_ref().expect("inspect");
    let env = field(value, "env").and_then(Value::as_map).expect("env");
    let progress_fd: i128 = env
        .iter()
        .find(|(k, _)| k.as_text() == Some("OFFLOAD_PROGRESS_FD"))
        .and_then(|(_, v)| v.as_text())
        .and_then(|v| v.parse().ok())
        .expect("OFFLOAD_PROGRESS_FD");
    let fds: Vec<i128> = field(value, "open_fds")
        .and_then(Value::as_array)
        .expect("open_fds")
        .iter()
        .filter_map(|v| v.as_integer().map(i128::from))
        .collect();
    assert_eq!(fds, vec![0, 1, 2, progress_fd]);
    let pid = results[0].stats.pid.expect("pid");
    assert!(pid > 0);
}

#[test]
fn processors_get_a_clean_environment_plus_what_the_user_passes() {
    let mut command = common::offload();
    command
        .args([
            "run",
            "diag",
            "--env",
            "MODE=fast",
            "--inherit-env",
            "SHARED_TOKEN",
            "--input",
            "-",
        ])
        .env("SECRET_TOKEN", "do-not-leak")
        .env("SHARED_TOKEN", "pass-me")
        .env("OFFLOAD_DEMO_SETTING", "1");
    let out = common::run_with_input(command, br#"{"inspect": true}"#);
    let env = &lines(&out)[0]["result"]["env"];
    assert_eq!(env["MODE"], "fast");
    assert_eq!(env["SHARED_TOKEN"], "pass-me");
    assert_eq!(env["OFFLOAD_DEMO_SETTING"], "1");
    assert!(env.get("SECRET_TOKEN").is_none(), "{env}");
    assert!(env.get("PATH").is_some(), "{env}");
}

#[test]
fn processors_die_with_the_host() {
    let mut host = common::offload()
        .args(["run", "diag", "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    host.stdin
        .take()
        .expect("stdin")
        .write_all(br#"{"sleep_ms": 60000}"#)
        .expect("write");
    let host_pid = host.id();
    let until = Instant::now() + Duration::from_secs(10);
    let processor = loop {
        // Below its guard, the host's child.
        let found = common::processors_below(host_pid, "offload-diag")
            .into_iter()
            .next();
        if let Some(p) = found {
            break p;
        }
        assert!(Instant::now() < until, "no processor started");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        processor.group, processor.pid,
        "the processor leads its own process group"
    );
    host.kill().expect("SIGKILL the host");
    host.wait().expect("reap the host");
    assert_eq!(wait_group_gone(processor.pid, SETTLE), Vec::<u32>::new());
}

#[test]
fn interrupting_a_run_with_100_jobs_running_leaves_nothing_and_keeps_finished_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("out");
    let mut inputs: Vec<serde_json::Value> =
        (0..100).map(|_| json!({"sleep_ms": 60_000})).collect();
    for i in 0..10 {
        inputs[i * 10] = json!({"echo": i}); // finish at once
    }
    inputs[5] = json!({"fail": "ignore_term"});
    inputs[6] = json!({"fail": "grandchild", "sleep_ms": 0});
    inputs[7] = json!({"sleep_ms": 60_000, "fail": "grandchild"});
    let file = dir.path().join("in.jsonl");
    std::fs::write(
        &file,
        inputs.iter().map(|i| format!("{i}\n")).collect::<String>(),
    )
    .expect("write");
    // A grace period that no loaded machine comes near: all gone well before it proves that
    // the interrupt did not wait for it.
    let host = common::offload()
        .args(["run", "diag", "-j", "100", "--grace", "60", "--output-dir"])
        .arg(&out_dir)
        .arg("--inputs")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let host_pid = host.id();
    let until = Instant::now() + Duration::from_secs(120);
    let groups: Vec<u32> = loop {
        // The processors (each below its guard, the host's child); each leads its group.
        let running: Vec<u32> = common::processors_below(host_pid, "offload-diag")
            .into_iter()
            .map(|p| p.pid)
            .collect();
        // And the eleven quick jobs have ended (their results are written as each ends), so
        // that a loaded machine that starts processors slowly cannot interrupt them first.
        let written = std::fs::read_dir(&out_dir).map_or(0, Iterator::count);
        if running.len() >= 89 && written >= 10 {
            break running;
        }
        assert!(
            Instant::now() < until,
            "only {} processors running, {written} results written",
            running.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: signalling our own child.
    unsafe { libc::kill(host_pid as i32, libc::SIGINT) };
    let interrupted = Instant::now();
    let output = host.wait_with_output().expect("wait");
    assert_eq!(output.status.code(), Some(130), "{}", text(&output.stderr));
    for pid in groups {
        let left = wait_group_gone(pid, SETTLE.saturating_sub(interrupted.elapsed()));
        assert_eq!(
            left,
            Vec::<u32>::new(),
            "group {pid} after {:?}",
            interrupted.elapsed()
        );
    }
    let zombies: Vec<u32> = common::processes()
        .into_iter()
        .filter(|p| p.parent == host_pid)
        .map(|p| p.pid)
        .collect();
    assert_eq!(zombies, Vec::<u32>::new());
    let lines: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 100, "every job is reported");
    let finished: Vec<&serde_json::Value> = lines.iter().filter(|l| l["status"] == "ok").collect();
    assert!(finished.len() >= 10, "{} finished", finished.len());
    for line in finished {
        let path = line["output"].as_str().expect("output path");
        let bytes = std::fs::read(path).expect("the result file is there");
        let value: Value =
            offload::sdk::decode::decode_one(&bytes, Default::default()).expect("complete CBOR");
        assert!(field(&value, "pid").is_some());
    }
    // Only outputs, no temporary file.
    let others: Vec<String> = std::fs::read_dir(&out_dir)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.strip_suffix(".cbor")
                .is_none_or(|n| n.parse::<usize>().is_err())
        })
        .collect();
    assert!(others.is_empty(), "{others:?}");
}

#[test]
fn inputs_that_cannot_be_encoded_are_refused_at_submission() {
    struct Unencodable;
    impl serde::Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("this value has no CBOR form"))
        }
    }
    on_main_context(|| async {
        let queue = Queue::new();
        let refused = queue.submit::<_, Value>(&diag_job(), &Unencodable).err();
        let Some(SubmitError::Encode(message)) = refused else {
            panic!("expected an encode error, got {refused:?}");
        };
        assert!(message.contains("no CBOR form"), "{message}");
        assert_eq!(queue.counts().queued + queue.counts().running, 0);
    });
}

#[test]
fn a_result_declaring_more_than_the_limit_is_stopped_at_once_in_both_modes() {
    // A head that declares a byte string of 2^64 - 1 bytes, then nothing: judged from the
    // head as it arrives, not after the process ends (it never would: no timeout is set).
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("offload-declares");
    std::fs::write(
        &script,
        "#!/bin/sh\ncat > /dev/null\nprintf '\\133\\377\\377\\377\\377\\377\\377\\377\\377'\nexec sleep 1000\n",
    )
    .expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let job = Job::new(Processor::at(&script)).persistence(offload::Persistence::Never);
    let results = common::run_jobs_within(Duration::from_secs(120), &job, &[json!({})], 1)
        .expect("the declared size stops the job; it does not wait for the process");
    let oneshot = results[0].result.as_ref().expect_err("over the limit");
    assert_eq!(oneshot.kind, FailureKind::BadOutput, "{oneshot:?}");
    assert!(
        oneshot.message.contains("over the limit"),
        "{}",
        oneshot.message
    );
    // A worker's frame declaring as much ends the same way.
    let worker = diag_job()
        .persistence(offload::Persistence::Always)
        .limits(RunLimits {
            max_output_bytes: 1 << 20,
            ..RunLimits::default()
        });
    let results = common::run_jobs_within(
        Duration::from_secs(120),
        &worker,
        &[json!({"output_bytes": 4 << 20})],
        1,
    )
    .expect("no hang");
    let persistent = results[0].result.as_ref().expect_err("over the limit");
    assert_eq!(
        (
            persistent.kind,
            persistent.message.contains("over the limit")
        ),
        (oneshot.kind, true),
        "{persistent:?}"
    );
}
