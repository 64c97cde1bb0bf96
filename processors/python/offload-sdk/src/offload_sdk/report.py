"""Lines for people on stderr, prefixed with the executable's name (PROTOCOL.md, section 7.2).

The host shows the last line of stderr with a failure, so each message is one line, and a
traceback, when asked for, comes before it.
"""

from __future__ import annotations

import os
import sys

from .errors import one_line

#: Set to 1 to print the traceback of an unexpected exception before its one-line message.
TRACEBACK_ENV = "OFFLOAD_TRACEBACK"


def say(executable: str, message: str) -> None:
    """Writes ``offload-NAME: message`` on stderr, as one line. Never fails."""
    try:
        sys.stderr.write(f"{executable}: {one_line(message)}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def say_internal(executable: str, message: str, err: BaseException) -> None:
    """Says ``message`` about an unexpected exception: a bug, not bad input. The traceback
    goes first when ``OFFLOAD_TRACEBACK=1``; without it, one line."""
    if os.environ.get(TRACEBACK_ENV) == "1":
        import traceback  # only then: it is slow to import, and most runs never need it

        try:
            traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
        except (OSError, ValueError, AttributeError):
            pass
    say(executable, message)


def internal_message(err: BaseException, stage: str = "") -> str:
    """``internal error: [stage: ]TypeName: message``."""
    prefix = f"{stage}: " if stage else ""
    return f"internal error: {prefix}{type(err).__name__}: {one_line(err)}"
