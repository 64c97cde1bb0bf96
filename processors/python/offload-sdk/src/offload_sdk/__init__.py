"""Write offload processors in Python: a plain function becomes a processor executable.

A whole processor, saved as an executable file ``offload-square`` on the search path::

    #!/usr/bin/env python3
    from offload_sdk import Context, InvalidInput, Processor

    def square(inp, ctx: Context):
        if not isinstance(inp, dict) or not isinstance(inp.get("x"), (int, float)):
            raise InvalidInput("x must be a number")
        ctx.progress(1.0, "done")
        return {"y": inp["x"] ** 2}

    Processor("square", "Squares a number", example={"x": 3}, version="1.0").run(square)

It reads one CBOR item from stdin and writes one to stdout (``--json`` for JSON at a shell),
answers ``--describe``, ``--help`` and ``--version``, reports progress to the host, stops on
SIGTERM, and exits with the codes of PROTOCOL.md, section 12. Started by a host with
``--persistent``, the same function serves job after job in one process; ``run(work,
setup=load)`` runs ``load()`` once per process first and hands its result to every job as
``ctx.state``.

The function raises :class:`InvalidInput` (or :class:`WrongShape`) for an input it cannot use
(exit 65), :class:`Failed` when the work fails (exit 1), :class:`Cancelled` to stop when asked
(exit 143). Any other exception is a bug: one line on stderr, exit 70 (set
``OFFLOAD_TRACEBACK=1`` to see the traceback); in persistent mode the job fails and the worker
serves on.

Import this package before anything that might print: imported by a processor's run (in
either mode), it points descriptor 1 at stderr and keeps stdout for the result or the frames,
so that stray prints cannot break them. A ``set`` in a result is refused, naming where it is:
CBOR has no plain set (cbor2 would send tag 258); return a list.
"""

from __future__ import annotations

import sys as _sys

from . import frame as _frame

_frame.take_stdout_early(_sys.argv)

from .context import Context  # noqa: E402
from .errors import (  # noqa: E402
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_USAGE,
    Cancelled,
    Failed,
    InvalidInput,
    ProcessorError,
    WrongShape,
)
from .frame import PROTOCOL_VERSION  # noqa: E402
from .jsonform import from_json_form, to_json_form  # noqa: E402
from .params import Files, Parameter  # noqa: E402
from .processor import Processor, Setup, Work  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Cancelled",
    "Context",
    "EXIT_BAD_INPUT",
    "EXIT_CANCELLED",
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_USAGE",
    "Failed",
    "Files",
    "InvalidInput",
    "PROTOCOL_VERSION",
    "Parameter",
    "Processor",
    "ProcessorError",
    "Setup",
    "Work",
    "WrongShape",
    "from_json_form",
    "to_json_form",
]
