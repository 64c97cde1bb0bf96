//! The `offload` command as scripts use it: JSON lines in input order, exit status, files.

mod common;

use std::io::Write;
use std::process::Output;

use common::{offload, png_size, root};
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
    // The echo after the hung job has the same timeout: ample for it on a loaded machine.
    command.args(["run", "diag", "--timeout", "2", "--inputs", "-"]);
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
fn bad_inputs_stop_the_reading_and_unknown_processors_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.jsonl");
    std::fs::write(&path, "{\"echo\": 1}\n{oops\n").expect("write");
    let out = offload()
        .args(["run", "diag", "--inputs"])
        .arg(&path)
        .output()
        .expect("run");
    // Inputs are read as jobs run (streaming): the job read before the bad line ran and
    // was printed; reading stopped at the bad line, and the exit status says so.
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("line 2"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(lines(&out).len(), 1);

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

/// Numbers come back as they went in: 1,000 random doubles through `offload run --inputs` and
/// a worker, and through `offload encode | offload decode`, to the bit (110 of them came back
/// one unit in the last place off before serde_json's `float_roundtrip`); an integer beyond
/// 64 bits is refused, by name, instead of becoming a float.
#[test]
fn doubles_come_back_to_the_bit_and_integers_beyond_64_bits_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let doubles: Vec<f64> = (0..1000)
        .map(|_| {
            // xorshift64*, uniform in [0, 1): the doubles programs write most.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect();
    let inputs: Vec<_> = doubles
        .iter()
        .map(|x| serde_json::json!({"echo": x}))
        .collect();
    let file = write_lines(dir.path(), "in.jsonl", &inputs);
    let out = offload()
        .args(["run", "diag", "-j", "2", "--inputs"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let echoed: Vec<f64> = lines(&out)
        .iter()
        .map(|l| l["result"]["echo"].as_f64().expect("a number"))
        .collect();
    let off: Vec<(f64, f64)> = doubles
        .iter()
        .zip(&echoed)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .map(|(a, b)| (*a, *b))
        .collect();
    assert_eq!(echoed.len(), 1000);
    assert!(off.is_empty(), "{} came back changed: {off:?}", off.len());

    let text_in = serde_json::to_string(&doubles).expect("json");
    let mut encode = offload();
    encode.arg("encode");
    let encoded = common::run_with_input(encode, text_in.as_bytes());
    assert!(encoded.status.success());
    let mut decode = offload();
    decode.arg("decode");
    let decoded = common::run_with_input(decode, &encoded.stdout);
    let back: Vec<f64> = serde_json::from_slice(&decoded.stdout).expect("json");
    assert!(
        back.iter()
            .zip(&doubles)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "encode | decode changed a double"
    );

    // 2^64 and -2^63 - 1: refused by encode, by a JSON Lines line and by an --input file.
    let mut encode = offload();
    encode.arg("encode");
    let refused = common::run_with_input(encode, b"{\"n\": 18446744073709551616}");
    assert_eq!(refused.status.code(), Some(2));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("the integer 18446744073709551616 is outside the 64-bit range"),
        "{stderr}"
    );
    let big = dir.path().join("big.jsonl");
    std::fs::write(&big, "{\"echo\": 1}\n{\"echo\": -9223372036854775809}\n").expect("write");
    let out = offload()
        .args(["run", "diag", "--inputs"])
        .arg(&big)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("line 2: the integer -9223372036854775809 is outside"),
        "{stderr}"
    );
    assert_eq!(lines(&out).len(), 1, "the line before it ran");
    let single = dir.path().join("big.json");
    std::fs::write(&single, "[18446744073709551615, 18446744073709551616]").expect("write");
    let out = offload()
        .args(["run", "diag", "--input"])
        .arg(&single)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("the integer 18446744073709551616 is outside"),
        "{}",
        text(&out.stderr)
    );
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

/// An input the queue refuses (its CBOR is over `--max-input`, though its JSON line was
/// not) is a `could_not_start` line with its `stats`, like every other line.
#[test]
fn a_refused_input_has_a_line_with_stats() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 150 doubles: 901 bytes of JSON, 1,353 of CBOR.
    let big = format!("[{}1e300]", "1e300,".repeat(149));
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, format!("{{\"echo\": 1}}\n{big}\n")).expect("write");
    let out = offload()
        .args(["run", "diag", "--max-input", "1000", "--inputs"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let lines = lines(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1]["error"]["kind"], "could_not_start", "{}", lines[1]);
    assert_eq!(lines[1]["stats"]["wall_ms"], 0.0, "{}", lines[1]);
    assert_eq!(lines[1]["stats"]["worker"], serde_json::Value::Null);
    assert!(
        lines[1]["stats"].get("peak_rss_bytes").is_some(),
        "{}",
        lines[1]
    );
}

/// A processor found by name that cannot run is not "not found": the message names the file
/// and says what is wrong with it (and how to fix a missing execute bit).
#[test]
fn a_processor_by_name_that_is_not_executable_is_named_as_such() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("offload-plain");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("write");
    std::fs::create_dir(dir.path().join("offload-folder")).expect("mkdir");
    for (name, says) in [
        (
            "plain",
            "offload-plain is not executable: make it executable with chmod +x",
        ),
        ("folder", "offload-folder is a directory"),
    ] {
        let out = offload()
            .env("OFFLOAD_PROCESSOR_PATH", dir.path())
            .args(["run", name, "--inputs", "-"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("processor \"{name}\" cannot run: ")) && err.contains(says),
            "{err}"
        );
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }
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

/// Jobs start as input lines arrive: the first result is out before the producer is done.
#[test]
fn results_stream_out_before_the_producer_is_done() {
    use std::io::BufRead;
    let mut child = offload()
        .args(["run", "diag", "--inputs", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    writeln!(stdin, "{{\"echo\": 1}}").expect("write");
    stdin.flush().expect("flush");
    // The producer has not finished (stdin is open): the first line must come anyway.
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read");
    let first: serde_json::Value = serde_json::from_str(&first).expect("JSON");
    assert_eq!(first["result"]["echo"], 1);
    writeln!(stdin, "{{\"echo\": 2}}").expect("write");
    drop(stdin);
    let mut second = String::new();
    stdout.read_line(&mut second).expect("read");
    let second: serde_json::Value = serde_json::from_str(&second).expect("JSON");
    assert_eq!(second["result"]["echo"], 2);
    assert!(child.wait().expect("wait").success());
}

#[test]
fn unordered_output_prints_each_job_as_it_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inputs = write_lines(
        dir.path(),
        "in.jsonl",
        &[
            serde_json::json!({"echo": 0, "sleep_ms": 600}),
            serde_json::json!({"echo": 1}),
        ],
    );
    let out = offload()
        .args(["run", "diag", "-j", "2", "--unordered", "--inputs"])
        .arg(&inputs)
        .output()
        .expect("run");
    let jobs: Vec<_> = lines(&out).iter().map(|l| l["job"].clone()).collect();
    assert_eq!(jobs, [1, 0]);
}

/// While a slow first job holds up the ordered output, offload stops reading once a bounded
/// number of jobs wait (the running ones plus 256): a producer of 600 KB of lines gets only
/// that far (plus the pipe's and the reader's buffers), and every job still runs, in order.
#[test]
fn a_slow_first_job_stops_the_reading_not_the_memory_bound() {
    let mut child = offload()
        .args(["run", "diag", "-j", "2", "--inputs", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = 20_000;
    let writer = {
        let written = written.clone();
        std::thread::spawn(move || {
            let first = "{\"echo\": 0, \"sleep_ms\": 3000}\n".to_owned();
            let _ = stdin.write_all(first.as_bytes());
            for i in 1..count {
                // 30 bytes a line.
                let line = format!("{{\"echo\": {i:>18}}}\n");
                if stdin.write_all(line.as_bytes()).is_err() {
                    return;
                }
                written.fetch_add(line.len(), std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let so_far = written.load(std::sync::atomic::Ordering::SeqCst);
    // 258 lines of 30 bytes, the reader's 8 KiB and the pipe's 64 KiB: about 80 KB.
    assert!(
        so_far < 150_000,
        "{so_far} bytes read while the first job ran (of {})",
        30 * count
    );
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out)
        .expect("read");
    writer.join().expect("writer");
    assert!(child.wait().expect("wait").success());
    let jobs: Vec<u64> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|l| l["job"].as_u64())
        .collect();
    assert_eq!(jobs, (0..count as u64).collect::<Vec<_>>());
}

/// The job log: one JSON line per job, with its number, input digest, status and kind, start,
/// times, exit code or signal, and tries.
#[test]
fn the_job_log_has_one_entry_per_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inputs = write_lines(
        dir.path(),
        "in.jsonl",
        &[
            serde_json::json!({"echo": 0}),
            serde_json::json!({"fail": "exit:3"}),
            serde_json::json!({"fail": "segv"}),
        ],
    );
    let log = dir.path().join("jobs.log");
    let out = offload()
        .args(["run", "diag", "--no-persistent", "--inputs"])
        .arg(&inputs)
        .arg("--joblog")
        .arg(&log)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let entries: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .expect("the log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(entries.len(), 3);
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry["job"], i);
        assert_eq!(entry["input"].as_str().map(str::len), Some(16), "{entry}");
        assert!(
            entry["start"].as_f64().is_some_and(|t| t > 1.7e9),
            "{entry}"
        );
        assert!(entry["wall_ms"].as_f64().is_some(), "{entry}");
        assert_eq!(entry["tries"], 1);
    }
    assert_eq!(entries[0]["status"], "ok");
    assert_eq!(entries[0]["exit_code"], 0);
    assert_eq!(entries[1]["kind"], "failed");
    assert_eq!(entries[1]["exit_code"], 3);
    assert_eq!(entries[2]["kind"], "killed");
    assert_eq!(entries[2]["signal"], 11);
}

/// After `kill -9` of `offload run` mid-batch, a rerun with --resume runs only the jobs not
/// done, and the two outputs together hold every job exactly once; --resume-failed runs the
/// failed ones again, and a changed input runs again.
#[test]
fn resume_after_kill_9_runs_each_job_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let count = 30;
    let inputs: Vec<_> = (0..count)
        .map(|i| serde_json::json!({"echo": i, "sleep_ms": 200}))
        .collect();
    let file = write_lines(dir.path(), "in.jsonl", &inputs);
    let log = dir.path().join("jobs.log");
    let first_out = dir.path().join("first.out");
    let child = offload()
        .args(["run", "diag", "-j", "2", "--inputs"])
        .arg(&file)
        .arg("--joblog")
        .arg(&log)
        .stdout(std::fs::File::create(&first_out).expect("create"))
        .spawn()
        .expect("spawn");
    // Killed once it has printed three lines.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(&first_out).map_or(0, |t| t.lines().count()) < 3 {
        assert!(std::time::Instant::now() < deadline, "no lines");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: killing a process this test started.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    let mut child = child;
    let _ = child.wait();
    let jobs_of = |text: &str| -> Vec<u64> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|l| l["job"].as_u64())
            .collect()
    };
    let out = offload()
        .args(["run", "diag", "-j", "2", "--resume", "--inputs"])
        .arg(&file)
        .arg("--joblog")
        .arg(&log)
        .output()
        .expect("rerun");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Read once the resume had the log: the killed run's log writer had written everything.
    let first = jobs_of(&std::fs::read_to_string(&first_out).expect("first output"));
    assert!(
        !first.is_empty() && first.len() < count,
        "killed mid-batch: {first:?}"
    );
    let second = jobs_of(&text(&out.stdout));
    let mut all: Vec<u64> = first.iter().chain(&second).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..count as u64).collect::<Vec<_>>(),
        "every job exactly once"
    );

    // Everything is done now: another --resume runs nothing.
    let out = offload()
        .args(["run", "diag", "--resume", "--inputs"])
        .arg(&file)
        .arg("--joblog")
        .arg(&log)
        .output()
        .expect("rerun");
    assert!(out.status.success() && out.stdout.is_empty());

    // A failed job: --resume keeps it done, --resume-failed runs it again; a changed input
    // runs again under --resume.
    let file = write_lines(
        dir.path(),
        "in2.jsonl",
        &[
            serde_json::json!({"fail": "exit:3"}),
            serde_json::json!({"echo": 1}),
        ],
    );
    let log = dir.path().join("jobs2.log");
    let run = |flag: Option<&str>, file: &std::path::Path| {
        let mut command = offload();
        command.args(["run", "diag", "--inputs"]).arg(file);
        command.arg("--joblog").arg(&log);
        if let Some(flag) = flag {
            command.arg(flag);
        }
        jobs_of(&text(&command.output().expect("run").stdout))
    };
    assert_eq!(run(None, &file), [0, 1]);
    assert_eq!(run(Some("--resume"), &file), Vec::<u64>::new());
    assert_eq!(run(Some("--resume-failed"), &file), [0]);
    let changed = write_lines(
        dir.path(),
        "in3.jsonl",
        &[
            serde_json::json!({"fail": "exit:3"}),
            serde_json::json!({"echo": 2}),
        ],
    );
    assert_eq!(run(Some("--resume"), &changed), [1]);
}

/// Runs diag over `inputs` at -j 2 with `--halt HALT`: exit status, lines, stderr, seconds.
fn run_halting(
    halt: &str,
    inputs: &[serde_json::Value],
) -> (Option<i32>, Vec<serde_json::Value>, String, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_lines(dir.path(), "in.jsonl", inputs);
    let started = std::time::Instant::now();
    let out = offload()
        .args([
            "run",
            "diag",
            "-j",
            "2",
            &format!("--halt={halt}"),
            "--inputs",
        ])
        .arg(&path)
        .output()
        .expect("run");
    let took = started.elapsed().as_secs_f64();
    (out.status.code(), lines(&out), text(&out.stderr), took)
}

#[test]
fn halt_soon_lets_the_running_jobs_end_and_starts_no_more() {
    use serde_json::json;
    // Job 0 runs for 1.5 s; job 1 fails at once; 20 more 1.5 s jobs would take 15 s at -j 2.
    let mut inputs = vec![
        json!({"sleep_ms": 1500, "echo": 0}),
        json!({"fail": "exit"}),
    ];
    inputs.extend((2..22).map(|i| json!({"sleep_ms": 1500, "echo": i})));
    let (code, lines, stderr, took) = run_halting("soon,fail=1", &inputs);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("halted by --halt soon,fail=1"), "{stderr}");
    // The running job ended as usual: not cancelled.
    assert_eq!(lines[0]["status"], "ok", "{lines:?}");
    assert_eq!(lines[0]["result"]["echo"], 0);
    assert_eq!(lines[1]["error"]["kind"], "failed");
    // At most the job that took job 1's slot before the failure was seen also ran.
    assert!(lines.len() <= 3, "{} lines: {lines:?}", lines.len());
    assert!(
        lines.iter().all(|l| l["status"] == "ok" || l["job"] == 1),
        "{lines:?}"
    );
    // The 20 more would take 15 s: not started.
    assert!(took < 12.0, "took {took:.1} s");
}

#[test]
fn halt_now_cancels_the_running_jobs() {
    use serde_json::json;
    // Job 0 would run for 120 s; job 1 fails after 300 ms.
    let mut inputs = vec![
        json!({"sleep_ms": 120_000, "echo": 0}),
        json!({"sleep_ms": 300, "fail": "exit"}),
    ];
    inputs.extend((2..10).map(|i| json!({"sleep_ms": 120_000, "echo": i})));
    let (code, lines, stderr, took) = run_halting("now,fail=1", &inputs);
    assert_eq!(code, Some(3), "{stderr}");
    assert_eq!(lines[0]["error"]["kind"], "cancelled", "{lines:?}");
    assert_eq!(lines[1]["error"]["kind"], "failed", "{lines:?}");
    assert!(lines.len() <= 3, "{lines:?}");
    assert!(
        took < 60.0,
        "took {took:.1} s: the running job was not cancelled"
    );

    // A percentage of the inputs: 2 failures of 10 reach 20%, 1 does not.
    let mut inputs: Vec<_> = (0..10).map(|i| json!({"echo": i})).collect();
    inputs[3] = json!({"fail": "exit"});
    let (code, lines, stderr, _) = run_halting("soon,fail=20%", &inputs);
    assert_eq!((code, lines.len()), (Some(1), 10), "{stderr}");
    inputs[4] = json!({"fail": "exit"});
    let (code, _, stderr, _) = run_halting("soon,fail=20%", &inputs);
    assert_eq!(code, Some(3), "{stderr}");

    // `now,success=1`: the first success ends the batch, and the jobs it cancels are not
    // failures of their own (exit status 0).
    let mut inputs = vec![json!({"echo": 0})];
    inputs.extend((1..6).map(|i| json!({"sleep_ms": 120_000, "echo": i})));
    let (code, lines, stderr, took) = run_halting("now,success=1", &inputs);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(lines[0]["status"], "ok");
    assert!(took < 60.0, "took {took:.1} s");

    // A bad value is refused before anything runs.
    let (code, lines, stderr, _) = run_halting("later,fail=1", &inputs);
    assert_eq!((code, lines.len()), (Some(2), 0));
    assert!(stderr.contains("soon|now"), "{stderr}");
}

#[test]
fn files_in_files_out_with_parameters_checked_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("thumbs");
    let images = root().join("data/images");
    let files: Vec<std::path::PathBuf> = ["plasma.jpg", "portrait.jpg", "glow.png", "notes.txt"]
        .iter()
        .map(|name| images.join(name))
        .collect();
    let run = |params: &[&str]| {
        offload()
            .args(["run", "thumbnail", "--files"])
            .args(&files)
            .args(params.iter().flat_map(|p| ["--param", p]))
            .arg("--output-dir")
            .arg(&out_dir)
            .output()
            .expect("run")
    };
    // Parameters are checked before anything runs.
    let out = run(&["size=9000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("parameter size: expected an integer from 1 to 8192, got 9000"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["colour=red"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no such parameter (it has: size, format, quality, max_pixels)"),
        "{}",
        text(&out.stderr)
    );
    assert!(!out_dir.exists() || std::fs::read_dir(&out_dir).expect("dir").next().is_none());

    // One job per file it takes; the text file is reported by name, the others run.
    let out = run(&["size=100"]);
    assert_eq!(out.status.code(), Some(1), "a file was skipped");
    assert!(
        text(&out.stderr).contains("skipped") && text(&out.stderr).contains("notes.txt"),
        "{}",
        text(&out.stderr)
    );
    let lines = lines(&out);
    assert_eq!(lines.len(), 3, "{lines:?}");
    let expected = [
        ("plasma.png", (100, 75)),
        ("portrait.png", (75, 100)),
        ("glow.png", (100, 63)),
    ];
    for (line, (name, size)) in lines.iter().zip(expected) {
        assert_eq!(line["status"], "ok", "{line}");
        let path = out_dir.join(name);
        assert_eq!(line["output"], path.display().to_string());
        let bytes = std::fs::read(&path).expect("the output file");
        assert_eq!(png_size(&bytes), Some(size), "{name}");
        assert_eq!(line["result"]["width"], size.0, "{line}");
        assert!(
            line["result"].get("image").is_none(),
            "the bytes went to the file"
        );
    }

    // Run again: nothing is overwritten, the new outputs get numbered names; a parameter
    // changes what the processor receives (JPEG out, with its extension).
    let before = std::fs::read(out_dir.join("plasma.png")).expect("read");
    let out = run(&["size=50", "format=jpeg"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        std::fs::read(out_dir.join("plasma.png")).expect("read"),
        before
    );
    let jpeg = std::fs::read(out_dir.join("plasma.jpeg")).expect("a JPEG output");
    assert!(jpeg.starts_with(&[0xFF, 0xD8, 0xFF]), "JPEG bytes");
    let out = run(&["size=60"]);
    assert_eq!(out.status.code(), Some(1));
    let again = std::fs::read(out_dir.join("plasma-2.png")).expect("a numbered output");
    assert_eq!(png_size(&again), Some((60, 45)));
    // Outputs are ordinary files, and no temporary one is left.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out_dir.join("plasma-2.png"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
    assert!(std::fs::read_dir(&out_dir).expect("dir").all(|e| !e
        .expect("entry")
        .file_name()
        .to_string_lossy()
        .ends_with(".partial")));
}

#[test]
fn blur_takes_image_files_too_and_keeps_their_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = offload()
        .args(["run", "blur", "--param", "radius=3", "--files"])
        .arg(root().join("data/images/glow.png"))
        .arg(root().join("data/images/portrait.jpg"))
        .arg("--output-dir")
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let glow = std::fs::read(dir.path().join("glow.png")).expect("an output");
    assert_eq!(png_size(&glow), Some((320, 200)));
    let portrait = std::fs::read(dir.path().join("portrait.png")).expect("an output");
    assert_eq!(png_size(&portrait), Some((480, 640)));
    // A wrong radius is refused before anything runs.
    let refused = offload()
        .args(["run", "blur", "--param", "radius=5000", "--files"])
        .arg(root().join("data/images/glow.png"))
        .arg("--output-dir")
        .arg(dir.path())
        .output()
        .expect("run");
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("parameter radius"),
        "{}",
        text(&refused.stderr)
    );
}

/// A line or log entry with what changes from run to run (times, memory, pids, an output's
/// digest) replaced by `N`, and nothing else touched: the key order stays as printed.
fn masked(text: &str) -> String {
    const NUMBERS: [&str; 8] = [
        "wall_ms",
        "cpu_ms",
        "peak_rss_bytes",
        "startup_ms",
        "start",
        "pid",
        "started_ns",
        "finished_ns",
    ];
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('"') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let key = NUMBERS
            .iter()
            .map(|key| format!("\"{key}\":"))
            .chain(["\"output_digest\":".to_owned(), "\"cpu_share\":".to_owned()])
            .find(|key| rest.starts_with(key.as_str()));
        let Some(key) = key else {
            out.push('"');
            rest = &rest[1..];
            continue;
        };
        out.push_str(&key);
        out.push('N');
        rest = &rest[key.len()..];
        let value_len = if key == "\"output_digest\":" || key == "\"cpu_share\":" {
            // A string (or null): what the machine's scheduling allows.
            match rest.strip_prefix('"') {
                Some(text) => text.find('"').map_or(rest.len(), |end| end + 2),
                None => rest.find([',', '}']).unwrap_or(rest.len()),
            }
        } else {
            rest.find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
                .unwrap_or(rest.len())
        };
        rest = &rest[value_len..];
    }
    out.push_str(rest);
    out
}

/// The exact text of the lines and log entries of each kind, as scripts read them: key order
/// included (other tests parse the lines, which would not notice a change of order).
#[test]
fn lines_and_log_entries_keep_their_exact_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        let out = offload()
            .current_dir(dir.path())
            .args(args)
            .output()
            .expect("run");
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        let _ = std::fs::remove_file(dir.path().join("log"));
        (out.status.code(), masked(&text(&out.stdout)), masked(&log))
    };
    let stats = r#""stats":{"wall_ms":N,"cpu_ms":N,"peak_rss_bytes":N,"worker":null,"memory_limit":null,"host":null,"cpu_share":N}"#;

    // Each kind of job line, with --retries' "tries"; the refused input (its CBOR is over
    // --max-input, its JSON is not) is not tried again.
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"echo\":\"a\"}\n{\"fail\":\"exit:3\"}\n{\"fail\":\"error:nope\"}\n\
         {\"echo\":[1e300,1e300,1e300,1e300,1e300,1e300]}\n",
    )
    .expect("write");
    let (code, lines, log) = run(&[
        "run",
        "diag",
        "-j",
        "1",
        "--no-persistent",
        "--retries",
        "1",
        "--max-input",
        "60",
        "--joblog",
        "log",
        "--inputs",
        "in.jsonl",
    ]);
    assert_eq!(code, Some(1), "{lines}");
    let expected = [
        format!(
            r#"{{"job":0,"status":"ok","result":{{"echo":"a","pid":N,"started_ns":N,"finished_ns":N}},{stats},"tries":1}}"#
        ),
        format!(
            r#"{{"job":1,"status":"failed","error":{{"kind":"failed","message":"exited with code 3: offload-diag: exiting with code 3","exit_code":3,"signal":null,"stderr_tail":"offload-diag: exiting with code 3\n"}},{stats},"tries":2}}"#
        ),
        format!(
            r#"{{"job":2,"status":"failed","error":{{"kind":"failed","message":"exited with code 1: nope","exit_code":1,"signal":null,"stderr_tail":"offload-diag: nope\n","reported":{{"error":"nope","kind":"failed"}}}},{stats},"tries":2}}"#
        ),
        format!(
            r#"{{"job":3,"status":"failed","error":{{"kind":"could_not_start","message":"the job's input is 61 bytes, over the limit of 60 bytes","exit_code":null,"signal":null,"stderr_tail":""}},{stats}}}"#
        ),
    ];
    assert_eq!(lines, expected.join("\n") + "\n");
    let expected = [
        r#"{"job":0,"input":"346270f9be8b73eb","status":"ok","kind":null,"start":N,"wall_ms":N,"cpu_ms":N,"exit_code":0,"signal":null,"tries":1,"host":null}"#,
        r#"{"job":1,"input":"38121ca478f36435","status":"failed","kind":"failed","start":N,"wall_ms":N,"cpu_ms":N,"exit_code":3,"signal":null,"tries":2,"host":null}"#,
        r#"{"job":2,"input":"c4870f865d2d465a","status":"failed","kind":"failed","start":N,"wall_ms":N,"cpu_ms":N,"exit_code":1,"signal":null,"tries":2,"host":null}"#,
        r#"{"job":3,"input":"2a31ab5c857a672b","status":"failed","kind":"could_not_start","start":N,"wall_ms":N,"cpu_ms":N,"exit_code":null,"signal":null,"tries":1,"host":null}"#,
    ];
    assert_eq!(log, expected.join("\n") + "\n");

    // --output-dir: the result's file, or the output that could not be written.
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"echo\":\"a\"}\n{\"echo\":\"b\"}\n",
    )
    .expect("write");
    std::fs::create_dir_all(dir.path().join("out/0.cbor/x")).expect("mkdir");
    let (code, lines, log) = run(&[
        "run",
        "diag",
        "-j",
        "1",
        "--no-persistent",
        "--output-dir",
        "out",
        "--joblog",
        "log",
        "--inputs",
        "in.jsonl",
    ]);
    assert_eq!(code, Some(1), "{lines}");
    let expected = [
        format!(
            r#"{{"job":0,"status":"failed","error":{{"kind":"output_not_written","message":"cannot write out/0.cbor: Is a directory (os error 21): Is a directory (os error 21)","exit_code":0,"signal":null,"stderr_tail":""}},{stats}}}"#
        ),
        format!(r#"{{"job":1,"status":"ok","output":"out/1.cbor",{stats}}}"#),
    ];
    assert_eq!(lines, expected.join("\n") + "\n");
    let expected = [
        r#"{"job":0,"input":"346270f9be8b73eb","status":"failed","kind":"output_not_written","start":N,"wall_ms":N,"cpu_ms":N,"exit_code":0,"signal":null,"tries":1,"host":null}"#,
        r#"{"job":1,"input":"346271f9be8b759e","status":"ok","kind":null,"start":N,"wall_ms":N,"cpu_ms":N,"exit_code":0,"signal":null,"tries":1,"host":null,"output":"out/1.cbor"}"#,
    ];
    assert_eq!(log, expected.join("\n") + "\n");

    // --files: the input file after the outcome, before the stats (a refused file's line too,
    // which until the lines were typed had it after the stats); the output's name logged
    // before the file has it.
    let images = root().join("data/images");
    std::fs::copy(images.join("glow.png"), dir.path().join("glow.png")).expect("copy");
    std::fs::copy(images.join("portrait.jpg"), dir.path().join("portrait.jpg")).expect("copy");
    let (code, lines, log) = run(&[
        "run",
        "thumbnail",
        "-j",
        "1",
        "--no-persistent",
        "--max-input",
        "11987",
        "--files",
        "glow.png",
        "portrait.jpg",
        "--output-dir",
        "thumbs",
        "--joblog",
        "log",
    ]);
    assert_eq!(code, Some(1), "{lines}");
    let expected = [
        format!(
            r#"{{"job":0,"status":"failed","error":{{"kind":"could_not_start","message":"the job's input is 11997 bytes, over the limit of 11987 bytes","exit_code":null,"signal":null,"stderr_tail":""}},"file":"glow.png",{stats}}}"#
        ),
        format!(
            r#"{{"job":1,"status":"ok","output":"thumbs/portrait.png","result":{{"width":192,"height":256,"format":"png"}},"file":"portrait.jpg",{stats}}}"#
        ),
    ];
    assert_eq!(lines, expected.join("\n") + "\n");
    let expected = [
        r#"{"job":0,"input":"e1b10023d0bfb2fa","status":"failed","kind":"could_not_start","start":N,"wall_ms":N,"cpu_ms":N,"exit_code":null,"signal":null,"tries":1,"host":null,"file":"glow.png"}"#,
        r#"{"job":1,"input":"3157b4ed992784b6","writing":"thumbs/portrait.png","output_digest":N}"#,
        r#"{"job":1,"input":"3157b4ed992784b6","status":"ok","kind":null,"start":N,"wall_ms":N,"cpu_ms":N,"exit_code":0,"signal":null,"tries":1,"host":null,"file":"portrait.jpg","output":"thumbs/portrait.png"}"#,
    ];
    assert_eq!(log, expected.join("\n") + "\n");

    // A persistent worker's job: which worker, its how-manieth job, its start.
    std::fs::write(dir.path().join("one.json"), "{\"echo\":1}").expect("write");
    let (code, lines, _) = run(&["run", "diag", "-j", "1", "--input", "one.json"]);
    assert_eq!(code, Some(0), "{lines}");
    assert_eq!(
        lines,
        r#"{"job":0,"status":"ok","result":{"echo":1,"pid":N,"started_ns":N,"finished_ns":N},"stats":{"wall_ms":N,"cpu_ms":N,"peak_rss_bytes":N,"worker":{"id":1,"job":1,"startup_ms":N},"memory_limit":null,"host":null,"cpu_share":N}}"#.to_owned() + "\n"
    );
}

#[test]
fn verbose_shows_what_the_engine_does_and_nice_sets_the_processors_priority() {
    let mut command = offload();
    command.args(["run", "diag", "-v", "--nice", "0", "--input", "-"]);
    let out = common::run_with_input(command, br#"{"echo": 1}"#);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("said hello"), "{said}");
    assert!(said.contains("described"), "{said}");
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a line");
    assert_eq!(
        line["stats"]["cpu_share"],
        serde_json::Value::Null,
        "nice 0"
    );
    let quiet = common::run_with_input(
        {
            let mut c = offload();
            c.args(["run", "diag", "--input", "-"]);
            c
        },
        br#"{"echo": 1}"#,
    );
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&quiet.stdout).expect("a line");
    assert_ne!(
        line["stats"]["cpu_share"],
        serde_json::Value::Null,
        "nice 10 by default"
    );
}
