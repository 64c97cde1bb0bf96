"""What a function running on a worker can reach: its job's progress.

The worker (``offload.worker``) sets :data:`current` to the running job's context for the
length of the call; :func:`offload.progress` reports through it, and does nothing anywhere
else (in the app itself, or in a test that calls the function directly).
"""

from __future__ import annotations

from typing import Any, Optional

#: The running job's ``offload_sdk.Context`` inside a worker, else ``None``.
current: Optional[Any] = None
#: True while a worker imports the caller's main script (as ``__mp_main__``): an executor
#: made then would start workers without end.
bootstrapping = False


def progress(fraction: float, message: Optional[str] = None) -> None:
    """Reports how much of the running job is done, from 0.0 to 1.0, with an optional short
    line for people; the executor's listeners (the Qt, GLib and asyncio adapters) hear it.
    Reports closer together than 20 ms are dropped. Outside a worker it does nothing."""
    ctx = current
    if ctx is not None:
        ctx.progress(fraction, message)
