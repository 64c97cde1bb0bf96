"""What a processor function gets besides its input: progress reporting, cancellation, and
what ``setup`` returned.

Mirrors the Rust SDK's ``context.rs``.

Cancellation: the host stops a job with SIGTERM (PROTOCOL.md, section 9). SIGTERM keeps its
default action, immediate death, which is always correct, until the running job first asks
:attr:`Context.cancelled` (or calls :meth:`Context.check_cancelled`): from then until the job
ends, SIGTERM only raises a flag that the function sees at its next check. Unlike the Rust
SDK, where asking once means watching for the rest of the process, the Python SDK watches per
job: a persistent worker between jobs, or serving a job that never asks, still dies at once.
The handler can only be installed from the main thread; a function that asks only from other
threads keeps the default death.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any, Dict, Optional

import cbor2

from .errors import Cancelled
from .frame import FrameWriter
from .frame import progress as progress_frame

#: Environment variable that names the descriptor for progress items (one-shot mode).
PROGRESS_FD_ENV = "OFFLOAD_PROGRESS_FD"

#: In persistent mode progress shares the pipe with results: at most one frame this often.
FRAME_PROGRESS_INTERVAL = 0.020

_cancelled = False  # raised by SIGTERM while a job watches
_watching = False  # whether the flag-raising handler is installed


def _on_sigterm(signum: int, frame: Any) -> None:
    global _cancelled
    _cancelled = True


def _watch() -> None:
    global _watching
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
        _watching = True
    except ValueError:
        pass  # not the main thread: SIGTERM keeps its default action


def end_watch() -> bool:
    """Puts SIGTERM back to its default action after a job; returns whether it arrived while
    the job watched (the host wants the process gone)."""
    global _watching
    if _watching:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _watching = False
    return _cancelled


def progress_fd_from_env() -> Optional[int]:
    """The descriptor named by ``OFFLOAD_PROGRESS_FD`` when it is a number above 2 and open."""
    text = os.environ.get(PROGRESS_FD_ENV, "").strip()
    if not (text.isascii() and text.isdigit()):
        return None
    fd = int(text)
    if fd <= 2:
        return None
    try:
        os.fstat(fd)
    except (OSError, OverflowError):
        return None
    return fd


class Context:
    """Handed to a processor function with its input.

    >>> def work(rows, ctx):
    ...     for row in range(rows):
    ...         ctx.check_cancelled()
    ...         ctx.progress(row / rows, f"row {row} of {rows}")
    ...     return rows
    >>> work(3, Context.detached())
    3
    """

    __slots__ = ("state", "job_id", "_fd", "_writer", "_last")

    def __init__(
        self,
        state: Any = None,
        job_id: Optional[int] = None,
        progress_fd: Optional[int] = None,
        writer: Optional[FrameWriter] = None,
    ) -> None:
        #: What the processor's ``setup`` returned (``None`` without one). Shared by every job
        #: of a persistent worker: keep job-specific results out of it.
        self.state = state
        #: The job's id in persistent mode; ``None`` when the process runs one job.
        self.job_id = job_id
        self._fd = progress_fd
        self._writer = writer
        self._last = -1.0

    @classmethod
    def detached(cls, state: Any = None) -> Context:
        """A context that reports nowhere, for calling a processor function from tests."""
        return cls(state)

    @property
    def reports_progress(self) -> bool:
        """Whether progress goes anywhere (a progress descriptor, or a persistent worker)."""
        return self._fd is not None or self._writer is not None

    def progress(self, fraction: float, message: Optional[str] = None) -> None:
        """Reports how much of the job is done, from 0.0 to 1.0, with an optional short
        message for people (``"row 40 of 256"``). Never fails: when the host stops listening,
        reporting stops and the work goes on.

        In persistent mode reports closer together than 20 ms are dropped, since they share
        the pipe with results.
        """
        if self._writer is not None:
            self._send_frame(fraction, message)
        elif self._fd is not None:
            item: Dict[str, Any] = {"fraction": min(max(float(fraction), 0.0), 1.0)}
            if message is not None:
                item["message"] = str(message)
            try:
                os.write(self._fd, cbor2.dumps(item))  # one write: the item arrives whole
            except OSError:
                self._fd = None

    def _send_frame(self, fraction: float, message: Optional[str]) -> None:
        now = time.monotonic()
        if now < self._last + FRAME_PROGRESS_INTERVAL:
            return
        self._last = now
        fraction = min(max(float(fraction), 0.0), 1.0)
        frame = progress_frame(
            self.job_id or 0, fraction, None if message is None else str(message)
        )
        writer = self._writer
        if writer is None:
            return
        with writer.lock:
            # Checked under the lock: once the job's answer is written, its progress is over.
            if self._writer is None:
                return
            try:
                writer.write_locked(frame)
            except OSError:
                self._writer = None

    def close(self) -> None:
        """Ends reporting: called by the SDK before it writes the job's answer."""
        self._writer = None
        self._fd = None

    @property
    def cancelled(self) -> bool:
        """Whether the host has asked the processor to stop (SIGTERM arrived).

        Asking makes SIGTERM raise this flag, instead of killing the process, until the job
        ends; a function that asks must then keep asking, and stop soon after it turns true.
        """
        if not _watching:
            _watch()
        return _cancelled

    def check_cancelled(self) -> None:
        """Raises :class:`~offload_sdk.Cancelled` once the host has asked the processor to
        stop."""
        if self.cancelled:
            raise Cancelled()
