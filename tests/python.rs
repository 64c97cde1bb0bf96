//! The Python processors (`offload-histogram` and `offload-lookup`, on the offload SDK for
//! Python and cbor2): proof that any language that reads and writes CBOR can be a processor,
//! in one-shot and in persistent mode.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Output};
use std::sync::OnceLock;

use ciborium::Value;
use common::{offload, on_main_context, path_with_bins, root};
use offload::sdk::decode::{decode_one, DecodeLimits};
use offload::{Job, Processor, Queue};

/// This checkout's SDK, first on `PYTHONPATH` for every Python processor these tests run, so
/// that they test it and not whichever copy pip installed (an editable install may point at
/// another checkout).
fn sdk_path() -> std::ffi::OsString {
    let mut path = std::ffi::OsString::from(root().join("processors/python/offload-sdk/src"));
    if let Some(more) = std::env::var_os("PYTHONPATH").filter(|p| !p.is_empty()) {
        path.push(":");
        path.push(more);
    }
    path
}

/// Whether Python with cbor2 and the offload SDK is usable; when the SDK is missing, installs
/// this checkout's (which brings cbor2) with pip, as `dev/setup` does. `Err` says why the
/// tests cannot run here.
fn python_ready() -> Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            let importable = || {
                Command::new("python3")
                    .args(["-c", "import cbor2, offload_sdk"])
                    .env("PYTHONPATH", sdk_path())
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            if importable() {
                return Ok(());
            }
            let sdk = root().join("processors/python/offload-sdk");
            let pip = |extra: &[&str]| {
                Command::new("python3")
                    .args(["-m", "pip", "install", "--quiet"])
                    .args(extra)
                    .arg("--editable")
                    .arg(&sdk)
                    .output()
                    .map_err(|err| format!("python3 cannot be run: {err}"))
            };
            let mut out = pip(&[])?;
            if !importable() {
                // A Python managed by the system (PEP 668) refuses plain pip installs.
                out = pip(&["--break-system-packages"])?;
            }
            if importable() {
                Ok(())
            } else {
                Err(format!(
                    "the offload SDK for Python could not be installed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        })
        .clone()
}

/// Skips the calling test, saying why, when Python with cbor2 and the SDK cannot be had.
macro_rules! require_python {
    () => {
        if let Err(why) = python_ready() {
            eprintln!("SKIPPED: the Python processors need python3 with the offload SDK: {why}");
            return;
        }
    };
}

fn histogram() -> std::path::PathBuf {
    root().join("processors/python/offload-histogram")
}

fn shell(line: &str) -> Output {
    let mut path = std::ffi::OsString::from(root().join("processors/python"));
    path.push(":");
    path.push(path_with_bins());
    Command::new("sh")
        .arg("-c")
        .arg(line)
        .current_dir(root())
        .env("PATH", path)
        .env("PYTHONPATH", sdk_path())
        .output()
        .expect("sh runs")
}

fn run_with_input(args: &[&str], stdin: &[u8]) -> Output {
    let mut command = Command::new(histogram());
    command.args(args).env("PYTHONPATH", sdk_path());
    common::run_with_input(command, stdin)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn histogram_round_trips_from_the_shell_and_in_json_mode() {
    require_python!();
    let piped = shell("offload encode < data/histogram.json | offload-histogram | offload decode");
    assert!(piped.status.success(), "{}", text(&piped.stderr));
    let json = shell("offload-histogram --json < data/histogram.json");
    assert!(json.status.success(), "{}", text(&json.stderr));
    let a: serde_json::Value = serde_json::from_slice(&piped.stdout).expect("json");
    let b: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(a, b);
    assert_eq!(a["count"], 200);
}

#[test]
fn histogram_statistics_are_right() {
    require_python!();
    let input = serde_json::json!({"values": [1, 2, 3, 4.5], "bins": 2});
    let out = run_with_input(&["--json"], input.to_string().as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(result["count"], 4);
    assert_eq!(result["min"], 1.0);
    assert_eq!(result["max"], 4.5);
    assert_eq!(result["mean"], 2.625);
    let stddev = result["stddev"].as_f64().expect("number");
    assert!((stddev - 1.293_010_5).abs() < 1e-6, "{stddev}");
    let counts: Vec<_> = result["bins"]
        .as_array()
        .expect("bins")
        .iter()
        .map(|b| b["count"].clone())
        .collect();
    assert_eq!(counts, [2, 2]);
}

#[test]
fn histogram_describes_itself() {
    require_python!();
    let description = Processor::at(histogram())
        .describe(offload::processor::DESCRIBE_TIMEOUT)
        .expect("describe");
    assert_eq!(description.name, "histogram");
    assert_eq!(
        description.protocol, 2,
        "on the Python SDK, it speaks version 2"
    );
    assert!(
        description.supports_persistent(),
        "and serves many jobs per process"
    );
    let out = run_with_input(
        &["--json"],
        description.example_input.to_string().as_bytes(),
    );
    assert!(
        out.status.success(),
        "rejects its own example: {}",
        text(&out.stderr)
    );
    // Its example output is what the example gives.
    let real: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON result");
    assert_eq!(description.example_output, Some(real));
}

#[test]
fn histogram_refuses_bad_input_in_one_line_without_a_traceback() {
    require_python!();
    let mut wrong = Vec::new();
    ciborium::into_writer(&serde_json::json!({"values": "nope"}), &mut wrong).expect("encode");
    let mut truncated = Vec::new();
    ciborium::into_writer(&serde_json::json!({"values": [1, 2, 3]}), &mut truncated)
        .expect("encode");
    truncated.pop();
    let trailing = [truncated.clone(), vec![0x03, 0x00]].concat();
    for (input, says) in [
        (b"\xff\xfe".to_vec(), "not valid cbor"),
        (wrong, "values"),
        (truncated, "truncated"),
        (trailing, "trailing"),
    ] {
        let out = run_with_input(&[], &input);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(
            stderr.to_lowercase().contains(says),
            "{stderr:?} should mention {says:?}"
        );
        assert!(!stderr.contains("Traceback"), "{stderr}");
        let report: offload::sdk::ErrorReport =
            decode_one(&out.stdout, DecodeLimits::default()).expect("error report");
        assert_eq!(report.kind.as_deref(), Some("invalid_input"));
    }
}

#[test]
fn histogram_runs_in_the_engine_with_progress() {
    require_python!();
    let (result, progress) = on_main_context(|| async {
        // Found by name where the app says its processors are (the library bakes no path in).
        let dirs = [root().join("processors/python")];
        let processor = Processor::find_in("histogram", &dirs).expect("found");
        assert!(
            Processor::list_in(&dirs)
                .iter()
                .any(|p| p.name() == "lookup"),
            "list_in lists the directory"
        );
        let queue = Queue::new();
        let fractions = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let sink = fractions.clone();
        queue.connect_events(move |event| {
            if let offload::QueueEvent::Progress { fraction, .. } = event {
                sink.borrow_mut().push(*fraction);
            }
        });
        let values: Vec<f64> = (0..200_000).map(|i| f64::from(i % 1000)).collect();
        let handle = queue
            .submit::<_, Value>(
                &Job::new(processor).env("PYTHONPATH", sdk_path()),
                &serde_json::json!({"values": values, "bins": 10}),
            )
            .expect("submit");
        let result = handle.result().await;
        let progress = fractions.borrow().clone();
        (result, progress)
    });
    let result = result.expect("histogram succeeds");
    let count = result
        .as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some("count")))
        .and_then(|(_, v)| v.as_integer())
        .map(i128::from);
    assert_eq!(count, Some(200_000));
    assert!(!progress.is_empty(), "progress items reached the queue");
}

/// Runs `offload run NAME --inputs FILE -j 2` with `extra` arguments; the JSON lines, in
/// input order.
fn run_jsonl(name: &str, inputs: &[serde_json::Value], extra: &[&str]) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("inputs.jsonl");
    let mut file = std::fs::File::create(&path).expect("create");
    for input in inputs {
        writeln!(file, "{input}").expect("write");
    }
    drop(file);
    let out = offload()
        .args(["run", name, "-j", "2", "--inputs"])
        .arg(&path)
        .args(extra)
        .env("PYTHONPATH", sdk_path())
        .output()
        .expect("offload runs");
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l:?}: {e}")))
        .collect();
    assert_eq!(lines.len(), inputs.len(), "{}", text(&out.stderr));
    lines
}

/// Checks that `name` serves `inputs` on persistent workers, several jobs per worker, and
/// that one process per job (`--no-persistent`) gives the same results.
fn check_persistent_and_per_process_agree(name: &str, inputs: &[serde_json::Value]) {
    let persistent = run_jsonl(name, inputs, &[]);
    let per_process = run_jsonl(name, inputs, &["--no-persistent"]);
    let mut jobs_per_worker: HashMap<u64, usize> = HashMap::new();
    for (line, alone) in persistent.iter().zip(&per_process) {
        assert_eq!(line["status"], "ok", "{line}");
        let worker = &line["stats"]["worker"];
        assert!(worker.is_object(), "ran on a persistent worker: {line}");
        let id = worker["id"].as_u64().expect("a worker id");
        *jobs_per_worker.entry(id).or_default() += 1;
        assert_eq!(alone["status"], "ok", "{alone}");
        assert!(
            alone["stats"]["worker"].is_null(),
            "ran in a process of its own: {alone}"
        );
        assert_eq!(
            line["result"], alone["result"],
            "the same result either way"
        );
    }
    assert!(
        jobs_per_worker.values().any(|&jobs| jobs >= 2),
        "several jobs share a worker process: {jobs_per_worker:?}"
    );
    assert!(
        persistent
            .iter()
            .any(|line| line["stats"]["worker"]["job"].as_u64() >= Some(2)),
        "a worker's second job"
    );
}

#[test]
fn histogram_runs_on_persistent_workers_with_the_same_results() {
    require_python!();
    let inputs: Vec<_> = (0..12)
        .map(|i| serde_json::json!({"values": [i, i + 1, 2 * i + 3, 0.5], "bins": 3}))
        .collect();
    check_persistent_and_per_process_agree("histogram", &inputs);
}

#[test]
fn lookup_sets_up_once_per_worker_and_runs_alike_per_process() {
    require_python!();
    let inputs: Vec<_> = (0..8)
        .map(|i| serde_json::json!({"numbers": [i, 1000 * i + 7, 9_999_991]}))
        .collect();
    check_persistent_and_per_process_agree("lookup", &inputs);
    let lines = run_jsonl("lookup", &inputs[..1], &[]);
    assert_eq!(
        lines[0]["result"],
        serde_json::json!({"prime": [false, true, true], "primes_up_to": [0, 4, 664_579]})
    );
}

#[test]
fn a_bad_job_fails_alone_and_the_worker_serves_on() {
    require_python!();
    let inputs = [
        serde_json::json!({"values": [1, 2]}),
        serde_json::json!({"values": []}),
        serde_json::json!({"values": [3]}),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("inputs.jsonl");
    let lines: Vec<String> = inputs.iter().map(|i| i.to_string()).collect();
    std::fs::write(&path, lines.join("\n")).expect("write");
    let out = offload()
        .args(["run", "histogram", "-j", "1", "--inputs"])
        .arg(&path)
        .env("PYTHONPATH", sdk_path())
        .output()
        .expect("offload runs");
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{}", text(&out.stderr));
    assert_eq!(lines[0]["status"], "ok");
    assert_eq!(lines[1]["status"], "failed");
    assert_eq!(
        lines[1]["error"]["message"],
        "invalid input: values is empty; give at least one number"
    );
    assert_eq!(lines[2]["status"], "ok");
    let workers: Vec<_> = lines
        .iter()
        .map(|l| l["stats"]["worker"]["id"].clone())
        .collect();
    assert!(workers[0].is_u64(), "{:?}", lines[0]);
    assert!(
        workers.iter().all(|w| *w == workers[0]),
        "one worker served all three: {workers:?}"
    );
}

/// A processor on the SDK that prints: at import time, in its set-up, in its function, and
/// through a child process. A job that fails on purpose shows where the prints went (its
/// stderr tail); a set in a result is refused.
const PRINTER: &str = r#"#!/usr/bin/env python3
import subprocess
from offload_sdk import Failed, Processor
print("printer: at import")
def setup():
    print("printer: in set-up")
def work(inp, ctx):
    print("printer: in job", inp["n"])
    subprocess.run(["sh", "-c", "echo printer: from a child"], check=True)
    if inp.get("fail"):
        raise Failed("failing on purpose")
    if inp.get("set"):
        return {"tags": {"a", "b"}}
    return {"n": inp["n"]}
Processor("printer", "Prints, then answers", example={"n": 1}).run(work, setup=setup)
"#;

#[test]
fn a_python_processor_that_prints_is_ok_in_both_modes_and_its_prints_go_to_stderr() {
    require_python!();
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("offload-printer");
    std::fs::write(&script, PRINTER).expect("write the processor");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let inputs = [
        serde_json::json!({"n": 1}),
        serde_json::json!({"n": 2, "fail": true}),
        serde_json::json!({"n": 3, "set": true}),
    ];
    for persistence in [offload::Persistence::Never, offload::Persistence::Always] {
        let job = Job::new(Processor::at(&script))
            .persistence(persistence)
            .env("PYTHONPATH", sdk_path());
        let results = common::run_jobs(&job, &inputs, 1, None);
        let ok = results[0]
            .result
            .as_ref()
            .unwrap_or_else(|err| panic!("{persistence:?}: the prints broke the result: {err:?}"));
        assert_eq!(
            common::field(ok, "n").and_then(Value::as_integer),
            Some(1.into()),
            "{persistence:?}: {ok:?}"
        );
        let failed = results[1].result.as_ref().expect_err("fails on purpose");
        assert_eq!(failed.kind, offload::FailureKind::Failed, "{failed:?}");
        assert!(failed.message.ends_with("failing on purpose"), "{failed:?}");
        let mut printed = vec!["printer: in job 2", "printer: from a child"];
        if persistence == offload::Persistence::Never {
            // A worker's tail is its job's: the worker printed these before its first job.
            printed.extend(["printer: at import", "printer: in set-up"]);
        }
        for line in printed {
            assert!(
                failed.stderr_tail.lines().any(|l| l == line),
                "{persistence:?}: {line:?} not in stderr: {:?}",
                failed.stderr_tail
            );
        }
        let set = results[2].result.as_ref().expect_err("a set is refused");
        assert_eq!(set.kind, offload::FailureKind::Failed, "{set:?}");
        assert!(
            set.message
                .contains(r#"cannot encode the result: result["tags"] is a set"#),
            "{persistence:?}: {}",
            set.message
        );
        if persistence == offload::Persistence::Always {
            let pids: Vec<_> = results.iter().map(|r| r.stats.pid).collect();
            assert!(
                results[0].stats.worker.is_some() && pids.iter().all(|p| *p == pids[0]),
                "one worker served all three: {pids:?}"
            );
        }
    }
}
