"""An executor's jobs as GObject signals and a ``Gio.ListModel``, delivered on a GLib main
context (PyGObject; GTK 4 list views bind to the model).

::

    from offload.glib import Jobs, JobList

    jobs = Jobs(executor)                                  # the default main context
    jobs.connect("result", lambda jobs, future, value: ...)
    jobs.connect("failed", lambda jobs, future, error: ...)
    jobs.connect("progress", lambda jobs, future, fraction, message: ...)
    model = JobList(jobs, batch)             # JobObject items: label, state, progress, message

The reader thread queues events and adds one idle source per burst (``GLib.idle_add``, or a
source on ``context``): no polling timer. See ``offload._relay``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import gi

gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib, GObject  # noqa: E402

from ._relay import Relay, signals_of, state_of  # noqa: E402
from .executor import Batch, Executor, Future  # noqa: E402

_SIGNAL = GObject.SignalFlags.RUN_FIRST


class Jobs(GObject.Object):
    """An executor's events as signals, emitted on ``context`` (default: the default main
    context). Each signal's first argument after the emitter is the job's
    :class:`offload.Future`."""

    __gsignals__ = {
        "submitted": (_SIGNAL, None, (object,)),
        "started": (_SIGNAL, None, (object,)),
        "progress": (_SIGNAL, None, (object, float, str)),
        "result": (_SIGNAL, None, (object, object)),
        "failed": (_SIGNAL, None, (object, object)),
        "cancelled": (_SIGNAL, None, (object,)),
        "finished": (_SIGNAL, None, (object,)),
        "batch-finished": (_SIGNAL, None, (object,)),
    }

    def __init__(self, executor: Executor, context: Optional[GLib.MainContext] = None) -> None:
        super().__init__()
        self.executor = executor
        self._context = context
        self._relay = Relay(self._wake, self._deliver)
        executor.add_listener(self._relay)

    def close(self) -> None:
        """Stops hearing the executor."""
        self.executor.remove_listener(self._relay)

    def _wake(self) -> None:
        if self._context is None:
            GLib.idle_add(self._relay.drain, priority=GLib.PRIORITY_DEFAULT)
        else:
            source = GLib.Idle.new()
            source.set_priority(GLib.PRIORITY_DEFAULT)
            source.set_callback(lambda *_: self._relay.drain())
            source.attach(self._context)

    def _deliver(self, kind: str, item: Any) -> None:
        for name, args in signals_of(kind, item):
            self.emit(name, *args)


class JobObject(GObject.Object):
    """One job, as a list model's item: its properties change (``notify``) as it runs."""

    label = GObject.Property(type=str, default="")
    state = GObject.Property(type=str, default="queued")
    progress = GObject.Property(type=float, default=0.0)
    message = GObject.Property(type=str, default="")

    def __init__(self, future: Future) -> None:
        super().__init__()
        #: The job's future (its result, its tag).
        self.future = future
        self.label = future.label if future.tag is None else f"{future.label} {future.tag}"

    def update(self) -> None:
        future = self.future
        state = state_of(future)
        progress = 1.0 if future.done() else future.progress
        message = future.message or ""
        if state != self.state:
            self.state = state
        if progress != self.progress:
            self.progress = progress
        if message != self.message:
            self.message = message


class JobList(GObject.Object, Gio.ListModel):
    """A ``Gio.ListModel`` of :class:`JobObject`: one per job (of one batch, or of every
    batch), added as jobs are submitted."""

    def __init__(self, jobs: Jobs, batch: Optional[Batch] = None) -> None:
        super().__init__()
        self._batch = batch
        self._items: List[JobObject] = []
        self._by_id: Dict[int, JobObject] = {}
        if batch is not None:
            for future in list(batch.futures):
                self._append(future)
        jobs.connect("submitted", lambda _jobs, future: self._on_submitted(future))
        for name in ("started", "finished"):
            jobs.connect(name, lambda _jobs, future: self._changed(future))
        jobs.connect("progress", lambda _jobs, future, *_: self._changed(future))

    def _on_submitted(self, future: Future) -> None:
        if self._batch is not None and future.batch is not self._batch:
            return
        if future.job_id not in self._by_id:
            self._append(future)

    def _append(self, future: Future) -> None:
        item = JobObject(future)
        item.update()
        self._by_id[future.job_id] = item
        self._items.append(item)
        self.items_changed(len(self._items) - 1, 0, 1)

    def _changed(self, future: Future) -> None:
        item = self._by_id.get(future.job_id)
        if item is not None:
            item.update()

    def do_get_item_type(self) -> GObject.GType:
        return JobObject.__gtype__

    def do_get_n_items(self) -> int:
        return len(self._items)

    def do_get_item(self, position: int) -> Optional[JobObject]:
        if 0 <= position < len(self._items):
            return self._items[position]
        return None
