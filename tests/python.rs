//! The Python processor (`offload-histogram`, with the cbor2 package): proof that any language
//! that reads and writes CBOR can be a processor.

mod common;

use std::process::{Command, Output};
use std::sync::OnceLock;

use ciborium::Value;
use common::{on_main_context, path_with_bins, root};
use offload::sdk::decode::{decode_one, DecodeLimits};
use offload::{Job, Processor, Queue};

/// Whether Python with cbor2 is usable; installs cbor2 with pip when it is missing.
/// `Err` says why the tests cannot run here.
fn python_ready() -> Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            let has_cbor2 = || {
                Command::new("python3")
                    .args(["-c", "import cbor2"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            if has_cbor2() {
                return Ok(());
            }
            let pip = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "cbor2"])
                .output()
                .map_err(|err| format!("python3 cannot be run: {err}"))?;
            if has_cbor2() {
                Ok(())
            } else {
                Err(format!(
                    "cbor2 could not be installed: {}",
                    String::from_utf8_lossy(&pip.stderr).trim()
                ))
            }
        })
        .clone()
}

/// Skips the calling test, saying why, when Python with cbor2 cannot be had.
macro_rules! require_python {
    () => {
        if let Err(why) = python_ready() {
            eprintln!("SKIPPED: the Python processor needs python3 with cbor2: {why}");
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
        .output()
        .expect("sh runs")
}

fn run_with_input(args: &[&str], stdin: &[u8]) -> Output {
    let mut command = Command::new(histogram());
    command.args(args);
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
        description.protocol, 1,
        "the plain-Python template speaks version 1"
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
        // Found by name: the source tree's Python processors are on the search path.
        let processor = Processor::find("histogram").expect("found");
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
                &Job::new(processor),
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
