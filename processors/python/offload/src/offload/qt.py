"""An executor's jobs as Qt signals and a list model, delivered on the GUI thread (PySide6 or
PyQt6, whichever the app imported first; else PySide6, else PyQt6).

::

    from offload.qt import Jobs, JobListModel

    jobs = Jobs(executor)                       # made on the GUI thread
    jobs.result.connect(lambda future, value: ...)
    jobs.failed.connect(lambda future, error: ...)   # JobFailed, or the function's exception
    jobs.progress.connect(lambda future, fraction, message: ...)
    view.setModel(JobListModel(jobs, batch))     # a row per job of the batch (or of all)

Events reach the GUI thread through one queued signal per burst, not a timer; see
``offload._relay``.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional

from ._relay import Relay, signals_of, state_of
from .executor import Batch, Executor, Future


def _binding() -> Any:
    for name in ("PySide6", "PyQt6"):
        if name in sys.modules:
            break
    else:
        try:
            import PySide6  # noqa: F401

            name = "PySide6"
        except ImportError:
            import PyQt6  # noqa: F401

            name = "PyQt6"
    import importlib

    return importlib.import_module(f"{name}.QtCore")


QtCore = _binding()
Signal = getattr(QtCore, "Signal", None) or QtCore.pyqtSignal
Qt = QtCore.Qt

#: Signal names that Qt spells otherwise than GObject (``_relay.signals_of``).
_QT_NAMES = {"batch-finished": "batchFinished"}


class Jobs(QtCore.QObject):
    """An executor's events as signals, emitted on the thread this object lives on (make it
    on the GUI thread). Each signal's first argument is the job's :class:`offload.Future`."""

    #: A job was submitted.
    submitted = Signal(object)
    #: Its process took it.
    started = Signal(object)
    #: It reported progress: fraction (0.0 to 1.0), message ("" when none).
    progress = Signal(object, float, str)
    #: It returned: its value.
    result = Signal(object, object)
    #: It failed: a :class:`offload.JobFailed`, or the exception the function raised.
    failed = Signal(object, object)
    #: It was cancelled.
    cancelled = Signal(object)
    #: It ended, whichever way (after result, failed or cancelled).
    finished = Signal(object)
    #: Every job submitted to this batch so far has ended.
    batchFinished = Signal(object)

    _wake = Signal()

    def __init__(self, executor: Executor, parent: Optional[Any] = None) -> None:
        super().__init__(parent)
        self.executor = executor
        self._relay = Relay(self._wake.emit, self._deliver)
        self._wake.connect(self._drain, Qt.ConnectionType.QueuedConnection)
        executor.add_listener(self._relay)

    def _drain(self) -> None:
        # A slot that returns nothing: PySide6 (6.12) mishandles the reference count of a
        # bool a queued slot returns, and the interpreter aborts at exit.
        self._relay.drain()

    def close(self) -> None:
        """Stops hearing the executor."""
        self.executor.remove_listener(self._relay)

    def _deliver(self, kind: str, item: Any) -> None:
        for name, args in signals_of(kind, item):
            getattr(self, _QT_NAMES.get(name, name)).emit(*args)


class JobListModel(QtCore.QAbstractListModel):
    """A row per job (of one batch, or of every batch), for a ``QListView`` or QML: rows are
    added as jobs are submitted and change as they start, progress and end.

    Roles: ``DisplayRole`` (a line for people), and :attr:`FutureRole` (the future),
    :attr:`StateRole` (``queued``, ``running``, ``done``, ``failed``, ``cancelled``),
    :attr:`ProgressRole` (0.0 to 1.0), :attr:`MessageRole`, :attr:`TagRole`.
    """

    FutureRole = Qt.ItemDataRole.UserRole + 1
    StateRole = Qt.ItemDataRole.UserRole + 2
    ProgressRole = Qt.ItemDataRole.UserRole + 3
    MessageRole = Qt.ItemDataRole.UserRole + 4
    TagRole = Qt.ItemDataRole.UserRole + 5

    def __init__(self, jobs: Jobs, batch: Optional[Batch] = None, parent: Optional[Any] = None) -> None:
        super().__init__(parent)
        self._batch = batch
        self._futures: List[Future] = []
        self._rows: Dict[int, int] = {}
        if batch is not None:
            for future in list(batch.futures):
                self._append(future)
        jobs.submitted.connect(self._on_submitted)
        for signal in (jobs.started, jobs.finished, jobs.cancelled):
            signal.connect(self._changed)
        jobs.progress.connect(lambda future, _fraction, _message: self._changed(future))

    def _on_submitted(self, future: Future) -> None:
        if self._batch is not None and future.batch is not self._batch:
            return
        if future.job_id not in self._rows:
            self._append(future)

    def _append(self, future: Future) -> None:
        row = len(self._futures)
        self.beginInsertRows(QtCore.QModelIndex(), row, row)
        self._futures.append(future)
        self._rows[future.job_id] = row
        self.endInsertRows()

    def _changed(self, future: Future) -> None:
        row = self._rows.get(future.job_id)
        if row is not None:
            index = self.index(row, 0)
            self.dataChanged.emit(index, index)

    def future(self, row: int) -> Future:
        return self._futures[row]

    def rowCount(self, parent: Any = None) -> int:  # noqa: N802 - Qt's name
        if parent is not None and parent.isValid():
            return 0
        return len(self._futures)

    def data(self, index: Any, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._futures):
            return None
        future = self._futures[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            name = future.label if future.tag is None else f"{future.label} {future.tag}"
            state = state_of(future)
            if state == "running":
                text = f"{name}: {future.progress:.0%}"
                return f"{text} {future.message}" if future.message else text
            return f"{name}: {state}"
        if role == self.FutureRole:
            return future
        if role == self.StateRole:
            return state_of(future)
        if role == self.ProgressRole:
            return 1.0 if future.done() else future.progress
        if role == self.MessageRole:
            return future.message or ""
        if role == self.TagRole:
            return future.tag
        return None

    def roleNames(self) -> Dict[int, bytes]:  # noqa: N802 - Qt's name
        names = dict(super().roleNames())
        names.update(
            {
                self.FutureRole: b"future",
                self.StateRole: b"state",
                self.ProgressRole: b"progress",
                self.MessageRole: b"message",
                self.TagRole: b"tag",
            }
        )
        return names
