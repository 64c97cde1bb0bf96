"""offload.qt on a real (offscreen) Qt event loop: signals on the GUI thread, and a list
model whose rows follow a batch."""

from __future__ import annotations

import os
import threading

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from PySide6 import QtCore  # noqa: E402 - after the platform is chosen

import offload
from offload.qt import JobListModel, Jobs

import jobs

PATIENCE_MS = 60_000


@pytest.fixture(scope="module")
def app():
    return QtCore.QCoreApplication.instance() or QtCore.QCoreApplication([])


def run_until(app, done, ms=PATIENCE_MS):
    """Runs the Qt loop until ``done()``; fails after ``ms`` (a bound, never reached when right)."""
    loop = QtCore.QEventLoop()
    guard = QtCore.QTimer()
    guard.setSingleShot(True)
    guard.timeout.connect(loop.quit)
    guard.start(ms)
    check = QtCore.QTimer()
    check.timeout.connect(lambda: done() and loop.quit())
    check.start(5)
    if not done():
        loop.exec()
    check.stop()
    assert done(), "the Qt loop did not see the jobs end"


def test_signals_arrive_on_the_gui_thread_with_results_failures_and_progress(app):
    gui = threading.get_ident()
    heard = []
    pool = offload.Executor(max_workers=2)
    try:
        signals = Jobs(pool)

        def record(kind):
            def slot(*args):
                heard.append((kind, threading.get_ident(), args))

            return slot

        signals.started.connect(record("started"))
        signals.progress.connect(record("progress"))
        signals.result.connect(record("result"))
        signals.failed.connect(record("failed"))
        signals.batchFinished.connect(record("batch"))
        batch = pool.batch("b")
        ok = batch.submit(jobs.reports_progress, 3)
        bad = batch.submit(jobs.exits, 9)
        run_until(app, lambda: any(k == "batch" for k, _, _ in heard))
        assert {thread for _, thread, _ in heard} == {gui}
        kinds = [k for k, _, _ in heard]
        assert "started" in kinds and "progress" in kinds
        results = [args for k, _, args in heard if k == "result"]
        assert results == [(ok, 3)]
        (failure,) = [args for k, _, args in heard if k == "failed"]
        assert failure[0] is bad and isinstance(failure[1], offload.JobFailed)
        assert failure[1].exit_code == 9
        assert kinds[-1] == "batch"
    finally:
        pool.kill()


def test_the_models_rows_follow_a_batch(app):
    pool = offload.Executor(max_workers=2)
    try:
        signals = Jobs(pool)
        batch = pool.batch("squares")
        other = pool.batch("other")
        model = JobListModel(signals, batch)
        inserted = []
        model.rowsInserted.connect(lambda _parent, first, last: inserted.append((first, last)))
        for i in range(5):
            batch.submit_tagged(i, jobs.square, i)
        other.submit(jobs.square, 100)  # not this model's
        doomed = batch.submit_tagged("slow", jobs.sleeps, 600)
        run_until(app, lambda: model.rowCount() == 6 and doomed.running())
        assert doomed.cancel() is True
        run_until(app, lambda: batch.done() and other.done())
        run_until(app, lambda: model.data(model.index(5, 0), JobListModel.StateRole) == "cancelled")
        assert model.rowCount() == 6
        assert inserted == [(r, r) for r in range(6)]
        states = [model.data(model.index(r, 0), JobListModel.StateRole) for r in range(6)]
        assert states == ["done"] * 5 + ["cancelled"]
        tags = [model.data(model.index(r, 0), JobListModel.TagRole) for r in range(6)]
        assert tags == [0, 1, 2, 3, 4, "slow"]
        assert [model.future(r).result() for r in range(5)] == [0, 1, 4, 9, 16]
        assert model.data(model.index(0, 0)) == "square 0: done"
        assert model.data(model.index(0, 0), JobListModel.ProgressRole) == 1.0
    finally:
        pool.kill()
