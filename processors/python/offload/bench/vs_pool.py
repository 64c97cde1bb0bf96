#!/usr/bin/env python3
"""offload.Executor against concurrent.futures.ProcessPoolExecutor at the same parallelism,
start-up included (each run makes its pool, does the work, shuts the pool down):

- trivial: N calls of a function that returns its argument (``map``);
- bytes: 4 calls, each given 20 MiB of ``bytes`` and returning its length;
- cancel: J running jobs (sleeping), cancelled; the time from the cancel until no process
  that ran them is left in /proc (ProcessPoolExecutor cannot cancel a running call: its
  figure is ``shutdown(cancel_futures=True)`` plus ``terminate()`` of every worker, for
  reference).

Prints one line per figure and the ratios (ProcessPoolExecutor's time / offload's: above 1.0
is offload faster). Run from the repository with the package installed:

    python3 processors/python/offload/bench/vs_pool.py [-j 2] [--jobs 2000] [--repeat 3] [--nice N]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import os
import statistics
import time

import offload

MIB = 1 << 20


def identity(x):
    return x


def size(data):
    return len(data)


def sleep_long():
    time.sleep(600)


def pid(_=None):
    return os.getpid()


def alive(p: int) -> bool:
    try:
        with open(f"/proc/{p}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


NICE = None  # offload's workers' nice: None is offload's default (10, below the app)


def make(kind: str, workers: int):
    if kind == "offload":
        return offload.Executor(max_workers=workers, nice=NICE)
    return cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def trivial(kind: str, workers: int, jobs: int) -> float:
    start = time.perf_counter()
    with make(kind, workers) as pool:
        assert sum(pool.map(identity, range(jobs))) == jobs * (jobs - 1) // 2
    return time.perf_counter() - start


def big_bytes(kind: str, workers: int, inputs: list) -> float:
    start = time.perf_counter()
    with make(kind, workers) as pool:
        assert list(pool.map(size, inputs)) == [len(b) for b in inputs]
    return time.perf_counter() - start


def cancel(kind: str, workers: int) -> float:
    pool = make(kind, workers)
    if kind == "offload":
        futures = [pool.submit(sleep_long) for _ in range(workers)]
        while not all(f.running() and f.pid for f in futures):
            time.sleep(0.005)
        pids = [f.pid for f in futures]
        start = time.perf_counter()
        for f in futures:
            f.cancel()
    else:
        pids = list(set(pool.map(pid, range(workers * 4))))
        futures = [pool.submit(sleep_long) for _ in range(workers)]
        time.sleep(0.2)  # the calls have reached the workers
        start = time.perf_counter()
        processes = list(pool._processes.values())  # no public way to stop a running call
        pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            p.terminate()
        pids = [p.pid for p in processes]
    while any(alive(p) for p in pids):
        time.sleep(0.0005)
    took = time.perf_counter() - start
    if kind == "offload":
        pool.shutdown()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-j", type=int, default=2, help="workers (both pools)")
    parser.add_argument("--jobs", type=int, default=2000, help="trivial calls")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--nice", type=int, default=None,
                        help="offload's workers' nice (default offload's, 10; "
                        "ProcessPoolExecutor's workers have the caller's, 0)")
    args = parser.parse_args()
    global NICE
    NICE = args.nice
    inputs = [os.urandom(20 * MIB) for _ in range(4)]
    figures = {}
    for name, run in (
        ("trivial", lambda k: trivial(k, args.j, args.jobs)),
        ("bytes", lambda k: big_bytes(k, args.j, inputs)),
        ("cancel", lambda k: cancel(k, args.j)),
    ):
        for kind in ("pool", "offload"):
            times = [run(kind) for _ in range(args.repeat)]
            figures[name, kind] = statistics.median(times)
            print(f"{name:8} {kind:8} median {figures[name, kind] * 1000:9.1f} ms  "
                  f"(runs: {', '.join(f'{t * 1000:.1f}' for t in times)})", flush=True)
    print(f"-j {args.j}, {args.jobs} trivial calls, 4 x 20 MiB, {args.repeat} runs each, "
          f"offload nice {'10 (default)' if NICE is None else NICE}")
    print(f"trivial: {args.jobs / figures['trivial', 'offload']:.0f} calls/s offload, "
          f"{args.jobs / figures['trivial', 'pool']:.0f} calls/s ProcessPoolExecutor, "
          f"ratio {figures['trivial', 'pool'] / figures['trivial', 'offload']:.2f}x")
    print(f"bytes: ratio {figures['bytes', 'pool'] / figures['bytes', 'offload']:.2f}x")
    print(f"cancel: offload {figures['cancel', 'offload'] * 1000:.1f} ms to no process, "
          f"ProcessPoolExecutor (terminate) {figures['cancel', 'pool'] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
