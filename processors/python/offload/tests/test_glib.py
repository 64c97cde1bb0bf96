"""offload.glib on a real GLib main loop: signals on the loop's thread, a Gio.ListModel of a
batch's jobs."""

from __future__ import annotations

import threading
import time

import gi

gi.require_version("Gio", "2.0")
from gi.repository import GLib  # noqa: E402

import offload  # noqa: E402
from offload.glib import JobList, JobObject, Jobs  # noqa: E402

import jobs  # noqa: E402

PATIENCE_S = 60


def run_until(done):
    """Iterates the default main context until ``done()``; fails after a bound never reached
    when right. (A 100 ms heartbeat wakes the test's own check; the adapter needs none.)"""
    context = GLib.MainContext.default()
    deadline = time.monotonic() + PATIENCE_S
    heartbeat = GLib.timeout_add(100, lambda: True)
    try:
        while not done() and time.monotonic() < deadline:
            context.iteration(True)
    finally:
        GLib.source_remove(heartbeat)
    assert done()


def test_signals_and_the_list_model_follow_a_batch():
    loop_thread = threading.get_ident()
    heard = []
    pool = offload.Executor(max_workers=2)
    try:
        signals = Jobs(pool)
        for name in ("started", "result", "failed", "cancelled", "batch-finished"):
            signals.connect(name, lambda _s, item, *rest, name=name: heard.append((name, threading.get_ident(), item, rest)))
        signals.connect("progress", lambda _s, f, fraction, message: heard.append(("progress", threading.get_ident(), f, (fraction, message))))
        batch = pool.batch("b")
        model = JobList(signals, batch)
        changes = []
        model.connect("items-changed", lambda _m, pos, removed, added: changes.append((pos, removed, added)))
        futures = [batch.submit_tagged(i, jobs.square, i) for i in range(3)]
        futures.append(batch.submit_tagged("p", jobs.reports_progress, 2))
        futures.append(batch.submit_tagged("x", jobs.exits, 5))
        pool.submit(jobs.square, 100)  # not the batch's
        run_until(lambda: any(k == "batch-finished" for k, *_ in heard))
        assert {t for _, t, _, _ in heard} == {loop_thread}
        assert model.get_n_items() == 5
        assert model.get_item_type() == JobObject.__gtype__
        assert changes == [(i, 0, 1) for i in range(5)]
        states = [model.get_item(i).props.state for i in range(5)]
        assert states == ["done"] * 4 + ["failed"]
        assert [model.get_item(i).future.tag for i in range(5)] == [0, 1, 2, "p", "x"]
        assert any(k == "progress" for k, *_ in heard)
        results = sorted(rest[0] for k, _, f, rest in heard if k == "result" and f.batch is batch)
        assert results == [0, 1, 2, 4]
    finally:
        pool.kill()
