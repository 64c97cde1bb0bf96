"""The exceptions a future can end with, besides the function's own.

A function that raises has its exception re-raised by ``result()``, with the worker's
traceback as its ``__cause__`` (a :class:`RemoteTraceback`), as ``ProcessPoolExecutor`` does.
A job that ends without an answer (its process crashed, was killed, ran past its timeout or
over its memory limit, broke the protocol) ends with :class:`JobFailed`, for that future only:
the executor and every other job go on.
"""

from __future__ import annotations

from concurrent.futures import BrokenExecutor
from typing import Any, Dict, Optional

#: The kinds a :class:`JobFailed` has (PROTOCOL.md 19.3; README, "The offload command").
KINDS = (
    "failed",
    "killed",
    "timed_out",
    "cancelled",
    "bad_output",
    "resource_limit",
    "could_not_start",
    "launch_failed",
    "output_not_written",
    "serve_exited",
)


class JobFailed(Exception):
    """A job ended without a result: its process failed, not the function.

    ``kind`` says how (``"killed"``: by a signal, ``"failed"``: it exited with a code or the
    processor reported a failure, ``"timed_out"``, ``"resource_limit"``: over its memory or
    CPU-time limit, ``"bad_output"``, ``"could_not_start"``: also an input refused before it
    ran; ``"serve_exited"``: the ``offload serve`` behind the executor ended), ``message`` one
    line a person can act on, ``exit_code`` and ``signal`` what the process ended with (or
    ``None``), ``stderr_tail`` the end of what it wrote to stderr, ``reported`` the
    processor's own report when it made one, ``stats`` the job's figures.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        exit_code: Optional[int] = None,
        signal: Optional[int] = None,
        stderr_tail: str = "",
        reported: Optional[Dict[str, Any]] = None,
        stats: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(kind, message)
        self.kind = kind
        self.message = message
        self.exit_code = exit_code
        self.signal = signal
        self.stderr_tail = stderr_tail
        self.reported = reported
        self.stats = stats or {}

    @classmethod
    def from_event(cls, error: Dict[str, Any], stats: Optional[Dict[str, Any]]) -> JobFailed:
        """From a ``finished`` event's ``error`` map."""
        return cls(
            str(error.get("kind") or "failed"),
            str(error.get("message") or ""),
            error.get("exit_code"),
            error.get("signal"),
            str(error.get("stderr_tail") or ""),
            error.get("reported"),
            stats,
        )

    def __str__(self) -> str:
        how = self.kind
        if self.signal is not None:
            how += f", signal {self.signal}"
        elif self.exit_code is not None:
            how += f", exit code {self.exit_code}"
        text = f"{how}: {self.message}"
        tail = self.stderr_tail.strip()
        if tail:
            text += "\n--- the end of its stderr ---\n" + tail
        return text

    def __reduce__(self) -> Any:
        return (
            JobFailed,
            (
                self.kind,
                self.message,
                self.exit_code,
                self.signal,
                self.stderr_tail,
                self.reported,
                self.stats,
            ),
        )


class RemoteTraceback(Exception):
    """The worker's traceback, as the ``__cause__`` of an exception the function raised."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class RemoteError(Exception):
    """An exception the function raised that could not be pickled back: its type's name, its
    message and the worker's traceback."""

    def __init__(self, type_name: str, message: str, traceback: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback = traceback


class BrokenOffloadExecutor(BrokenExecutor):
    """The ``offload serve`` behind an executor is gone (it could not start, or ended): no job
    can be submitted to it. Jobs it had fail as :class:`JobFailed` of kind
    ``"serve_exited"``."""


class WorkerBootstrapError(RuntimeError):
    """An executor was made while a worker was still importing the main script: guard the
    script's work with ``if __name__ == "__main__":``, as with multiprocessing."""
