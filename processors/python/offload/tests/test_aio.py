"""offload.aio: jobs as awaitables on a running asyncio loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

import offload
from offload.aio import Jobs
from conftest import alive, wait_until

import jobs


def test_awaitables_results_failures_progress_and_cancel():
    async def main():
        loop_thread = threading.get_ident()
        pool = offload.Executor(max_workers=2)
        try:
            aio = Jobs(pool)
            progress = []
            aio.on_progress(lambda f: progress.append((threading.get_ident(), f.progress)))
            assert await aio.submit(jobs.square, 9) == 81
            assert await aio.submit(jobs.reports_progress, 3) == 3
            assert progress and {t for t, _ in progress} == {loop_thread}
            with pytest.raises(ValueError, match="nope"):
                await aio.submit(jobs.fails, "nope")
            with pytest.raises(offload.JobFailed) as raised:
                await aio.submit(jobs.exits, 4)
            assert raised.value.exit_code == 4
            # Cancelling the awaitable stops the running job.
            slow = pool.submit(jobs.sleeps, 600)
            waiter = aio.wrap(slow)
            while not slow.running():
                await asyncio.sleep(0.01)
            pid = slow.pid
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            await asyncio.sleep(0)  # the awaitable's done callbacks run on the loop's next turn
            assert slow.cancelled()
            assert await asyncio.to_thread(wait_until, lambda: not alive(pid), 60)
            batch = pool.batch()
            for i in range(4):
                batch.submit_tagged(i, jobs.square, i)
            ended = [f.tag async for f in aio.as_completed(batch)]
            assert sorted(ended) == [0, 1, 2, 3]
        finally:
            aio.close()
            pool.kill()

    asyncio.run(asyncio.wait_for(main(), 120))
