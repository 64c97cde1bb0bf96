#!/usr/bin/env python3
"""A GTK 4 window (PyGObject) that runs CPU-bound Python functions on offload workers and
stays responsive: a Gtk.ListView over offload.glib.JobList (a Gio.ListModel), an overall
progress bar, Start and Cancel. A crash in one job fails that row only.

    pip install processors/python/offload      # PyGObject and GTK 4 from the system
    python3 examples/python_gtk.py              # the window
    python3 examples/python_gtk.py --self-test  # starts a batch, cancels one job, quits, prints

tests/python_package.rs runs it with --self-test under Xvfb.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import gi

gi.require_version("Gtk", "4.0")
from gi.repository import Gio, GLib, Gtk  # noqa: E402

import offload  # noqa: E402
from offload.glib import JobList, Jobs  # noqa: E402


#: How long --self-test may take before it gives up (a bound far above its few seconds).
SELF_TEST_LIMIT_S = 300
failed_self_test = False


def too_long(app: Gtk.Application) -> bool:
    global failed_self_test
    print("self-test: too long")
    failed_self_test = True
    app.quit()
    return False


def busy_sum(n: int) -> int:
    """CPU-bound work, with progress the window shows."""
    total = 0
    for i in range(n):
        total += i * i
        if i % 200_000 == 0:
            offload.progress(i / n, f"{i:,} of {n:,}")
    return total


def crash() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def sleep_forever() -> None:
    time.sleep(3600)


class Window(Gtk.ApplicationWindow):
    def __init__(self, app: Gtk.Application, pool: offload.Executor, self_test: bool) -> None:
        super().__init__(application=app, title="offload from GTK 4")
        self.set_default_size(480, 360)
        self.pool = pool
        self.jobs = Jobs(pool)
        self.batch = pool.batch("sums")
        self.model = JobList(self.jobs, self.batch)
        factory = Gtk.SignalListItemFactory()
        factory.connect("setup", lambda _f, item: item.set_child(Gtk.Label(xalign=0)))
        factory.connect("bind", self.bind_row)
        view = Gtk.ListView(model=Gtk.NoSelection(model=self.model), factory=factory)
        scrolled = Gtk.ScrolledWindow(vexpand=True)
        scrolled.set_child(view)
        self.bar = Gtk.ProgressBar()
        self.status = Gtk.Label(label="Press Start", xalign=0)
        start = Gtk.Button(label="Start")
        cancel = Gtk.Button(label="Cancel")
        start.connect("clicked", lambda _b: self.start())
        cancel.connect("clicked", lambda _b: self.batch.cancel())
        buttons = Gtk.Box(spacing=6)
        buttons.append(start)
        buttons.append(cancel)
        box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=6)
        for child in (scrolled, self.bar, self.status, buttons):
            box.append(child)
        self.set_child(box)
        self.jobs.connect("progress", lambda *_: self.update_bar())
        self.jobs.connect("finished", lambda *_: self.update_bar())
        self.jobs.connect("failed", lambda _j, future, error: self.status.set_label(f"{future.tag}: {error}"))
        self.jobs.connect("batch-finished", lambda _j, batch: self.batch_finished())
        self.self_test = self_test
        self.doomed = None
        if self_test:
            self.jobs.connect("started", lambda _j, future: future is self.doomed and future.cancel())

    @staticmethod
    def bind_row(_factory: Gtk.SignalListItemFactory, item: Gtk.ListItem) -> None:
        job = item.get_item()
        label = item.get_child()

        def show(*_: object) -> None:
            text = f"{job.props.label}: {job.props.state}"
            if job.props.state == "running":
                text += f" {job.props.progress:.0%} {job.props.message}"
            label.set_label(text)

        show()
        job.connect("notify", show)

    def start(self) -> None:
        for i in range(6):
            self.batch.submit_tagged(f"sum {i}", busy_sum, 2_000_000 + i)
        self.batch.submit_tagged("crash", crash)
        self.doomed = self.batch.submit_tagged("forever", sleep_forever)

    def update_bar(self) -> None:
        self.bar.set_fraction(self.batch.progress())
        counts = self.batch.counts()
        self.status.set_label(
            f"{counts.succeeded} done, {counts.failed} failed, {counts.cancelled} cancelled, "
            f"{counts.running} running"
        )

    def batch_finished(self) -> None:
        self.update_bar()
        if self.self_test:
            items = [self.model.get_item(i) for i in range(self.model.get_n_items())]
            print(f"rows {len(items)}")
            print("states " + " ".join(item.props.state for item in items))
            print("status " + self.status.get_label())
            self.get_application().quit()


def main() -> int:
    self_test = "--self-test" in sys.argv
    with offload.Executor(max_workers=2) as pool:
        app = Gtk.Application(
            application_id="org.offload.PythonExample", flags=Gio.ApplicationFlags.NON_UNIQUE
        )

        def activate(app: Gtk.Application) -> None:
            window = Window(app, pool, self_test)
            window.present()
            if self_test:
                window.start()
                # A self-test that never ends fails instead of hanging its caller.
                GLib.timeout_add_seconds(SELF_TEST_LIMIT_S, too_long, app)

        app.connect("activate", activate)
        code = app.run([sys.argv[0]])
        pool.cancel_all()
    return 1 if failed_self_test else code


if __name__ == "__main__":
    sys.exit(main())
