"""Persistent mode (PROTOCOL.md, section 18): one worker process, many jobs, frames on stdin
and stdout. Each test drives a real worker as the host does."""

from __future__ import annotations

import signal
import time

import cbor2
from conftest import CBOR2_READS_IN_CHUNKS, HISTOGRAM, LOOKUP


def test_hello_then_several_jobs_in_one_process(session):
    worker = session()
    assert worker.hello() == {"type": "hello", "protocol": 2, "name": "sdktest", "version": "9.9.9"}
    results = [worker.answer({"do": "echo", "value": i}) for i in range(5)]
    for i, frames in enumerate(results):
        (frame,) = frames
        assert frame["type"] == "result" and frame["id"] == i + 1
        assert frame["result"]["value"] == i
        assert frame["result"]["pid"] == worker.pid, "every job runs in the worker"
        assert frame["result"]["job_id"] == i + 1
        assert frame["result"]["reports_progress"] is True
    worker.close()
    assert worker.wait() == 0, "end of stdin between frames: exit 0"


def test_setup_runs_once_before_the_hello_and_its_state_is_shared(session):
    worker = session()
    worker.hello()
    assert worker.stderr.count("setting up") == 1, "set-up done before answering hello"
    calls = [worker.answer({"do": "echo"})[0]["result"]["calls"] for _ in range(3)]
    assert calls == [1, 2, 3], "ctx.state is the one object setup() returned"
    worker.close()
    assert worker.wait() == 0
    assert worker.stderr.count("setting up") == 1


def test_error_frames_keep_the_worker_serving(session):
    worker = session()
    worker.hello()
    expected = [
        ("invalid", "invalid_input", "invalid input: value must be positive"),
        ("shape", "invalid_input", "input: unexpected shape: missing field `value`"),
        ("fail", "failed", "the disk is full"),
        ("bug", "failed", "internal error: ZeroDivisionError: division by zero"),
        ("unencodable", "failed", "cannot encode the result:"),
    ]
    for do, kind, says in expected:
        (frame,) = worker.answer({"do": do})
        assert frame["type"] == "error" and frame["kind"] == kind, frame
        assert frame["error"].startswith(says), frame
        # ... and the worker goes on: unlike a Rust panic, an exception ends only its job.
        (after,) = worker.answer({"do": "echo", "value": do})
        assert after["type"] == "result" and after["result"]["value"] == do
        assert after["result"]["pid"] == worker.pid
    (shape,) = worker.answer([1, 2])
    assert shape["kind"] == "invalid_input"
    worker.close()
    assert worker.wait() == 0
    lines = worker.stderr.splitlines()
    assert "offload-sdktest: internal error: ZeroDivisionError: division by zero" in lines
    assert "Traceback" not in worker.stderr


def test_a_set_in_the_result_fails_its_job_naming_where_it_is(session):
    worker = session()
    worker.hello()
    (frame,) = worker.answer({"do": "set"})
    assert frame["type"] == "error" and frame["kind"] == "failed", frame
    assert frame["error"].startswith(
        'cannot encode the result: result["groups"][0]["tags"] is a set'
    ), frame
    (same,) = worker.answer({"do": "tag_bytes"})
    assert same["result"] == {"raw": b"\xd9\x01\x02", "n": 258}
    worker.close()
    assert worker.wait() == 0


def test_stray_prints_land_on_stderr_not_among_the_frames(session):
    worker = session()
    worker.hello()
    (frame,) = worker.answer({"do": "print"})
    assert frame == {"type": "result", "id": 1, "result": "printed"}
    (after,) = worker.answer({"do": "echo", "value": 1})
    assert after["result"]["value"] == 1
    worker.close()
    assert worker.wait() == 0
    for line in (
        "printed at import time",
        "printed during set-up",
        "a stray print",
        "from a child process",
    ):
        assert line in worker.stderr.splitlines(), worker.stderr


def test_progress_frames_carry_the_job_id_and_come_before_the_answer(session):
    worker = session()
    worker.hello()
    worker.answer({"do": "echo"})
    frames = worker.answer({"do": "progress"})
    progress, answer = frames[:-1], frames[-1]
    assert answer == {"type": "result", "id": 2, "result": "done"}
    assert all(f["type"] == "progress" and f["id"] == 2 for f in progress)
    assert [f["fraction"] for f in progress][:4] == [0.25, 0.5, 0.75, 1.0]
    assert progress[0]["message"] == "step 1 of 4"
    # The last ctx.progress(1) comes within 20 ms of the one before: dropped, unless the
    # machine stalled between the two calls.
    assert len(progress) in (4, 5)


def test_progress_frames_are_throttled(session):
    worker = session()
    worker.hello()
    frames = worker.answer({"do": "burst"})
    assert frames[-1]["type"] == "result"
    assert 1 <= len(frames) - 1 < 50, "1000 reports in a few ms: at most one per 20 ms"


def test_no_progress_frame_follows_the_answer(session):
    worker = session()
    worker.hello()
    (answer,) = [f for f in worker.answer({"do": "late_progress"}) if f["type"] != "progress"]
    assert answer == {"type": "result", "id": 1, "result": "answered"}
    time.sleep(0.1)  # the job's thread keeps calling ctx.progress meanwhile
    (after,) = worker.answer({"do": "echo", "value": 2})
    assert after["id"] == 2 and after["type"] == "result"


def test_unknown_frame_types_are_ignored(session):
    worker = session()
    worker.hello()
    worker.send({"type": "from-the-future", "id": 99, "stuff": [1, 2]})
    (frame,) = worker.answer({"do": "echo", "value": "still here"})
    assert frame["result"]["value"] == "still here"
    worker.close()
    assert worker.wait() == 0


def test_end_of_input_before_any_frame_exits_0(session):
    worker = session()
    worker.close()
    assert worker.wait() == 0


def test_end_of_input_inside_a_frame_exits_65(session):
    worker = session()
    worker.hello()
    worker.send_bytes(cbor2.dumps({"type": "job", "id": 1, "input": {"do": "echo"}})[:-3])
    worker.close()
    assert worker.wait() == 65
    assert "stdin ended inside a frame" in worker.stderr.splitlines()[-1]


def malformed(session, data, says, hello=True):
    worker = session()
    if hello:
        worker.hello()
    worker.send_bytes(data)
    worker.close()
    assert worker.wait() == 65, worker.stderr
    last = worker.stderr.splitlines()[-1]
    assert last.startswith("offload-sdktest: persistent mode: ") and says in last, last
    return worker


def test_malformed_frames_end_the_worker_with_65(session):
    malformed(session, b"\x01", "not a map")
    malformed(session, cbor2.dumps({"id": 1, "input": 2}), 'no text "type"')
    malformed(session, cbor2.dumps({"type": "job", "input": 2}), "without an id or an input")
    malformed(session, cbor2.dumps({"type": "job", "id": -1, "input": 2}), "without an id")
    malformed(session, cbor2.dumps({"type": "job", "id": 1}), "without an id or an input")
    malformed(session, b"\xfe", "the frame stream broke")
    malformed(
        session, cbor2.dumps({"type": "job", "id": 1, "input": 1}), "not a hello", hello=False
    )


def test_a_frame_over_the_input_limit_ends_the_worker(session):
    worker = session({"OFFLOAD_MAX_INPUT_BYTES": "10000"})
    worker.hello()
    (ok,) = worker.answer({"do": "echo", "value": b"x" * 9000})
    assert ok["type"] == "result"
    worker.send({"type": "job", "id": 2, "input": {"do": "echo", "value": b"x" * 20000}})
    assert worker.wait() == 65
    assert "a request frame over the limit of 11024 bytes" in worker.stderr


def test_a_declared_length_is_not_allocated_before_its_bytes(session):
    worker = session()
    worker.hello()
    # A job whose input claims a byte string of 2^40 bytes, then ends.
    head = b"\xa3" + b"".join(cbor2.dumps(x) for x in ("type", "job", "id", 1, "input"))
    worker.send_bytes(head + b"\x5b" + (1 << 40).to_bytes(8, "big") + b"x" * 100)
    worker.close()
    assert worker.wait() == 65, worker.stderr
    if CBOR2_READS_IN_CHUNKS:
        assert "stdin ended inside a frame" in worker.stderr
    else:
        assert "larger than this process can allocate" in worker.stderr


def test_setup_failure_means_no_hello(session):
    worker = session({"SDKTEST_SETUP": "fail"})
    worker.send({"type": "hello", "protocol": 2})
    worker.close()
    assert worker.wait() == 1
    assert worker.stderr.splitlines()[-1] == "offload-sdktest: the table file is missing"
    assert bytes(worker.out) == b"", "no hello from a worker that could not set up"
    bug = session({"SDKTEST_SETUP": "bug"})
    bug.send({"type": "hello", "protocol": 2})
    bug.close()
    assert bug.wait() == 70
    assert (
        bug.stderr.splitlines()[-1] == "offload-sdktest: internal error: setup: KeyError: 'table'"
    )


def test_sigterm_cancels_a_polling_job_with_an_error_frame_then_143(session):
    worker = session()
    worker.hello()
    job_id = worker.job({"do": "poll"})
    worker.wait_stderr("polling")
    worker.terminate()
    assert worker.recv() == {
        "type": "error",
        "id": job_id,
        "error": "cancelled",
        "kind": "cancelled",
    }
    assert worker.wait() == 143


def test_sigterm_kills_a_job_that_never_asks(session):
    worker = session()
    worker.hello()
    worker.job({"do": "sleep"})
    worker.wait_stderr("sleeping")
    worker.terminate()
    assert worker.wait() == -signal.SIGTERM


def test_watching_for_cancellation_ends_with_the_job(session):
    worker = session()
    worker.hello()
    (frame,) = worker.answer({"do": "ask_once"})
    assert frame["result"] == {"cancelled": False}
    # Between jobs, after one that watched: SIGTERM is back to its default action.
    worker.terminate()
    assert worker.wait() == -signal.SIGTERM


def test_a_cancelled_error_ends_the_worker_with_143(session):
    worker = session()
    worker.hello()
    (frame,) = worker.answer({"do": "cancel"})
    assert frame["kind"] == "cancelled"
    assert worker.wait() == 143


def test_the_histogram_and_lookup_serve_persistently(session):
    histogram = session(exe=HISTOGRAM)
    assert histogram.hello()["name"] == "histogram"
    frames = histogram.answer({"values": list(range(100)), "bins": 4})
    assert frames[-1]["result"]["count"] == 100
    assert {f["type"] for f in frames[:-1]} <= {"progress"}
    (bad,) = histogram.answer({"values": []})
    assert bad["error"] == "invalid input: values is empty; give at least one number"
    lookup = session(exe=LOOKUP)
    assert lookup.hello()["name"] == "lookup"
    (first,) = lookup.answer({"numbers": [2, 4, 9_999_991]})
    assert first["result"] == {"prime": [True, False, True], "primes_up_to": [1, 2, 664_579]}
    (second,) = lookup.answer({"numbers": [10_000_001]})
    assert second["kind"] == "invalid_input"
    for worker in (histogram, lookup):
        worker.close()
        assert worker.wait() == 0


def test_a_host_below_its_protocol_gets_no_hello_and_a_second_hello_is_ignored(session):
    old = session()
    old.send({"type": "hello", "protocol": 1})
    old.close()
    assert old.wait() == 65
    assert "the host speaks protocol 1" in old.stderr
    assert bytes(old.out) == b"", "no hello to a host that speaks an older protocol"
    worker = session()
    worker.hello()
    worker.send({"type": "hello", "protocol": 2})
    frames = worker.answer({"do": "echo", "value": 5})
    assert frames[-1]["type"] == "result", frames
