#!/usr/bin/env python3
"""How much a PySide6 window stalls while 40 CPU-bound jobs run, with offload.Executor (and
offload.qt delivering results and progress on the GUI thread) against ProcessPoolExecutor
(results taken to the GUI thread by a queued signal), at the same parallelism. A 5 ms QTimer
ticks on the GUI thread throughout; a stall is a gap between ticks beyond 5 ms. Start-up is
included: the pool is made once the timer runs.

    QT_QPA_PLATFORM=offscreen python3 processors/python/offload/bench/gui_stall.py [-j 2]

Prints, per pool, the worst gap and the 99th percentile of the gaps, and the wall time.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import os
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from PySide6 import QtCore, QtWidgets  # noqa: E402

import offload  # noqa: E402
from offload.qt import Jobs  # noqa: E402

JOBS = 40
SPIN = 3_000_000  # about 0.15 s of Python per job here


def busy(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
        if i % 500_000 == 0:
            offload.progress(i / n)
    return total


class Done(QtCore.QObject):
    one = QtCore.Signal(object)


def run(kind: str, workers: int, app: QtWidgets.QApplication) -> tuple:
    window = QtWidgets.QWidget()
    bar = QtWidgets.QProgressBar(window)
    bar.setRange(0, JOBS)
    window.show()
    ticks = []
    timer = QtCore.QTimer()
    timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(5)
    ended = []
    loop = QtCore.QEventLoop()
    holder = {}

    def one_done(_future, *_):
        ended.append(1)
        bar.setValue(len(ended))
        if len(ended) == JOBS:
            loop.quit()

    def start():
        if kind == "offload":
            pool = offload.Executor(max_workers=workers)
            holder["jobs"] = jobs = Jobs(pool)
            jobs.finished.connect(one_done)
            jobs.progress.connect(lambda *_: None)
        else:
            pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            holder["done"] = done = Done()
            done.one.connect(one_done, QtCore.Qt.ConnectionType.QueuedConnection)
        holder["pool"] = pool
        for _ in range(JOBS):
            future = pool.submit(busy, SPIN)
            if kind != "offload":
                future.add_done_callback(lambda f: holder["done"].one.emit(f))

    begin = time.perf_counter()
    QtCore.QTimer.singleShot(0, start)
    loop.exec()
    wall = time.perf_counter() - begin
    timer.stop()
    holder["pool"].shutdown()
    if "jobs" in holder:
        holder["jobs"].close()
    window.close()
    if os.environ.get("GUI_STALL_DEBUG"):
        worst = sorted(((b - a) * 1000, a - begin) for a, b in zip(ticks, ticks[1:]))[-5:]
        print(kind, "worst gaps (ms, at s):", [(round(g, 1), round(t, 2)) for g, t in worst])
    gaps = sorted((b - a) * 1000 for a, b in zip(ticks, ticks[1:]))
    p99 = gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))]
    return gaps[-1], p99, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-j", type=int, default=2)
    args = parser.parse_args()
    app = QtWidgets.QApplication(sys.argv[:1])
    for kind in ("pool", "offload"):
        worst, p99, wall = run(kind, args.j, app)
        print(f"{kind:8} -j {args.j}: worst 5 ms tick gap {worst:6.1f} ms, p99 {p99:5.1f} ms, "
              f"{JOBS} jobs in {wall:.2f} s", flush=True)


if __name__ == "__main__":
    main()
