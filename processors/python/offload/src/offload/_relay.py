"""Taking an executor's events from its reader thread to a GUI thread (or an event loop),
without a polling timer.

The reader thread queues each event and wakes the other thread once per burst (a Qt queued
signal, ``GLib.idle_add``, ``loop.call_soon_threadsafe``); that thread drains the queue in one
go, for at most :data:`BUDGET` seconds before it yields to its loop and wakes itself again,
so that a flood of events never stalls a window. The adapters (``offload.qt``,
``offload.glib``, ``offload.aio``) are relays with their own ``deliver``.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Deque, List, Tuple

from .executor import Batch, Future, Listener

#: How long one drain may run before it yields to the loop (seconds).
BUDGET = 0.004

SUBMITTED = "submitted"
STARTED = "started"
PROGRESS = "progress"
FINISHED = "finished"
BATCH_FINISHED = "batch_finished"


def state_of(future: Future) -> str:
    """``queued``, ``running``, ``done``, ``failed`` or ``cancelled``."""
    if future.cancelled():
        return "cancelled"
    if future.done():
        return "failed" if future.exception() is not None else "done"
    return "running" if future.running() else "queued"


def signals_of(kind: str, item: Any) -> List[Tuple[str, Tuple[Any, ...]]]:
    """The signals (name, arguments) an adapter emits for one event, in order: a finished job
    gives ``result``, ``failed`` or ``cancelled``, then ``finished``. Names as GObject spells
    them (``batch-finished``)."""
    if kind == FINISHED:
        future = item
        if future.cancelled():
            ending: Tuple[str, Tuple[Any, ...]] = ("cancelled", (future,))
        else:
            error = future.exception()
            if error is None:
                ending = ("result", (future, future.result()))
            else:
                ending = ("failed", (future, error))
        return [ending, ("finished", (future,))]
    if kind == PROGRESS:
        return [("progress", (item, item.progress, item.message or ""))]
    if kind == BATCH_FINISHED:
        return [("batch-finished", (item,))]
    return [(kind, (item,))]  # submitted, started


class Relay(Listener):
    """A :class:`~offload.Listener` that hands every event to ``deliver(kind, item)`` on
    the thread ``wake`` schedules :meth:`drain` on."""

    def __init__(self, wake: Callable[[], None], deliver: Callable[[str, Any], None]) -> None:
        self._wake = wake
        self._deliver = deliver
        self._events: Deque[Tuple[str, Any]] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def _post(self, kind: str, item: Any) -> None:
        with self._lock:
            self._events.append((kind, item))
            if self._scheduled:
                return
            self._scheduled = True
        self._wake()

    def submitted(self, future: Future) -> None:
        self._post(SUBMITTED, future)

    def started(self, future: Future) -> None:
        self._post(STARTED, future)

    def progress(self, future: Future) -> None:
        self._post(PROGRESS, future)

    def finished(self, future: Future) -> None:
        self._post(FINISHED, future)

    def batch_finished(self, batch: Batch) -> None:
        self._post(BATCH_FINISHED, batch)

    def drain(self) -> bool:
        """Delivers what is queued, on the thread this runs on; ``False`` (for GLib: remove
        the idle source)."""
        deadline = time.monotonic() + BUDGET
        events, lock, deliver = self._events, self._lock, self._deliver
        while True:
            with lock:
                if not events:
                    self._scheduled = False
                    return False
                kind, item = events.popleft()
            deliver(kind, item)
            if time.monotonic() > deadline:
                self._wake()  # still scheduled: the rest after the loop has had its turn
                return False
