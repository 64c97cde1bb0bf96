//! The `offload` command as scripts use it: JSON lines in input order, exit status, files.

mod common;

use std::io::Write;
use std::process::Output;

use common::{offload, root};
use offload::sdk::decode::{decode_one, DecodeLimits};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn lines(out: &Output) -> Vec<serde_json::Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l:?}: {e}")))
        .collect()
}

fn write_lines(
    dir: &std::path::Path,
    name: &str,
    inputs: &[serde_json::Value],
) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).expect("create");
    for input in inputs {
        writeln!(file, "{input}").expect("write");
    }
    path
}

#[test]
fn run_prints_one_line_per_job_in_input_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Later inputs finish first, so order must come from the CLI, not from completion.
    let inputs: Vec<_> = (0..8)
        .map(|i| serde_json::json!({"echo": i, "sleep_ms": 160 - 20 * i}))
        .collect();
    let path = write_lines(dir.path(), "in.jsonl", &inputs);
    let out = offload()
        .args(["run", "diag", "-j", "4", "--inputs"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = lines(&out);
    assert_eq!(lines.len(), 8);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["job"], i);
        assert_eq!(line["status"], "ok");
        assert_eq!(line["result"]["echo"], i);
    }
}

#[test]
fn a_failed_job_gives_a_classified_error_and_exit_status_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inputs = [
        serde_json::json!({"echo": "fine"}),
        serde_json::json!({"fail": "exit:3", "stderr": "the disk is full\n"}),
        serde_json::json!({"fail": "segv"}),
    ];
    let path = write_lines(dir.path(), "in.jsonl", &inputs);
    let out = offload()
        .args(["run", "diag", "--inputs"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let lines = lines(&out);
    assert_eq!(lines[0]["status"], "ok");
    let failed = &lines[1];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["kind"], "failed");
    assert_eq!(failed["error"]["exit_code"], 3);
    assert_eq!(failed["error"]["signal"], serde_json::Value::Null);
    assert!(failed["error"]["stderr_tail"]
        .as_str()
        .expect("text")
        .contains("the disk is full"));
    assert!(failed["error"]["message"]
        .as_str()
        .expect("text")
        .contains("code 3"));
    assert_eq!(lines[2]["error"]["kind"], "killed");
    assert_eq!(lines[2]["error"]["signal"], libc::SIGSEGV);
}

#[test]
fn timeout_applies_to_each_job() {
    let mut command = offload();
    command.args(["run", "diag", "--timeout", "0.3", "--inputs", "-"]);
    let out = common::run_with_input(command, b"{\"fail\": \"hang\"}\n{\"echo\": 2}\n");
    assert_eq!(out.status.code(), Some(1));
    let lines = lines(&out);
    assert_eq!(lines[0]["error"]["kind"], "timed_out");
    assert_eq!(lines[1]["result"]["echo"], 2);
}

#[test]
fn output_dir_gets_one_complete_cbor_file_per_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("results");
    let inputs: Vec<_> = (0..5)
        .map(|i| serde_json::json!({"echo": {"$bytes": "AAEC"}, "sleep_ms": i}))
        .collect();
    let path = write_lines(dir.path(), "in.jsonl", &inputs);
    let out = offload()
        .args(["run", "diag", "--inputs"])
        .arg(&path)
        .arg("--output-dir")
        .arg(&out_dir)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    for (i, line) in lines(&out).iter().enumerate() {
        let file = out_dir.join(format!("{i}.cbor"));
        assert_eq!(line["output"], file.display().to_string());
        assert!(
            line.get("result").is_none(),
            "the result is in the file, not the line"
        );
        let value: ciborium::Value = decode_one(
            &std::fs::read(&file).expect("file"),
            DecodeLimits::default(),
        )
        .expect("one CBOR item");
        let echo = value
            .as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some("echo")));
        assert_eq!(
            echo.map(|(_, v)| v),
            Some(&ciborium::Value::Bytes(vec![0, 1, 2]))
        );
    }
    let names: Vec<String> = std::fs::read_dir(&out_dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 5, "no partial files are left: {names:?}");
}

#[test]
fn input_files_json_and_cbor_keep_command_line_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines_file = write_lines(
        dir.path(),
        "two.jsonl",
        &[
            serde_json::json!({"echo": "b"}),
            serde_json::json!({"echo": "c"}),
        ],
    );
    let json_file = dir.path().join("one.json");
    std::fs::write(&json_file, r#"{"echo": "a"}"#).expect("write");
    let cbor_file = dir.path().join("last.cbor");
    let mut bytes = Vec::new();
    ciborium::into_writer(&serde_json::json!({"echo": "d"}), &mut bytes).expect("encode");
    std::fs::write(&cbor_file, bytes).expect("write");
    let out = offload()
        .args(["run", "diag", "--input"])
        .arg(&json_file)
        .arg("--inputs")
        .arg(&lines_file)
        .arg("--input")
        .arg(&cbor_file)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let echoes: Vec<_> = lines(&out)
        .iter()
        .map(|l| l["result"]["echo"].clone())
        .collect();
    assert_eq!(echoes, ["a", "b", "c", "d"]);
}

#[test]
fn bad_inputs_and_unknown_processors_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.jsonl");
    std::fs::write(&path, "{\"echo\": 1}\n{oops\n").expect("write");
    let out = offload()
        .args(["run", "diag", "--inputs"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("line 2"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());

    let out = offload()
        .args(["run", "no-such-processor", "--input", "-"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("offload-no-such-processor") && stderr.contains("OFFLOAD_PROCESSOR_PATH"),
        "{stderr}"
    );
}

#[test]
fn list_shows_the_processors_with_their_summaries() {
    let out = offload().args(["list", "--json"]).output().expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let found = lines(&out);
    for name in ["mandelbrot", "blur", "jitter", "diag"] {
        let entry = found
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {found:?}"));
        assert!(
            entry["description"]["summary"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{entry}"
        );
    }
}

#[test]
fn encode_and_decode_are_inverse() {
    let original = std::fs::read(root().join("data/blur.json")).expect("read");
    let mut encode = offload();
    encode.arg("encode");
    let encoded = common::run_with_input(encode, &original);
    assert!(encoded.status.success());
    assert_eq!(
        encoded.stdout,
        std::fs::read(root().join("data/blur.cbor")).expect("read"),
        "same bytes as blur.cbor"
    );
    let mut decode = offload();
    decode.arg("decode");
    let decoded = common::run_with_input(decode, &encoded.stdout);
    let back: serde_json::Value = serde_json::from_slice(&decoded.stdout).expect("json");
    let original: serde_json::Value = serde_json::from_slice(&original).expect("json");
    assert_eq!(back, original);
}

#[test]
fn demo_renders_a_mosaic_png() {
    let dir = tempfile::tempdir().expect("tempdir");
    let png_path = dir.path().join("m.png");
    let out = offload()
        .args([
            "demo",
            "--width",
            "320",
            "--height",
            "240",
            "--columns",
            "8",
            "--rows",
            "8",
            "--max-iter",
            "200",
            "--out",
        ])
        .arg(&png_path)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (width, height, channels, pixels) = common::read_png(&png_path);
    assert_eq!((width, height, channels), (320, 240, 4));
    let at = |x: usize, y: usize| &pixels[(y * 320 + x) * 4..(y * 320 + x) * 4 + 4];
    // The view spans -2.4..0.8 by -1.2..1.2: (-0.2, 0) is inside the set, the corner is not.
    assert_eq!(at(220, 120), [0, 0, 0, 255]);
    assert_ne!(at(0, 0), [0, 0, 0, 255]);
    let black = pixels.chunks(4).filter(|p| p == &[0, 0, 0, 255]).count();
    assert!(
        black > 320 * 240 / 10 && black < 320 * 240 / 2,
        "{black} black pixels"
    );
}

/// `--input FILE.cbor` hands a processor exactly one well-formed item, or refuses the file with
/// the reason, before any job runs.
#[test]
fn a_cbor_input_file_must_hold_exactly_one_item() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&str, &[u8], &str); 4] = [
        ("empty.cbor", b"", "no CBOR data item (empty input)"),
        ("garbage.cbor", b"\xff\xfe not cbor", "not valid CBOR"),
        (
            "trailing.cbor",
            b"\x01\x02\x03",
            "2 trailing bytes after the CBOR item",
        ),
        ("truncated.cbor", b"\x63ab", "truncated CBOR"),
    ];
    for (name, bytes, reason) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        let out = offload()
            .args(["run", "diag", "--input"])
            .arg(&path)
            .output()
            .expect("run");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(reason) && err.contains(name), "{name}: {err}");
        assert!(out.stdout.is_empty(), "{name}: no job ran");
    }
    let good = dir.path().join("good.cbor");
    std::fs::write(&good, b"\xa1\x64echo\x07").expect("write"); // {"echo": 7}
    let out = offload()
        .args(["run", "diag", "--input"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(lines(&out)[0]["result"]["echo"], 7);
}

/// A file over the input limit is refused by its size, before it is read (a sparse 3 GiB file
/// of zeros would otherwise be read whole, then refused for its trailing bytes), and the error
/// says how to raise the limit.
#[test]
fn an_input_file_over_the_limit_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("big.cbor");
    let file = std::fs::File::create(&big).expect("create");
    file.set_len(3 << 30).expect("a sparse file");
    let out = offload()
        .args(["run", "diag", "--input"])
        .arg(&big)
        .output()
        .expect("run");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("3221225472 bytes, over the input limit of 1073741824 bytes")
            && err.contains("--max-input"),
        "{err}"
    );
    // And the limit can be raised (here lowered, to keep the test small).
    let small = dir.path().join("small.json");
    std::fs::write(&small, r#"{"echo": "0123456789"}"#).expect("write");
    let out = offload()
        .args(["run", "diag", "--max-input", "8", "--input"])
        .arg(&small)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("over the input limit of 8 bytes"));
}

/// A processor's own error report (exit 65, `{"error": ..., "kind": "invalid_input"}`, or a
/// worker's error frame) reaches the line as `error.reported`, apart from offload's kind.
#[test]
fn a_processors_own_error_report_is_kept_with_its_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inputs = write_lines(dir.path(), "in.jsonl", &[serde_json::json!({"bogus": 1})]);
    for mode in ["--persistent", "--no-persistent"] {
        let out = offload()
            .args(["run", "diag", mode, "--inputs"])
            .arg(&inputs)
            .output()
            .expect("run");
        let line = &lines(&out)[0];
        assert_eq!(line["error"]["kind"], "failed", "{mode}: {line}");
        assert_eq!(
            line["error"]["reported"]["kind"], "invalid_input",
            "{mode}: {line}"
        );
        assert!(
            line["error"]["reported"]["error"]
                .as_str()
                .is_some_and(|m| m.contains("bogus")),
            "{mode}: {line}"
        );
    }
}

/// A name means `offload-NAME` only (PROTOCOL.md section 3): `offload run cat` does not run
/// `/bin/cat`, and says how to run a program by its path.
#[test]
fn a_name_is_looked_up_with_its_prefix_only() {
    let out = offload()
        .args(["run", "cat", "--inputs", "-"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("looked for offload-cat in") && err.contains("/usr/bin/cat"),
        "{err}"
    );
}

/// `--retries N` runs a failed job again, up to N more times, and the line says how many
/// tries it took; an input the processor called invalid is not tried again.
#[test]
fn retries_run_a_failed_job_again_and_say_how_many_tries() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    // Fails (exit 1) until it has run NEEDED times for an input, then answers 1 (CBOR 0x01).
    let flaky = dir.path().join("offload-flaky");
    std::fs::write(
        &flaky,
        "#!/bin/sh\n\
         key=$(od -An -tx1 | tr -d ' \\n')\n\
         count=\"$OFFLOAD_TEST_DIR/count-$key\"\n\
         n=$(cat \"$count\" 2>/dev/null || echo 0)\n\
         n=$((n + 1))\n\
         echo $n > \"$count\"\n\
         [ $n -ge $OFFLOAD_TEST_NEEDED ] || { echo \"try $n fails\" >&2; exit 1; }\n\
         printf '\\001'\n",
    )
    .expect("write");
    std::fs::set_permissions(&flaky, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let inputs = write_lines(
        dir.path(),
        "in.jsonl",
        &[serde_json::json!(1), serde_json::json!(2)],
    );
    let run = |retries: &str, needed: u32| {
        for entry in std::fs::read_dir(dir.path()).expect("dir").flatten() {
            if entry.file_name().to_string_lossy().starts_with("count-") {
                std::fs::remove_file(entry.path()).expect("reset");
            }
        }
        let out = offload()
            .arg("run")
            .arg(&flaky)
            .args(["--retries", retries, "--inputs"])
            .arg(&inputs)
            .args([
                "--env",
                &format!("OFFLOAD_TEST_DIR={}", dir.path().display()),
            ])
            .args(["--env", &format!("OFFLOAD_TEST_NEEDED={needed}")])
            .output()
            .expect("run");
        (out.status.code(), lines(&out))
    };
    // Needs 3 tries; 2 retries allow them.
    let (code, lines_ok) = run("2", 3);
    assert_eq!(code, Some(0), "{lines_ok:?}");
    for line in &lines_ok {
        assert_eq!(line["status"], "ok", "{line}");
        assert_eq!(line["tries"], 3, "{line}");
    }
    // Needs 3 tries; 1 retry is not enough: the last failure is reported, after 2 tries.
    let (code, lines_failed) = run("1", 3);
    assert_eq!(code, Some(1));
    for line in &lines_failed {
        assert_eq!(line["error"]["kind"], "failed", "{line}");
        assert_eq!(line["tries"], 2, "{line}");
        assert!(line["error"]["stderr_tail"]
            .as_str()
            .is_some_and(|t| t.contains("try 2 fails")));
    }
    // An input the processor calls invalid is not tried again.
    let bad = write_lines(dir.path(), "bad.jsonl", &[serde_json::json!({"bogus": 1})]);
    let out = offload()
        .args([
            "run",
            "diag",
            "--no-persistent",
            "--retries",
            "3",
            "--inputs",
        ])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(lines(&out)[0]["tries"], 1);
}
