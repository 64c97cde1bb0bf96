"""The exceptions a processor function raises, and the exit codes the SDK maps them to.

Mirrors the Rust SDK's ``error.rs``: a failure has a kind (the error report's ``kind``), a
one-line message for people, and an exit code (PROTOCOL.md, section 12). Any other exception
escaping the function is a bug: exit 70, one line on stderr.
"""

from __future__ import annotations

EXIT_OK = 0
#: The work failed; also: the result could not be encoded or written.
EXIT_FAILED = 1
#: Bad command line.
EXIT_USAGE = 2
#: The input could not be read, decoded or used (sysexits' ``EX_DATAERR``).
EXIT_BAD_INPUT = 65
#: An unexpected exception: a bug in the processor (sysexits' ``EX_SOFTWARE``).
EXIT_INTERNAL = 70
#: Stopped because the host asked (128 + SIGTERM).
EXIT_CANCELLED = 143


def one_line(text: object) -> str:
    """Messages for people are single lines: the host shows the last line of stderr."""
    return " ".join(str(text).split())


class ProcessorError(Exception):
    """A failure the processor reports: ``kind`` and ``exit_code`` say which, ``message`` why.

    Raise one of the subclasses: :class:`InvalidInput`, :class:`WrongShape`, :class:`Failed`
    or :class:`Cancelled`. ``str(err)`` is the line that goes to stderr and into the error
    report (or the persistent mode's ``error`` frame).
    """

    kind = "failed"
    exit_code = EXIT_FAILED

    def __init__(self, message: object) -> None:
        super().__init__(message)
        self.message = one_line(message)

    def __str__(self) -> str:
        return self.message


class InvalidInput(ProcessorError):
    """The input decoded but cannot be used (a zero width, a missing field): exit 65.

    >>> str(InvalidInput("radius must be at least 1"))
    'invalid input: radius must be at least 1'
    """

    kind = "invalid_input"
    exit_code = EXIT_BAD_INPUT

    def __str__(self) -> str:
        return f"invalid input: {self.message}"


class WrongShape(InvalidInput):
    """The input is not the shape the processor reads (not a map, a field of the wrong type).

    The same failure as :class:`InvalidInput`, worded as the Rust SDK words the shape errors it
    finds while decoding into a typed input:

    >>> str(WrongShape("missing field `values`"))
    'input: unexpected shape: missing field `values`'
    """

    def __str__(self) -> str:
        return f"input: unexpected shape: {self.message}"


class Failed(ProcessorError):
    """The work itself failed (a file it needs is missing, a computation diverged): exit 1."""


class Cancelled(ProcessorError):
    """The processor stopped because the host asked it to (SIGTERM): exit 143.

    :meth:`offload_sdk.Context.check_cancelled` raises it; a function may raise it itself.
    """

    kind = "cancelled"
    exit_code = EXIT_CANCELLED

    def __init__(self, message: object = "cancelled") -> None:
        super().__init__(message)
