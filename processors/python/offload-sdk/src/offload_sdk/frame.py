"""The frames of persistent mode (PROTOCOL.md, section 18), and the stream they go out on.

Mirrors the Rust SDK's ``frame.rs`` and the writer of ``persistent.rs``. Each frame is a map
with a text ``type``: the host sends ``hello`` and then one ``job`` per job; the processor
answers ``hello`` once ready, then per job any number of ``progress`` frames and exactly one
``result`` or ``error``, each carrying the job's ``id``.

Nothing but frames may reach stdout, and in one-shot mode nothing but the result (or the
error report, or what ``--describe`` prints). :func:`take_stdout` moves the processor's own
output to a private, close-on-exec duplicate of descriptor 1 and points descriptor 1 at
stderr, so that ``print()``, a library that writes to stdout, or a child process all land in
stderr, in both modes. The package calls it when it is imported by a processor's run (see
:func:`take_stdout_early`), before any of the author's own code runs, and
:meth:`~offload_sdk.Processor.run` calls it at the latest.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
from typing import Any, Dict, List, Optional, Union

import cbor2

#: The argument that starts a processor in persistent mode.
PERSISTENT_FLAG = "--persistent"
#: The protocol version this SDK speaks.
PROTOCOL_VERSION = 2

HELLO = "hello"
JOB = "job"
RESULT = "result"
ERROR = "error"
PROGRESS = "progress"

_frames_fd: Optional[int] = None
_take_error: Optional[OSError] = None


def take_stdout() -> int:
    """The descriptor the processor's own output (frames, the result) goes to; on the first
    call, moves stdout there and points descriptor 1 at stderr. Raises :class:`OSError` when
    that cannot be done."""
    global _frames_fd
    if _frames_fd is not None:
        return _frames_fd
    if _take_error is not None:
        raise _take_error
    stdout = sys.stdout
    if stdout is not None:
        stdout.flush()  # what was printed before belongs to the real stdout
    private = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    try:
        os.dup2(2, 1)
    except OSError:
        os.close(private)
        raise
    if stdout is not None:
        try:
            # Prints now go to stderr: line by line, so they interleave with its other lines.
            stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            pass
    _frames_fd = private
    return private


#: The arguments a processor is run with (PROTOCOL.md): a command line of these alone is a
#: processor's run.
PROCESSOR_ARGS = frozenset(
    {"--json", PERSISTENT_FLAG, "--describe", "--help", "-h", "--version", "-V"}
)


def take_stdout_early(argv: List[str]) -> None:
    """Called when the package is imported: takes stdout if this process is a processor's run
    (a script whose arguments are a processor's, none included), and keeps any failure to
    report when the output is written. A program that imports the package for its helpers
    with arguments of its own, ``python -c`` and an interactive session keep their stdout."""
    global _take_error
    script = bool(argv) and argv[0] not in ("", "-c") and not hasattr(sys, "ps1")
    if script and not sys.flags.interactive and all(a in PROCESSOR_ARGS for a in argv[1:]):
        try:
            take_stdout()
        except OSError as err:
            _take_error = err


class FrameWriter:
    """Writes whole frames to the host; frames from several threads never interleave."""

    __slots__ = ("fd", "lock")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()

    def write(self, frame: bytes) -> None:
        """Writes one encoded frame; raises :class:`OSError` when the host is gone."""
        with self.lock:
            self.write_locked(frame)

    def write_locked(self, frame: Union[bytes, memoryview]) -> None:
        """Writes one encoded frame; the caller holds :attr:`lock`."""
        written = os.write(self.fd, frame)
        if written < len(frame):
            view = memoryview(frame)[written:]
            while view:
                view = view[os.write(self.fd, view) :]


def hello(name: str, version: Optional[str]) -> bytes:
    """The worker's ``hello`` frame."""
    frame: Dict[str, Any] = {"type": HELLO, "protocol": PROTOCOL_VERSION, "name": name}
    if version is not None:
        frame["version"] = version
    return cbor2.dumps(frame)


def result(job_id: int, value: Any) -> bytes:
    """A whole ``result`` frame, encoded at once so a failure never leaves half a frame.
    Raises whatever cbor2 raises for a value it cannot encode."""
    return cbor2.dumps({"type": RESULT, "id": job_id, "result": value})


def error(job_id: int, message: str, kind: str) -> bytes:
    """An ``error`` frame."""
    return cbor2.dumps({"type": ERROR, "id": job_id, "error": message, "kind": kind})


def progress(job_id: int, fraction: float, message: Optional[str]) -> bytes:
    """A ``progress`` frame; ``fraction`` must already be a float."""
    frame: Dict[str, Any] = {"type": PROGRESS, "id": job_id, "fraction": fraction}
    if message is not None:
        frame["message"] = message
    return cbor2.dumps(frame)
