"""One-shot mode (PROTOCOL.md, sections 1 to 17): one process, one job, real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import cbor2
import pytest
from conftest import (
    CBOR2_HAS_MAX_DEPTH,
    CBOR2_READS_IN_CHUNKS,
    HISTOGRAM,
    LOOKUP,
    REPO,
    SDKTEST,
    command,
    decode_sequence,
    environment,
    run,
    stderr_lines,
)

PREFIX = "offload-sdktest: "


def assert_failed(proc, code, kind, says):
    """Exit ``code``, one prefixed stderr line that says ``says``, and a report of ``kind``."""
    lines = stderr_lines(proc)
    assert proc.returncode == code, lines
    assert len(lines) == 1 and lines[0].startswith(PREFIX), lines
    assert says in lines[0], lines
    assert "Traceback" not in proc.stderr.decode()
    report = cbor2.loads(proc.stdout)
    assert report == {"error": lines[0][len(PREFIX) :], "kind": kind}


def test_cbor_in_cbor_out():
    proc = run(stdin=cbor2.dumps({"do": "echo", "value": [1, 2.5, b"\x00\xff"]}))
    assert proc.returncode == 0, proc.stderr
    result = cbor2.loads(proc.stdout)
    assert result["value"] == [1, 2.5, b"\x00\xff"]
    assert result["pid"] != os.getpid()
    assert result["job_id"] is None, "one-shot jobs have no id"
    assert result["calls"] == 1, "set-up runs in one-shot mode too"
    assert result["reports_progress"] is False
    assert proc.stderr == b""


def test_json_mode_reads_and_writes_the_json_form():
    document = {
        "do": "echo",
        "value": {"raw": {"$bytes": "AH//"}, "when": {"$tag": 1234, "$value": 5}},
    }
    proc = run(["--json"], json.dumps(document).encode())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith(b"\n") and proc.stdout.count(b"\n") == 1
    result = json.loads(proc.stdout)
    assert result["value"] == document["value"]

    big = run(["--json"], b'{"do": "big"}')
    assert json.loads(big.stdout) == {"big": str(1 << 70), "small": -5, "nan": None}


def test_json_and_cbor_modes_hand_the_function_the_same_values():
    value = {"raw": b"\x01\x02", "n": -(1 << 40), "f": 0.5, "t": "é", "l": [None, True]}
    cbor = run(stdin=cbor2.dumps({"do": "echo", "value": value}))
    as_json = run(
        ["--json"],
        json.dumps(
            {
                "do": "echo",
                "value": {
                    "raw": {"$bytes": "AQI="},
                    "n": -(1 << 40),
                    "f": 0.5,
                    "t": "é",
                    "l": [None, True],
                },
            }
        ).encode(),
    )
    assert cbor2.loads(cbor.stdout)["value"] == value
    assert json.loads(as_json.stdout)["value"]["raw"] == {"$bytes": "AQI="}
    assert json.loads(as_json.stdout)["value"]["n"] == value["n"]


def test_describe_prints_one_json_object_without_reading_stdin():
    proc = subprocess.run(
        command(SDKTEST, ["--describe"]),
        stdin=subprocess.PIPE,  # left open: a processor that read it would hang
        capture_output=True,
        env=environment(),
        timeout=10,
    )
    assert proc.returncode == 0, proc.stderr
    description = json.loads(proc.stdout)
    assert description == {
        "name": "sdktest",
        "summary": "Does, on request, each thing the SDK must handle",
        "protocol": 2,
        "example_input": {"do": "echo", "value": {"$bytes": "AH//"}},
        "version": "9.9.9",
        "persistent": True,
    }
    assert b"setting up" not in proc.stderr, "--describe must not run the set-up"


def test_a_processor_can_opt_out_of_persistent_mode():
    description = json.loads(run(["--describe"], env={"SDKTEST_PERSISTENT": "0"}).stdout)
    assert description["persistent"] is False
    refused = run(["--persistent"], env={"SDKTEST_PERSISTENT": "0"})
    assert refused.returncode == 2
    assert "one job per process" in refused.stderr.decode()


def test_help_version_and_bad_arguments():
    helped = run(["--help"])
    assert (
        helped.returncode == 0 and b"--persistent" in helped.stdout and b"--json" in helped.stdout
    )
    assert run(["--version"]).stdout == b"offload-sdktest 9.9.9\n"
    unknown = run(["--frobnicate"])
    assert unknown.returncode == 2
    assert stderr_lines(unknown) == [
        'offload-sdktest: unknown argument "--frobnicate" (try --help)'
    ]
    both = run(["--json", "--persistent"])
    assert both.returncode == 2 and b"do not go together" in both.stderr


@pytest.mark.parametrize(
    "stdin, says",
    [
        (b"", "no CBOR data item (empty input)"),
        (cbor2.dumps({"do": "echo", "value": [1, 2, 3]})[:-1], "truncated CBOR"),
        (cbor2.dumps({"do": "echo"}) + b"\x00", "1 trailing bytes after the CBOR item"),
        (b"\xff\xfe", "not valid CBOR"),
        pytest.param(
            b"\x81" * 200 + b"\x00",
            "nested deeper than 128 levels",
            marks=pytest.mark.skipif(not CBOR2_HAS_MAX_DEPTH, reason="cbor2 has no max_depth"),
        ),
        (cbor2.dumps([1, 2]), "input: unexpected shape: expected a map"),
        (
            b"\x5b\x00\x00\x00\xff\xff\xff\xff\xff" + b"x" * 10,
            "truncated CBOR" if CBOR2_READS_IN_CHUNKS else "larger than this process can allocate",
        ),
    ],
    ids=["empty", "truncated", "trailing", "malformed", "too-deep", "wrong-shape", "huge-length"],
)
def test_bad_input_exits_65_with_one_line_and_a_report(stdin, says):
    assert_failed(run(stdin=stdin), 65, "invalid_input", says)


def test_input_over_the_limit_is_refused():
    big = cbor2.dumps({"do": "echo", "value": b"x" * 5000})
    proc = run(stdin=big, env={"OFFLOAD_MAX_INPUT_BYTES": "1000"})
    assert_failed(proc, 65, "invalid_input", "over the limit of 1000 bytes")
    assert run(stdin=big, env={"OFFLOAD_MAX_INPUT_BYTES": "6000"}).returncode == 0


@pytest.mark.parametrize(
    "do, code, kind, says",
    [
        ("invalid", 65, "invalid_input", "invalid input: value must be positive"),
        ("shape", 65, "invalid_input", "input: unexpected shape: missing field `value`"),
        ("fail", 1, "failed", "the disk is full"),
        ("cancel", 143, "cancelled", "cancelled"),
    ],
)
def test_raised_errors_map_to_exit_codes_and_reports(do, code, kind, says):
    assert_failed(run(stdin=cbor2.dumps({"do": do})), code, kind, says)


def test_an_unexpected_exception_is_an_internal_error_in_one_line():
    proc = run(stdin=cbor2.dumps({"do": "bug"}))
    assert proc.returncode == 70
    assert (
        stderr_lines(proc)[-1]
        == "offload-sdktest: internal error: ZeroDivisionError: division by zero"
    )
    assert "Traceback" not in proc.stderr.decode()
    assert proc.stdout == b"", "an internal error writes no report, as a Rust panic"


def test_offload_traceback_shows_the_traceback_before_the_line():
    proc = run(stdin=cbor2.dumps({"do": "bug"}), env={"OFFLOAD_TRACEBACK": "1"})
    assert proc.returncode == 70
    text = proc.stderr.decode()
    assert "Traceback (most recent call last)" in text and "1 / 0" in text
    assert stderr_lines(proc)[-1].startswith("offload-sdktest: internal error: ZeroDivisionError")


def test_a_result_cbor2_cannot_encode_fails_with_exit_1():
    proc = run(stdin=cbor2.dumps({"do": "unencodable"}))
    assert proc.returncode == 1
    assert stderr_lines(proc)[-1].startswith("offload-sdktest: cannot encode the result:")
    assert proc.stdout == b"", "nothing half-written"


def test_json_mode_failures_write_no_report():
    bad_json = run(["--json"], b"{not json")
    assert bad_json.returncode == 65 and bad_json.stdout == b""
    assert "input is not valid JSON" in stderr_lines(bad_json)[-1]
    bad_base64 = run(["--json"], b'{"do": "echo", "value": {"$bytes": "%%%"}}')
    assert bad_base64.returncode == 65 and bad_base64.stdout == b""
    assert '"$bytes" is not valid base64' in stderr_lines(bad_base64)[-1]
    failed = run(["--json"], b'{"do": "fail"}')
    assert failed.returncode == 1 and failed.stdout == b""


def test_setup_failures_fail_the_job():
    failed = run(stdin=cbor2.dumps({"do": "echo"}), env={"SDKTEST_SETUP": "fail"})
    assert_failed(failed, 1, "failed", "the table file is missing")
    bug = run(stdin=cbor2.dumps({"do": "echo"}), env={"SDKTEST_SETUP": "bug"})
    assert bug.returncode == 70
    assert stderr_lines(bug)[-1] == "offload-sdktest: internal error: setup: KeyError: 'table'"


def test_progress_goes_to_the_descriptor_named_by_the_environment():
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(
            command(SDKTEST, []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment({"OFFLOAD_PROGRESS_FD": str(write_end)}),
            pass_fds=(write_end,),
        )
        os.close(write_end)
        out, err = proc.communicate(cbor2.dumps({"do": "progress"}), timeout=20)
        with os.fdopen(read_end, "rb") as progress:
            items = decode_sequence(progress.read())
    finally:
        for fd in (read_end, write_end):
            try:
                os.close(fd)
            except OSError:
                pass
    assert proc.returncode == 0, err
    assert cbor2.loads(out) == "done"
    assert [item["fraction"] for item in items] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert all(type(item["fraction"]) is float for item in items)
    assert items[0]["message"] == "step 1 of 4" and "message" not in items[-1]


@pytest.mark.parametrize("value", ["", "abc", "2", "1", "250"])
def test_no_usable_progress_descriptor_means_no_progress(value):
    proc = run(stdin=cbor2.dumps({"do": "progress"}), env={"OFFLOAD_PROGRESS_FD": value})
    assert proc.returncode == 0, proc.stderr
    assert cbor2.loads(proc.stdout) == "done", "nothing but the result on stdout"
    assert proc.stderr == b"", "nothing on stderr either"


def start_job(inp):
    proc = subprocess.Popen(
        command(SDKTEST, []),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(),
    )
    proc.stdin.write(cbor2.dumps(inp))
    proc.stdin.close()
    return proc


def wait_for_line(proc, text):
    line = b""
    deadline = time.monotonic() + 20
    while text.encode() not in line:
        assert time.monotonic() < deadline
        line = proc.stderr.readline()
        assert line, f"stderr ended before {text!r}"


def test_sigterm_kills_a_job_that_never_asks():
    proc = start_job({"do": "sleep"})
    try:
        wait_for_line(proc, "sleeping")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == -signal.SIGTERM, "default death by SIGTERM"
    finally:
        proc.kill()
        proc.wait()


def test_sigterm_cancels_a_job_that_polls():
    proc = start_job({"do": "poll"})
    try:
        wait_for_line(proc, "polling")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 143
        assert cbor2.loads(proc.stdout.read()) == {"error": "cancelled", "kind": "cancelled"}
        assert proc.stderr.read().decode().strip().splitlines()[-1] == "offload-sdktest: cancelled"
    finally:
        proc.kill()
        proc.wait()


def test_an_ignored_sigterm_is_reset_to_its_default():
    # A disposition of "ignore" survives exec; the SDK must put the default back.
    def ignore_sigterm():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    proc = subprocess.Popen(
        command(SDKTEST, []),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(),
        preexec_fn=ignore_sigterm,
    )
    try:
        proc.stdin.write(cbor2.dumps({"do": "sleep"}))
        proc.stdin.close()
        wait_for_line(proc, "sleeping")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


def test_the_histogram_keeps_its_contract():
    with open(REPO / "data" / "histogram.json", "rb") as f:
        document = f.read()
    as_json = run(["--json"], document, exe=HISTOGRAM)
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["count"] == 200 and len(result["bins"]) == 12
    small = run(["--json"], b'{"values": [1, 2, 3, 4.5], "bins": 2}', exe=HISTOGRAM)
    assert json.loads(small.stdout)["mean"] == 2.625
    wrong = run(stdin=cbor2.dumps({"values": "nope"}), exe=HISTOGRAM)
    assert wrong.returncode == 65
    assert stderr_lines(wrong) == [
        "offload-histogram: input: unexpected shape: values must be an array of numbers, "
        'got the text "nope"'
    ]
    assert cbor2.loads(wrong.stdout)["kind"] == "invalid_input"
    bins = run(["--json"], b'{"values": [1], "bins": 0}', exe=HISTOGRAM)
    assert stderr_lines(bins) == [
        "offload-histogram: invalid input: parameter bins: expected an integer from 1 to 10000, got 0"
    ]


def test_processors_without_the_sdk_say_how_to_install_it():
    # A Python with neither the SDK nor anything else on its path: -S skips site-packages.
    for exe in (HISTOGRAM, LOOKUP):
        proc = subprocess.run(
            [sys.executable, "-S", str(exe), "--describe"],
            capture_output=True,
            env={"PATH": os.environ.get("PATH", "")},
            timeout=10,
        )
        assert proc.returncode == 70
        line = proc.stderr.decode().strip()
        assert line.startswith(f"offload-{exe.name[len('offload-') :]}: ")
        assert "pip install ./processors/python/offload-sdk" in line
        assert "\n" not in line


def test_an_example_output_is_described_in_json_form():
    from offload_sdk import Processor

    described = Processor("x", "y", example={"a": 1}, example_output={"raw": b"\x01\x02"})
    assert described.description()["example_output"] == {"raw": {"$bytes": "AQI="}}
    assert "example_output" not in Processor("x", "y", example=1).description()


def test_declared_parameters_and_files_are_described_and_checked(tmp_path):
    from offload_sdk import Files, Parameter, Processor

    described = Processor(
        "x",
        "y",
        files=Files("image", ["JPG", ".png"], "image", "png", "format"),
        parameters=[
            Parameter.integer("size", 256, "Box size", 1, 8192),
            Parameter.choice("format", ["png", "jpeg"], "png", "Output format"),
        ],
    ).description()
    assert described["files"] == {
        "input_field": "image",
        "accepts": ["jpg", "png"],
        "output_field": "image",
        "output_extension": "png",
        "output_extension_parameter": "format",
    }
    assert described["parameters"][0] == {
        "name": "size", "label": "Box size", "type": "integer", "default": 256,
        "minimum": 1, "maximum": 8192,
    }
    assert described["parameters"][1]["choices"] == ["png", "jpeg"]

    # A real processor: a wrong parameter is refused before the function runs (exit 65),
    # naming it and what it takes; a right one runs.
    script = tmp_path / "offload-params"
    script.write_text(
        "from offload_sdk import Parameter, Processor\n"
        "Processor('params', 'p', parameters=[\n"
        "    Parameter.integer('size', 4, 'Size', 1, 10),\n"
        "    Parameter.choice('mode', ['a', 'b'], 'a', 'Mode'),\n"
        "]).run(lambda inp, ctx: {'ran': True})\n"
    )
    for inp, code, says in [
        ({"size": 50}, 65, "parameter size: expected an integer from 1 to 10, got 50"),
        ({"size": 5, "mode": "c"}, 65, "parameter mode: expected one of a, b, got 'c'"),
        ({"size": True}, 65, "parameter size"),
        ({"size": 5, "mode": "b"}, 0, ""),
        ({}, 0, ""),
    ]:
        proc = run(["--json"], stdin=json.dumps(inp).encode(), exe=script)
        assert proc.returncode == code, (inp, proc.stderr)
        assert says.encode() in proc.stderr, (inp, proc.stderr)


@pytest.mark.parametrize("mode", [[], ["--json"]])
def test_prints_land_on_stderr_and_stdout_holds_only_the_result(mode):
    # As in persistent mode: prints at import time, in set-up and in the function, and a
    # child process's output, all go to stderr; stdout holds the result alone.
    request = {"do": "print"}
    stdin = json.dumps(request).encode() if mode else cbor2.dumps(request)
    proc = run(mode, stdin, env={"SDKTEST_PRINT": "1"})
    assert proc.returncode == 0, proc.stderr
    if mode:
        assert proc.stdout == b'"printed"\n'
    else:
        assert proc.stdout == cbor2.dumps("printed")
    lines = stderr_lines(proc)
    for line in (
        "printed at import time",
        "printed during set-up",
        "a stray print",
        "from a child process",
    ):
        assert line in lines, lines


def test_describe_and_version_are_whole_although_the_processor_prints_at_import():
    described = run(["--describe"], env={"SDKTEST_PRINT": "1"})
    assert json.loads(described.stdout)["name"] == "sdktest"
    assert "printed at import time" in stderr_lines(described)
    version = run(["--version"], env={"SDKTEST_PRINT": "1"})
    assert version.stdout == b"offload-sdktest 9.9.9\n"


def test_an_error_report_stays_whole_although_the_function_printed():
    proc = run(stdin=cbor2.dumps({"do": "fail"}), env={"SDKTEST_PRINT": "1"})
    assert proc.returncode == 1
    assert cbor2.loads(proc.stdout) == {"error": "the disk is full", "kind": "failed"}


@pytest.mark.parametrize("mode", [[], ["--json"]])
def test_a_set_in_the_result_is_refused_naming_where_it_is(mode):
    # cbor2 would send a set as tag 258, which a host shows as {"$tag": 258, ...}, not the
    # list its author meant: refused, in both modes, with where it is and what to do.
    for do, where in [
        ("set", 'result["groups"][0]["tags"] is a set'),
        ("set_key", "a key of result is a set"),
    ]:
        request = {"do": do}
        stdin = json.dumps(request).encode() if mode else cbor2.dumps(request)
        proc = run(mode, stdin)
        assert proc.returncode == 1, proc.stderr
        assert proc.stdout == b""
        (line,) = stderr_lines(proc)
        assert line.startswith(f"{PREFIX}cannot encode the result: {where}"), line
        assert "list" in line, line


def test_bytes_that_look_like_tag_258_are_not_a_set():
    proc = run(stdin=cbor2.dumps({"do": "tag_bytes"}))
    assert proc.returncode == 0, proc.stderr
    assert cbor2.loads(proc.stdout) == {"raw": b"\xd9\x01\x02", "n": 258}
