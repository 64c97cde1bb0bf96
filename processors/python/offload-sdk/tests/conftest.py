"""Helpers that run real processor processes: one-shot runs, and persistent sessions that
speak frames the way a host does."""

from __future__ import annotations

import importlib.metadata
import io
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import cbor2
import pytest

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
SDKTEST = HERE / "processors" / "offload-sdktest"
REPO = HERE.parents[3]
HISTOGRAM = REPO / "processors" / "python" / "offload-histogram"
LOOKUP = REPO / "processors" / "python" / "offload-lookup"

TIMEOUT = 20.0

# The unit tests import this checkout's SDK, not an installed copy.
sys.path.insert(0, str(SRC))


def _has_max_depth() -> bool:
    try:
        cbor2.CBORDecoder(io.BytesIO(b""), max_depth=1)
        return True
    except TypeError:
        return False


#: Whether cbor2 bounds nesting itself (newer than 5.6); older ones stop at Python's
#: recursion limit, and the SDK can do no better cheaply.
CBOR2_HAS_MAX_DEPTH = _has_max_depth()
#: Whether cbor2 reads a long string in chunks (5.6 and later) rather than asking for its
#: declared length at once.
CBOR2_READS_IN_CHUNKS = tuple(
    int(part) for part in importlib.metadata.version("cbor2").split(".")[:2]
) >= (5, 6)


def environment(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The test's environment with this checkout's SDK first on the import path, no progress
    descriptor, and ``extra`` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFLOAD_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def command(exe: Path, args: Iterable[str]) -> List[str]:
    # Through this interpreter, so the test runs against the Python that has pytest and cbor2.
    return [sys.executable, str(exe), *args]


def run(
    args: Iterable[str] = (),
    stdin: bytes = b"",
    env: Optional[Dict[str, str]] = None,
    exe: Path = SDKTEST,
    **kwargs: Any,
) -> subprocess.CompletedProcess:
    """Runs a processor to its end with ``stdin``."""
    return subprocess.run(
        command(exe, args),
        input=stdin,
        capture_output=True,
        env=environment(env),
        timeout=TIMEOUT,
        **kwargs,
    )


def stderr_lines(proc: subprocess.CompletedProcess) -> List[str]:
    return proc.stderr.decode("utf-8", "replace").strip().splitlines()


def decode_sequence(data: bytes) -> List[Any]:
    """Every item of a CBOR sequence."""
    stream = io.BytesIO(data)
    items = []
    while stream.tell() < len(data):
        items.append(cbor2.CBORDecoder(stream).decode())
    return items


class Session:
    """A persistent worker, driven as a host drives it."""

    def __init__(self, env: Optional[Dict[str, str]] = None, exe: Path = SDKTEST) -> None:
        self.proc = subprocess.Popen(
            command(exe, ["--persistent"]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment(env),
        )
        self.out = bytearray()
        self.err = bytearray()
        self.next_id = 1

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send_bytes(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, frame: Any) -> None:
        self.send_bytes(cbor2.dumps(frame))

    def hello(self) -> Dict[str, Any]:
        """Sends the host's hello and returns the worker's."""
        self.send({"type": "hello", "protocol": 2})
        return self.recv()

    def job(self, inp: Any) -> int:
        """Sends a job; returns its id."""
        job_id = self.next_id
        self.next_id += 1
        self.send({"type": "job", "id": job_id, "input": inp})
        return job_id

    def answer(self, inp: Any) -> List[Dict[str, Any]]:
        """Sends a job and returns its frames up to and including its result or error."""
        job_id = self.job(inp)
        frames = []
        while True:
            frame = self.recv()
            assert frame["id"] == job_id, frame
            frames.append(frame)
            if frame["type"] in ("result", "error"):
                return frames

    def _pump(self, timeout: float) -> bool:
        """Reads what is available on stdout and stderr; False at end of both or timeout."""
        assert self.proc.stdout is not None and self.proc.stderr is not None
        fds = [f for f in (self.proc.stdout, self.proc.stderr) if not f.closed]
        if not fds:
            return False
        ready, _, _ = select.select(fds, [], [], timeout)
        if not ready:
            return False
        for f in ready:
            chunk = os.read(f.fileno(), 65536)
            if not chunk:
                f.close()
            elif f is self.proc.stdout:
                self.out += chunk
            else:
                self.err += chunk
        return True

    def recv(self, timeout: float = TIMEOUT) -> Any:
        """The next frame from the worker."""
        deadline = time.monotonic() + timeout
        while True:
            if self.out:
                stream = io.BytesIO(bytes(self.out))
                try:
                    frame = cbor2.CBORDecoder(stream).decode()
                except cbor2.CBORDecodeEOF:
                    pass
                else:
                    del self.out[: stream.tell()]
                    return frame
            left = deadline - time.monotonic()
            if left <= 0 or not self._pump(left):
                raise AssertionError(
                    f"no frame from the worker; stdout so far {bytes(self.out)!r}, "
                    f"stderr {self.stderr!r}"
                )

    def wait_stderr(self, text: str, timeout: float = TIMEOUT) -> None:
        """Waits until ``text`` appears on the worker's stderr."""
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            left = deadline - time.monotonic()
            if left <= 0 or not self._pump(left):
                raise AssertionError(f"{text!r} never came on stderr: {self.stderr!r}")

    def close(self) -> None:
        """Closes the worker's stdin, as a host does to end it."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def wait(self, timeout: float = TIMEOUT) -> int:
        """Waits for the worker to end, reading the rest of its output; its return code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._pump(deadline - time.monotonic()):
            pass
        return self.proc.wait(max(0.1, deadline - time.monotonic()))

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    @property
    def stderr(self) -> str:
        return self.err.decode("utf-8", "replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None and not f.closed:
                try:
                    f.close()
                except OSError:
                    pass


@pytest.fixture
def session():
    """Starts persistent workers (``session()``, ``session(env)``); kills what is left after
    the test."""
    started: List[Session] = []

    def start(env: Optional[Dict[str, str]] = None, exe: Path = SDKTEST) -> Session:
        worker = Session(env, exe)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()
