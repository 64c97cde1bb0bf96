#!/usr/bin/env python3
"""The per-job cost of the SDK's persistent loop, measured alone: drives a worker as the host
does (one job frame, wait for its answer, the next) and prints the round trip and the worker's
own CPU time per job, beside a bare loop that only decodes, answers and writes.

    python3 processors/python/offload-sdk/bench/loop.py [JOBS]
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cbor2

SRC = Path(__file__).resolve().parents[1] / "src"

SDK_WORKER = """
from offload_sdk import Processor
Processor("trivial", "Doubles x").run(lambda inp, ctx: {"y": inp["x"] * 2})
"""

# The least a worker can do: one decoder over buffered stdin, one dumps and one write per job.
BARE_WORKER = """
import io, os, cbor2
frames = cbor2.CBORDecoder(io.BufferedReader(io.FileIO(0, "rb", closefd=False), 65536))
frames.decode()
os.write(1, cbor2.dumps({"type": "hello", "protocol": 2}))
while True:
    try:
        frame = frames.decode()
    except cbor2.CBORDecodeEOF:
        break
    result = {"y": frame["input"]["x"] * 2}
    os.write(1, cbor2.dumps({"type": "result", "id": frame["id"], "result": result}))
"""


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(script, jobs):
    """(round trip, worker CPU) per job, in microseconds."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    with tempfile.NamedTemporaryFile("w", suffix=".py") as file:
        file.write(script)
        file.flush()
        worker = subprocess.Popen(
            [sys.executable, file.name, "--persistent"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        answers = cbor2.CBORDecoder(worker.stdout)
        to_worker = worker.stdin.fileno()
        os.write(to_worker, cbor2.dumps({"type": "hello", "protocol": 2}))
        answers.decode()
        requests = [cbor2.dumps({"type": "job", "id": i, "input": {"x": i}}) for i in range(jobs)]
        cpu, start = cpu_seconds(worker.pid), time.perf_counter()
        for request in requests:
            os.write(to_worker, request)
            answers.decode()
        wall, cpu = time.perf_counter() - start, cpu_seconds(worker.pid) - cpu
        worker.stdin.close()
        worker.wait()
    return wall / jobs * 1e6, cpu / jobs * 1e6


def main():
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    for name, script in (("bare loop", BARE_WORKER), ("offload_sdk", SDK_WORKER)):
        runs = [measure(script, jobs) for _ in range(5)]
        wall, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
        print(f"{name:12s} {wall:6.1f} us round trip, {cpu:5.1f} us worker CPU per job (best of 5)")


if __name__ == "__main__":
    main()
