#!/usr/bin/env python3
"""A PySide6 window that runs CPU-bound Python functions on offload workers and stays
responsive: a list of jobs (offload.qt.JobListModel), an overall progress bar, Start and
Cancel. A crash in one job fails that row only.

    pip install processors/python/offload PySide6-Essentials
    python3 examples/python_qt.py               # the window
    python3 examples/python_qt.py --self-test   # starts a batch, cancels one job, quits, prints

tests/python_package.rs runs it with --self-test on Qt's offscreen platform.
"""

from __future__ import annotations

import os
import signal
import sys

from PySide6 import QtCore, QtWidgets

import offload
from offload.qt import JobListModel, Jobs


#: How long --self-test may take before it gives up (a bound far above its few seconds).
SELF_TEST_LIMIT_MS = 300_000


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
    import time

    time.sleep(3600)


class Window(QtWidgets.QWidget):
    def __init__(self, pool: offload.Executor, self_test: bool) -> None:
        super().__init__()
        self.setWindowTitle("offload from PySide6")
        self.pool = pool
        self.jobs = Jobs(pool, self)
        self.batch = pool.batch("sums")
        self.model = JobListModel(self.jobs, self.batch, self)
        self.view = QtWidgets.QListView()
        self.view.setModel(self.model)
        self.bar = QtWidgets.QProgressBar()
        self.bar.setRange(0, 1000)
        self.status = QtWidgets.QLabel("Press Start")
        start = QtWidgets.QPushButton("Start")
        cancel = QtWidgets.QPushButton("Cancel")
        start.clicked.connect(self.start)
        cancel.clicked.connect(self.batch.cancel)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(start)
        buttons.addWidget(cancel)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.view)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.jobs.progress.connect(lambda *_: self.update_bar())
        self.jobs.finished.connect(lambda *_: self.update_bar())
        self.jobs.failed.connect(lambda future, error: self.status.setText(f"{future.tag}: {error}"))
        self.jobs.batchFinished.connect(self.batch_finished)
        self.self_test = self_test
        self.doomed = None
        if self_test:
            self.jobs.started.connect(self.cancel_the_doomed_one)

    def start(self) -> None:
        for i in range(6):
            self.batch.submit_tagged(f"sum {i}", busy_sum, 2_000_000 + i)
        self.batch.submit_tagged("crash", crash)
        self.doomed = self.batch.submit_tagged("forever", sleep_forever)

    def cancel_the_doomed_one(self, future: offload.Future) -> None:
        if future is self.doomed:
            future.cancel()  # a running job: its process is stopped

    def update_bar(self) -> None:
        self.bar.setValue(int(self.batch.progress() * 1000))
        counts = self.batch.counts()
        self.status.setText(
            f"{counts.succeeded} done, {counts.failed} failed, {counts.cancelled} cancelled, "
            f"{counts.running} running"
        )

    def batch_finished(self, batch: offload.Batch) -> None:
        self.update_bar()
        if self.self_test:
            rows = self.model.rowCount()
            states = [self.model.data(self.model.index(r, 0), JobListModel.StateRole) for r in range(rows)]
            print(f"rows {rows}")
            print("states " + " ".join(states))
            print("status " + self.status.text())
            QtWidgets.QApplication.quit()


def main() -> int:
    self_test = "--self-test" in sys.argv
    app = QtWidgets.QApplication([a for a in sys.argv if a != "--self-test"])
    with offload.Executor(max_workers=2) as pool:
        window = Window(pool, self_test)
        window.resize(480, 360)
        window.show()
        if self_test:
            QtCore.QTimer.singleShot(0, window.start)
            # A self-test that never ends fails instead of hanging its caller.
            QtCore.QTimer.singleShot(SELF_TEST_LIMIT_MS, lambda: (print("self-test: too long"), app.exit(1)))
        code = app.exec()
        pool.cancel_all()
        window.jobs.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
