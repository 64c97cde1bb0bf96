//! Every example processor as a person at a shell would use it: through `offload encode` and
//! `offload decode`, in `--json` mode, `--describe`, with bad input and with a progress fd.

mod common;

use common::field;

use std::process::{Command, Output, Stdio};

use ciborium::Value;
use common::{bin, path_with_bins, root};
use offload::sdk::decode::{decode_one, DecodeLimits};

/// The Rust example processors and their sample inputs in data/.
const RUST_PROCESSORS: [(&str, &str); 4] = [
    ("mandelbrot", "data/mandelbrot.json"),
    ("blur", "data/blur.json"),
    ("jitter", "data/sphere.json"),
    ("thumbnail", "data/thumbnail.json"),
];

/// Runs a shell command line from the repository root with the built binaries on PATH.
fn shell(line: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(line)
        .current_dir(root())
        .env("PATH", path_with_bins())
        .output()
        .expect("sh runs")
}

/// Runs `program args` with `stdin` as its input.
fn run_with_input(program: &std::path::Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut command = Command::new(program);
    command.args(args);
    common::run_with_input(command, stdin)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn as_u64(value: Option<&Value>) -> Option<u64> {
    value?.as_integer().and_then(|i| u64::try_from(i).ok())
}

#[test]
fn each_processor_round_trips_through_offload_encode_and_decode() {
    for (name, data) in RUST_PROCESSORS {
        let out = shell(&format!(
            "offload encode < {data} | offload-{name} | offload decode"
        ));
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("decode prints JSON");
        assert!(json.is_object(), "{name}: {json}");
        let again = shell(&format!("offload-{name} --json < {data}"));
        assert!(
            again.status.success(),
            "{name} --json: {}",
            text(&again.stderr)
        );
        let direct: serde_json::Value =
            serde_json::from_slice(&again.stdout).expect("--json prints JSON");
        assert_eq!(json, direct, "{name}: the CBOR and JSON paths agree");
    }
}

#[test]
fn mandelbrot_renders_black_inside_the_set_and_colour_outside() {
    let input = serde_json::json!({"x0": -2.0, "y0": -1.0, "x1": 1.0, "y1": 1.0, "width": 30, "height": 20, "max_iter": 300});
    let out = run_with_input(
        &bin("offload-mandelbrot"),
        &["--json"],
        input.to_string().as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rgba = offload::sdk::json::json_to_cbor(json["rgba"].clone()).expect("bytes");
    let Value::Bytes(rgba) = rgba else {
        panic!("rgba is not bytes")
    };
    assert_eq!(rgba.len(), 30 * 20 * 4);
    let pixel = |x: usize, y: usize| &rgba[(y * 30 + x) * 4..(y * 30 + x) * 4 + 4];
    // The centre column at x = -0.5 (pixel 15) and y = 0 (row 10) is inside the main cardioid.
    assert_eq!(pixel(15, 10), [0, 0, 0, 255]);
    // The corner at -2 - i lies far outside.
    assert_ne!(pixel(0, 0), [0, 0, 0, 255]);
}

#[test]
fn blur_keeps_the_size_and_smooths_the_image() {
    let out = shell("offload encode < data/blur.json | offload-blur");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let result: Value = decode_one(&out.stdout, DecodeLimits::default()).expect("one CBOR item");
    let original: Value = decode_one(
        &std::fs::read(root().join("data/blur.cbor")).expect("read"),
        DecodeLimits::default(),
    )
    .expect("blur.cbor is one item");
    assert_eq!(
        as_u64(field(&result, "width")),
        as_u64(field(&original, "width"))
    );
    let (Some(Value::Bytes(after)), Some(Value::Bytes(before))) =
        (field(&result, "rgba"), field(&original, "rgba"))
    else {
        panic!("rgba must be a byte string in both");
    };
    assert_eq!(after.len(), before.len());
    assert_ne!(after, before, "a blur with radius 3 changes a checkerboard");
    // Smoothing lowers the total variation between neighbours.
    let variation = |px: &[u8]| {
        px.windows(5)
            .map(|w| (i32::from(w[0]) - i32::from(w[4])).abs())
            .sum::<i32>()
    };
    assert!(variation(after) < variation(before));
}

#[test]
fn jitter_is_repeatable_and_bounded_by_the_amplitude() {
    let first = shell("offload-jitter --json < data/sphere.json");
    let second = shell("offload-jitter --json < data/sphere.json");
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_eq!(first.stdout, second.stdout, "same seed, same result");
    let input: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join("data/sphere.json")).expect("read"))
            .expect("json");
    let output: serde_json::Value = serde_json::from_slice(&first.stdout).expect("json");
    let amplitude = input["amplitude"].as_f64().expect("amplitude");
    let before = input["vertices"].as_array().expect("vertices");
    let after = output["vertices"].as_array().expect("vertices");
    assert_eq!(before.len(), after.len());
    let mut moved = 0;
    for (b, a) in before.iter().zip(after) {
        for axis in 0..3 {
            let d = (a[axis].as_f64().expect("number") - b[axis].as_f64().expect("number")).abs();
            assert!(d <= amplitude + 1e-12, "offset {d} over the amplitude");
            if d > 0.0 {
                moved += 1;
            }
        }
    }
    assert!(moved > before.len(), "most coordinates moved");
    assert_eq!(input["faces"], output["faces"]);
}

#[test]
fn describe_prints_a_usable_description() {
    for (name, _) in RUST_PROCESSORS.iter().chain(&[("diag", "")]) {
        let exe = bin(&format!("offload-{name}"));
        let out = Command::new(&exe)
            .arg("--describe")
            .stdin(Stdio::null())
            .output()
            .expect("run");
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let description: offload::sdk::Description =
            serde_json::from_slice(&out.stdout).expect("description JSON");
        assert_eq!(description.name, *name);
        assert_eq!(description.protocol, offload::sdk::PROTOCOL_VERSION);
        assert!(!description.summary.is_empty());
        // The example input is accepted as it stands.
        let example = description.example_input.to_string();
        let run = run_with_input(&exe, &["--json"], example.as_bytes());
        assert!(
            run.status.success(),
            "{name} rejects its own example: {}",
            text(&run.stderr)
        );
        // The example output has the shape of what the example gives (equal, but for diag's
        // pid and times).
        let declared = description
            .example_output
            .clone()
            .unwrap_or_else(|| panic!("{name} describes no example output"));
        let real: serde_json::Value =
            serde_json::from_slice(&run.stdout).expect("the example's result as JSON");
        assert_eq!(
            shape(&declared),
            shape(&real),
            "{name}: {declared} against {real}"
        );
        if *name != "diag" {
            assert_eq!(declared, real, "{name}");
        }
        // And through the engine's description probe.
        let probed = offload::Processor::at(&exe)
            .describe(offload::processor::DESCRIBE_TIMEOUT)
            .expect("probe");
        assert_eq!(probed, description);
    }
}

#[test]
fn binary_fields_are_cbor_byte_strings() {
    // Major type 2 is 0x40..=0x5f; an array of integers would be major type 4.
    let out = shell("offload encode < data/blur.json | offload-blur");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let result: Value = decode_one(&out.stdout, DecodeLimits::default()).expect("one item");
    assert!(
        matches!(field(&result, "rgba"), Some(Value::Bytes(_))),
        "blur's rgba"
    );
    let key = [0x64, b'r', b'g', b'b', b'a'];
    let at = out
        .stdout
        .windows(5)
        .position(|w| w == key)
        .expect("rgba key");
    assert_eq!(
        out.stdout[at + 5] >> 5,
        2,
        "the value after \"rgba\" has major type 2"
    );

    let out = shell("offload encode < data/mandelbrot.json | offload-mandelbrot");
    let result: Value = decode_one(&out.stdout, DecodeLimits::default()).expect("one item");
    assert!(
        matches!(field(&result, "rgba"), Some(Value::Bytes(_))),
        "mandelbrot's rgba"
    );

    let encoded =
        shell("echo '{\"echo\": {\"$bytes\": \"AAECAw==\"}}' | offload encode | offload-diag");
    let result: Value = decode_one(&encoded.stdout, DecodeLimits::default()).expect("one item");
    assert_eq!(
        field(&result, "echo"),
        Some(&Value::Bytes(vec![0, 1, 2, 3]))
    );
}

/// Asserts a processor refused its input the way the protocol asks: a non-zero exit and one
/// line on stderr naming the problem, never a panic trace.
fn assert_refused(out: &Output, says: &str) {
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "accepted bad input: {stderr}");
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(says), "{stderr:?} should say {says:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_input_gets_a_one_line_reason_and_a_non_zero_exit() {
    let blur = bin("offload-blur");
    assert_refused(
        &run_with_input(&blur, &[], b"\xff\xff\xff"),
        "not valid CBOR",
    );
    assert_refused(&run_with_input(&blur, &[], b""), "empty input");
    let mut wrong = Vec::new();
    ciborium::into_writer(&serde_json::json!({"width": 2}), &mut wrong).expect("encode");
    assert_refused(&run_with_input(&blur, &[], &wrong), "expected `image`");
    let mut truncated = wrong.clone();
    truncated.pop();
    assert_refused(&run_with_input(&blur, &[], &truncated), "truncated");
    let deep = [vec![0x81u8; 1000], vec![0x00]].concat();
    assert_refused(&run_with_input(&blur, &[], &deep), "nested deeper");
    assert_refused(
        &run_with_input(&blur, &["--json"], b"{not json"),
        "not valid JSON",
    );
    let bad_size =
        serde_json::json!({"width": 4, "height": 4, "radius": 1, "rgba": {"$bytes": "AAAA"}});
    assert_refused(
        &run_with_input(&blur, &["--json"], bad_size.to_string().as_bytes()),
        "expected 64",
    );

    // Too large: the limit comes from the environment here to keep the test small.
    let mut big = Vec::new();
    ciborium::into_writer(&serde_json::json!({"echo": "x".repeat(5000)}), &mut big)
        .expect("encode");
    let mut command = Command::new(bin("offload-diag"));
    command.env("OFFLOAD_MAX_INPUT_BYTES", "1000");
    let out = common::run_with_input(command, &big);
    assert_refused(&out, "over the limit of 1000 bytes");

    // The CBOR error report is on stdout too.
    let out = run_with_input(&blur, &[], &wrong);
    let report: offload::sdk::ErrorReport =
        decode_one(&out.stdout, DecodeLimits::default()).expect("error report");
    assert_eq!(report.kind.as_deref(), Some("invalid_input"));
}

#[test]
fn unknown_arguments_are_usage_errors() {
    let out = Command::new(bin("offload-blur"))
        .arg("--bogus")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown argument"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn progress_items_arrive_on_the_fd_when_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let progress = dir.path().join("progress.cbor");
    let line = format!(
        "echo '{{\"progress_steps\": 5}}' | OFFLOAD_PROGRESS_FD=7 offload-diag --json 7>'{}'",
        progress.display()
    );
    let out = shell(&line);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bytes = std::fs::read(&progress).expect("progress file");
    let mut rest = &bytes[..];
    let mut items = Vec::new();
    while !rest.is_empty() {
        let item: offload::sdk::ProgressItem =
            ciborium::from_reader(&mut rest).expect("a CBOR sequence of items");
        items.push(item);
    }
    let fractions: Vec<f64> = items.iter().map(|i| i.fraction).collect();
    assert_eq!(fractions, [0.2, 0.4, 0.6, 0.8, 1.0]);
    assert_eq!(items[0].message.as_deref(), Some("step 1 of 5"));
}

#[test]
fn nothing_breaks_without_a_progress_fd_or_with_a_closed_one() {
    for env in ["", "OFFLOAD_PROGRESS_FD=9", "OFFLOAD_PROGRESS_FD=nonsense"] {
        let out = shell(&format!(
            "echo '{{\"progress_steps\": 3, \"echo\": 1}}' | {env} offload-diag --json"
        ));
        assert!(out.status.success(), "{env}: {}", text(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(json["echo"], 1, "{env}");
    }
}

#[test]
fn a_panicking_processor_says_so_in_one_line() {
    let out = shell("echo '{\"fail\": \"panic\"}' | offload-diag --json");
    assert_eq!(out.status.code(), Some(70));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("internal error: asked to panic"),
        "{stderr}"
    );
}

/// A JSON value's shape: its keys and the types of its values, recursively (arrays by their
/// first element).
fn shape(value: &serde_json::Value) -> String {
    use serde_json::Value as J;
    match value {
        J::Null => "null".into(),
        J::Bool(_) => "bool".into(),
        J::Number(_) => "number".into(),
        J::String(_) => "string".into(),
        J::Array(items) => format!("[{}]", items.first().map_or(String::new(), shape)),
        J::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}: {}", shape(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

#[test]
fn declared_parameters_are_checked_by_the_sdk_in_both_modes() {
    let image = std::fs::read(common::root().join("data/images/plasma.jpg")).expect("sample");
    let input = |size: i64| {
        serde_json::json!({
            "image": {"$bytes": base64_of(&image)},
            "size": size,
        })
        .to_string()
    };
    let exe = bin("offload-thumbnail");
    // One process per job: exit 65 and a message naming the parameter and its range.
    let out = run_with_input(&exe, &["--json"], input(0).as_bytes());
    assert_eq!(out.status.code(), Some(65), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("parameter size: expected an integer from 1 to 8192, got 0"),
        "{}",
        text(&out.stderr)
    );
    let out = run_with_input(&exe, &["--json"], input(100).as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        (result["width"].as_u64(), result["height"].as_u64()),
        (Some(100), Some(75))
    );
    // On a persistent worker: the job fails as invalid input, and the worker goes on.
    let job =
        offload::Job::new(offload::Processor::at(&exe)).persistence(offload::Persistence::Always);
    let finished = common::on_main_context(|| async {
        let queue = offload::Queue::with_max_running(1);
        let handles: Vec<_> = [0, 64]
            .iter()
            .map(|size| {
                let input = Value::Map(vec![
                    (Value::Text("image".into()), Value::Bytes(image.clone())),
                    (Value::Text("size".into()), Value::Integer((*size).into())),
                ]);
                queue.submit::<_, Value>(&job, &input).expect("submit")
            })
            .collect();
        let mut finished = Vec::new();
        for handle in handles {
            finished.push(handle.finished().await);
        }
        finished
    });
    let error = finished[0].result.as_ref().expect_err("refused");
    let reported = error.reported.as_ref().expect("the processor's report");
    assert_eq!(reported.kind.as_deref(), Some("invalid_input"));
    assert!(
        reported.error.contains("parameter size"),
        "{}",
        reported.error
    );
    assert!(finished[1].result.is_ok(), "{:?}", finished[1].result);
    assert_eq!(
        finished[0].stats.worker.map(|w| w.worker),
        finished[1].stats.worker.map(|w| w.worker)
    );
}

fn base64_of(bytes: &[u8]) -> String {
    offload::sdk::json::cbor_to_json(&ciborium::Value::Bytes(bytes.to_vec()))["$bytes"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// An input field of the wrong type is refused naming the field and what it takes, in both
/// modes, whether the SDK decodes the input straight from its bytes (diag) or through a
/// value whose parameters it checked first (blur).
#[test]
fn a_field_of_the_wrong_type_is_named_in_the_jobs_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "diag",
            r#"{"sleep_ms": "long"}"#,
            r#"input.sleep_ms: unexpected shape: invalid type: string, expected integer (got the text "long")"#,
        ),
        (
            "diag",
            r#"{"probe": ["status:Pid", 3]}"#,
            "input.probe[1]: unexpected shape: invalid type: integer `3`, expected string (got the integer 3)",
        ),
        (
            "blur",
            r#"{"width": 1, "height": 1, "rgba": "AAAA"}"#,
            r#"input.rgba: unexpected shape: invalid type: string "AAAA", expected bytes (got the text "AAAA")"#,
        ),
    ];
    for (processor, input, says) in cases {
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, format!("{input}\n")).expect("write");
        for mode in ["--persistent", "--no-persistent"] {
            let out = common::offload()
                .args(["run", processor, mode, "--inputs"])
                .arg(&path)
                .output()
                .expect("run");
            let line: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("one JSON line");
            let context = format!("{processor} {mode} {input}: {line}");
            assert_eq!(line["status"], "failed", "{context}");
            assert_eq!(
                line["error"]["reported"]["kind"], "invalid_input",
                "{context}"
            );
            assert_eq!(line["error"]["reported"]["error"], says, "{context}");
            let message = line["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(says), "{context}");
        }
    }
}
