"""Processors by name or path, and batches: tags, per-batch cancel, completion order."""

from __future__ import annotations

import concurrent.futures as cf
import os
import sys
import textwrap

import pytest

import offload
from conftest import alive, wait_until

import jobs

PATIENCE = 60

PROCESSOR = textwrap.dedent(
    """\
    #!{python}
    from offload_sdk import Processor

    def work(inp, ctx):
        ctx.progress(1.0)
        return {{"size": len(inp["data"]), "head": inp["data"][:4]}}

    Processor("sizer", "Sizes a byte string", example={{"data": b"abc"}}).run(work)
    """
)


def test_a_processor_by_path_gets_and_returns_byte_strings(tmp_path):
    path = tmp_path / "offload-sizer"
    path.write_text(PROCESSOR.format(python=sys.executable))
    path.chmod(0o755)
    with offload.Executor(max_workers=2) as pool:
        result = pool.submit_processor(str(path), {"data": b"\x00\x01\x02\x03rest"}).result(PATIENCE)
        assert result == {"size": 8, "head": b"\x00\x01\x02\x03"}
        with pytest.raises(offload.JobFailed) as raised:
            pool.submit_processor(str(tmp_path / "offload-none"), {}).result(PATIENCE)
        assert raised.value.kind == "could_not_start"


def test_a_processor_by_name_is_found_on_the_path(tmp_path, monkeypatch):
    path = tmp_path / "offload-sizer"
    path.write_text(PROCESSOR.format(python=sys.executable))
    path.chmod(0o755)
    # offload serve finds offload-NAME on its PATH (PROTOCOL.md section 3), the app's.
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with offload.Executor(max_workers=1) as pool:
        assert pool.submit_processor("sizer", {"data": b"abc"}).result(PATIENCE) == {
            "size": 3,
            "head": b"abc",
        }


def test_a_batch_gives_tagged_results_in_completion_order_and_cancels_alone():
    pool = offload.Executor(max_workers=2)
    try:
        slow = pool.batch("slow")
        quick = pool.batch("quick")
        sleepers = [slow.submit_tagged(f"s{i}", jobs.sleeps, 600) for i in range(3)]
        assert wait_until(lambda: sum(f.running() for f in sleepers) == 2, PATIENCE)
        pids = [f.pid for f in sleepers if f.running()]
        assert slow.cancel() == 3
        assert all(f.cancelled() for f in sleepers)
        assert slow.wait(PATIENCE)
        assert wait_until(lambda: not any(alive(p) for p in pids), PATIENCE)
        for i in range(6):
            quick.submit_tagged(i, jobs.square, i)
        results = list(quick.results(PATIENCE))
        assert sorted(results) == [(i, i * i) for i in range(6)]
        ended = [f.tag for f in quick.as_completed(0)]
        assert [tag for tag, _ in results] == ended
        assert quick.counts().succeeded == 6 and slow.counts().cancelled == 3
        with pytest.raises(cf.CancelledError):
            sleepers[0].result(0)
    finally:
        pool.kill()
