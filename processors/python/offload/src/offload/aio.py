"""An executor's jobs as asyncio awaitables, delivered on an event loop.

::

    from offload.aio import Jobs

    async def main(executor):
        jobs = Jobs(executor)                    # the running loop
        value = await jobs.submit(square, 7)     # an asyncio.Future
        jobs.on_progress(lambda future: print(future.progress))
        async for future in jobs.as_completed(batch):
            ...

Each event reaches the loop through ``loop.call_soon_threadsafe`` (one call per burst); see
``offload._relay``. ``asyncio.wrap_future`` also works on any :class:`offload.Future`.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable, Dict, List, Optional

from ._relay import BATCH_FINISHED, FINISHED, PROGRESS, STARTED, Relay
from .executor import Batch, Executor, Future

Callback = Callable[[Any], None]


class Jobs:
    """An executor seen from an event loop: awaitable jobs, and callbacks on the loop for
    their events (:meth:`on_started`, :meth:`on_progress`, :meth:`on_finished`,
    :meth:`on_batch_finished`; each gets the future, or the batch)."""

    def __init__(self, executor: Executor, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        self.executor = executor
        self.loop = loop or asyncio.get_running_loop()
        self._callbacks: Dict[str, List[Callback]] = {}
        self._waiting: Dict[int, List[asyncio.Future]] = {}
        self._relay = Relay(self._wake, self._deliver)
        executor.add_listener(self._relay)

    def _wake(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self._relay.drain)
        except RuntimeError:
            pass  # the loop is closed: nobody is left to hear the job

    def close(self) -> None:
        self.executor.remove_listener(self._relay)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> asyncio.Future:
        """Runs ``fn(*args, **kwargs)`` on a worker; an awaitable of its result. Cancelling
        the awaitable cancels the job (a running one is stopped)."""
        return self.wrap(self.executor.submit(fn, *args, **kwargs))

    def submit_processor(self, processor: str, input: Any, **options: Any) -> asyncio.Future:
        """:meth:`offload.Executor.submit_processor`, awaitable."""
        return self.wrap(self.executor.submit_processor(processor, input, **options))

    def wrap(self, future: Future) -> asyncio.Future:
        """An awaitable of ``future``, resolved on the loop when the job ends."""
        waiter = self.loop.create_future()
        self._waiting.setdefault(future.job_id, []).append(waiter)

        def cancel_job(done: asyncio.Future) -> None:
            if done.cancelled():
                future.cancel()

        waiter.add_done_callback(cancel_job)
        if future.done():
            self._settle(future)
        return waiter

    def _settle(self, future: Future) -> None:
        for waiter in self._waiting.pop(future.job_id, ()):
            if waiter.done():
                continue
            if future.cancelled():
                waiter.cancel()
            elif future.exception() is not None:
                waiter.set_exception(future.exception())  # type: ignore[arg-type]
            else:
                waiter.set_result(future.result())

    def _on(self, kind: str, callback: Callback) -> None:
        self._callbacks.setdefault(kind, []).append(callback)

    def on_started(self, callback: Callback) -> None:
        self._on(STARTED, callback)

    def on_progress(self, callback: Callback) -> None:
        self._on(PROGRESS, callback)

    def on_finished(self, callback: Callback) -> None:
        self._on(FINISHED, callback)

    def on_batch_finished(self, callback: Callback) -> None:
        self._on(BATCH_FINISHED, callback)

    def _deliver(self, kind: str, item: Any) -> None:
        if kind == FINISHED:
            self._settle(item)
        for callback in self._callbacks.get(kind, ()):
            callback(item)

    async def as_completed(self, batch: Batch) -> AsyncIterator[Future]:
        """The batch's futures in the order they end (those submitted before the call)."""
        queue: asyncio.Queue = asyncio.Queue()
        futures = list(batch.futures)
        for future in futures:
            future.add_done_callback(
                lambda f: self.loop.call_soon_threadsafe(queue.put_nowait, f)
            )
        for _ in futures:
            yield await queue.get()
