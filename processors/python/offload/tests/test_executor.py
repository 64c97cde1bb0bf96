"""offload.Executor as a concurrent.futures.Executor, and what it promises beyond one:
failures per future, cancel of running jobs, no process left behind."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import textwrap
import traceback

import pytest

import offload
from conftest import alive, processes_with, wait_until

import jobs

#: Bounds for waits that should end in well under a second: far above it, so that a loaded
#: machine does not fail a test that is right.
PATIENCE = 60


def test_submit_map_and_the_context_manager():
    with offload.Executor(max_workers=2) as pool:
        assert isinstance(pool, cf.Executor)
        future = pool.submit(jobs.add, 1, 2, c=4)
        assert isinstance(future, cf.Future)
        assert future.result(PATIENCE) == 7
        assert list(pool.map(jobs.square, range(20))) == [x * x for x in range(20)]
        assert list(pool.map(jobs.add, [1, 2], [10, 20])) == [11, 22]
        done, _ = cf.wait([pool.submit(jobs.square, i) for i in range(5)], timeout=PATIENCE)
        assert sorted(f.result() for f in done) == [0, 1, 4, 9, 16]
    with pytest.raises(RuntimeError):
        pool.submit(jobs.square, 1)


def test_shutdown_waits_and_cancel_futures_cancels_the_queued_ones():
    pool = offload.Executor(max_workers=1)
    running = pool.submit(jobs.sleeps, 0.5)
    assert wait_until(running.running, PATIENCE)
    queued = [pool.submit(jobs.square, i) for i in range(5)]
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.result(0) == 0.5
    assert all(f.cancelled() for f in queued)
    assert not alive(pool.serve_pid)


def test_an_exception_is_reraised_with_the_workers_traceback():
    with offload.Executor(max_workers=1) as pool:
        future = pool.submit(jobs.fails, "no such thing")
        with pytest.raises(ValueError, match="no such thing") as raised:
            future.result(PATIENCE)
        text = "".join(traceback.format_exception(raised.type, raised.value, raised.tb))
        # The worker's frames: the function's own line, in the file the worker ran.
        assert 'raise ValueError(message)' in text
        assert os.path.join("tests", "jobs.py") in text
        # The executor lives on.
        assert pool.submit(jobs.square, 3).result(PATIENCE) == 9


def test_a_crash_among_1000_jobs_fails_that_future_only():
    with offload.Executor(max_workers=2) as pool:
        futures = [pool.submit(jobs.crash_if, i, 517) for i in range(1000)]
        outcomes = {}
        for i, future in enumerate(futures):
            try:
                outcomes[i] = future.result(PATIENCE)
            except offload.JobFailed as failure:
                outcomes[i] = failure
    failed = {i: o for i, o in outcomes.items() if isinstance(o, offload.JobFailed)}
    assert list(failed) == [517]
    failure = failed[517]
    assert failure.kind == "killed"
    assert failure.signal == signal.SIGSEGV
    assert all(outcomes[i] == i for i in range(1000) if i != 517)


def test_an_exit_code_is_a_failed_job_with_its_code():
    with offload.Executor(max_workers=1) as pool:
        with pytest.raises(offload.JobFailed) as raised:
            pool.submit(jobs.exits, 3).result(PATIENCE)
        assert raised.value.kind == "failed"
        assert raised.value.exit_code == 3
        assert pool.submit(jobs.square, 4).result(PATIENCE) == 16


def test_a_timeout_fails_its_job_as_timed_out():
    pool = offload.Executor(max_workers=2)
    try:
        slow = pool.with_options(timeout=1.0).submit(jobs.sleeps, 600)
        fine = pool.submit(jobs.square, 5)
        with pytest.raises(offload.JobFailed) as raised:
            slow.result(PATIENCE)
        assert raised.value.kind == "timed_out"
        assert fine.result(PATIENCE) == 25
        pid = slow.pid
        assert pid is not None and wait_until(lambda: not alive(pid), PATIENCE)
    finally:
        pool.kill()  # a failed assertion must not leave a 600 s job for shutdown to wait on


def test_a_memory_limit_fails_its_job_as_resource_limit():
    with offload.Executor(max_workers=1, memory_limit=256 << 20) as pool:
        with pytest.raises(offload.JobFailed) as raised:
            pool.submit(jobs.allocates, 1024).result(PATIENCE)
        assert raised.value.kind == "resource_limit", str(raised.value)
        assert pool.submit(jobs.allocates, 8).result(PATIENCE) == 8 << 20


def test_cancel_of_a_running_future_returns_true_and_leaves_no_process(marker):
    name, value = marker
    pool = offload.Executor(max_workers=1, env={name: value})
    try:
        future = pool.submit(jobs.pid_then_sleep, 600)
        assert wait_until(future.running, PATIENCE)
        pid = future.pid
        assert pid is not None and alive(pid)
        assert pid in processes_with(name, value)  # the worker (and the guard above it)
        assert future.cancel() is True
        assert future.cancelled()
        with pytest.raises(cf.CancelledError):
            future.result(0)
        assert wait_until(lambda: not alive(pid), PATIENCE)
        assert processes_with(name, value) == []
        # A finished future is not cancelled; the executor goes on.
        done = pool.submit(jobs.square, 6)
        assert done.result(PATIENCE) == 36
        assert done.cancel() is False
    finally:
        pool.kill()  # a failed assertion must not leave a 600 s job for shutdown to wait on


HOST = textwrap.dedent(
    """
    import sys, time
    import offload
    import jobs

    if __name__ == "__main__":
        pool = offload.Executor(max_workers=2)
        futures = [pool.submit(jobs.sleeps, 600) for _ in range(4)]
        while not all(f.running() for f in futures[:2]):
            time.sleep(0.01)
        print(pool.serve_pid, *(f.pid for f in futures[:2]), flush=True)
        time.sleep(600)
    """
)


def test_kill_9_of_the_python_app_leaves_no_worker_after_2_s(tmp_path, marker):
    name, value = marker
    script = tmp_path / "host.py"
    script.write_text(HOST)
    env = dict(os.environ, **{name: value})
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(jobs.__file__), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    host = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env)
    try:
        line = host.stdout.readline().decode()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 3, line
        # serve, its guards and both workers carry the marker; the host too.
        before = set(processes_with(name, value))
        assert set(pids) | {host.pid} <= before
        host.kill()
        host.wait()
        gone = wait_until(lambda: processes_with(name, value) == [], 2.0)
        assert gone, f"left after 2 s: {processes_with(name, value)}"
    finally:
        if host.poll() is None:
            host.kill()


def test_bytes_travel_as_byte_strings_never_base64():
    payload = os.urandom(1 << 20)
    with offload.Executor(max_workers=1) as pool:
        sent = []
        send = pool._serve.send_encoded

        def recording(data):
            sent.append(bytes(data))
            send(data)

        pool._serve.send_encoded = recording
        back = pool.submit(jobs.echo, payload).result(PATIENCE)
        assert back == payload and type(back) is bytes
        (frame,) = sent
        # The request holds the payload as it is, once, and little else.
        assert payload in frame
        assert len(frame) < len(payload) + 4096
        # bytearray and memoryview are byte data too; a bytearray comes back one.
        kinds = pool.submit(jobs.types_of, b"a", bytearray(b"b"), memoryview(b"c")).result(PATIENCE)
        assert kinds == ["bytes", "bytearray", "bytes"]
        assert pool.submit(jobs.echo, bytearray(b"xyz")).result(PATIENCE) == bytearray(b"xyz")
        assert type(pool.submit(jobs.echo, bytearray(b"xyz")).result(PATIENCE)) is bytearray


def test_other_values_come_back_as_they_were():
    value = {"t": (1, 2), "s": {3}, "n": None, "f": 1.5, "big": 1 << 80, (1, 2): "tuple key"}
    with offload.Executor(max_workers=1) as pool:
        assert pool.submit(jobs.echo, value).result(PATIENCE) == value


def test_progress_reaches_a_listener():
    heard = []

    class Heard(offload.Listener):
        def progress(self, future):
            heard.append((future.progress, future.message))

    with offload.Executor(max_workers=1) as pool:
        pool.add_listener(Heard())
        assert pool.submit(jobs.reports_progress, 4).result(PATIENCE) == 4
    assert heard, "no progress event"
    assert all(0.0 < f <= 1.0 and m.startswith("step ") for f, m in heard)
