"""Run Python functions and offload processors in separate processes, with outcomes a GUI can
trust: a crash, a timeout or a memory limit fails one job, never the pool.

The one-import change from ``ProcessPoolExecutor``::

    import offload

    def square(x):                      # module level, as for ProcessPoolExecutor
        offload.progress(1.0)           # reaches the app's progress bars
        return x * x

    if __name__ == "__main__":
        with offload.Executor(max_workers=4) as pool:   # was ProcessPoolExecutor(4)
            print(list(pool.map(square, range(10))))
            job = pool.submit(square, 7)
            job.cancel()                # a running job is stopped too, and this returns True

Each executor runs one ``offload serve`` (the ``offload`` command installed with this
package) and persistent workers under it. :class:`Executor` is a
``concurrent.futures.Executor``; :mod:`offload.qt`, :mod:`offload.glib` and
:mod:`offload.aio` deliver its events on a Qt, GLib or asyncio thread. The processor SDK
is ``offload_sdk`` (also ``offload.sdk``).

Importing this package starts nothing and imports little: the executor is loaded when first
used, so that a worker (which imports it too) starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._context import progress

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "BrokenOffloadExecutor",
    "Counts",
    "Executor",
    "Future",
    "JobFailed",
    "Listener",
    "RemoteError",
    "RemoteTraceback",
    "Submitter",
    "find_offload",
    "progress",
]

_LAZY = {
    "Batch": "executor",
    "Counts": "executor",
    "Executor": "executor",
    "Future": "executor",
    "Listener": "executor",
    "Submitter": "executor",
    "BrokenOffloadExecutor": "errors",
    "JobFailed": "errors",
    "RemoteError": "errors",
    "RemoteTraceback": "errors",
    "find_offload": "_binary",
}

if TYPE_CHECKING:
    from ._binary import find_offload
    from .errors import BrokenOffloadExecutor, JobFailed, RemoteError, RemoteTraceback
    from .executor import Batch, Counts, Executor, Future, Listener, Submitter


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'offload' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
