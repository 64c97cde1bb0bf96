"""Bounded reading and decoding of exactly one CBOR item (PROTOCOL.md, sections 5 and 13).

Mirrors the Rust SDK's ``decode.rs``: stdin is read to its end but never past the size limit,
and the bytes must hold exactly one well-formed item, not nested too deep. Each way of failing
has its own message, worded as the Rust SDK words it.
"""

from __future__ import annotations

import io
import os
from typing import IO, Any, List

import cbor2

from .errors import InvalidInput

#: Default cap on the input's size: 1 GiB.
DEFAULT_MAX_BYTES = 1 << 30
#: Default cap on the nesting depth of arrays, maps and tags.
DEFAULT_MAX_DEPTH = 128
#: Environment variable that overrides the input size limit, in bytes.
MAX_INPUT_ENV = "OFFLOAD_MAX_INPUT_BYTES"

_READ_CHUNK = 1 << 20


class InputError(InvalidInput):
    """The SDK's own complaint about the input bytes, already worded in full
    (``input: truncated CBOR (the item ends early)``)."""

    def __str__(self) -> str:
        return self.message


def max_input_bytes(default: int) -> int:
    """The input size limit: ``OFFLOAD_MAX_INPUT_BYTES`` when it is a plain number, else
    ``default``."""
    text = os.environ.get(MAX_INPUT_ENV, "").strip()
    if text.isascii() and text.isdigit():
        return int(text)
    return default


def too_large(size: int, limit: int) -> InputError:
    return InputError(
        f"input item of {size} bytes or more is over the limit of {limit} bytes "
        f"(set {MAX_INPUT_ENV} to raise it)"
    )


def read_stdin(limit: int) -> bytes:
    """Reads stdin to its end, refusing more than ``limit`` bytes.

    Reads in chunks rather than asking for ``limit`` bytes at once, so a small input never
    costs a buffer of the limit's size.
    """
    chunks: List[bytes] = []
    size = 0
    while size <= limit:
        try:
            chunk = os.read(0, min(_READ_CHUNK, limit + 1 - size))
        except OSError as err:
            raise InputError(f"cannot read stdin: {err.strerror}") from None
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    raise too_large(size, limit)


def new_decoder(stream: IO[bytes], max_depth: int) -> cbor2.CBORDecoder:
    """A cbor2 decoder that refuses nesting deeper than ``max_depth``.

    Versions of cbor2 without the ``max_depth`` option (5.6 and older) stop at Python's
    recursion limit instead.
    """
    try:
        return cbor2.CBORDecoder(stream, max_depth=max_depth)
    except TypeError:
        return cbor2.CBORDecoder(stream)


#: What cbor2 before 6 returns for a lone break code (0xff) instead of failing.
_BREAK_MARKER = getattr(cbor2, "break_marker", object())


def what_went_wrong(err: BaseException, max_depth: int) -> str:
    """Why cbor2 could not decode an item, for a message (``truncated CBOR (...)``)."""
    if isinstance(err, cbor2.CBORDecodeEOF):
        return "truncated CBOR (the item ends early)"
    if isinstance(err, RecursionError) or "depth" in str(err):
        return f"CBOR nested deeper than {max_depth} levels"
    if isinstance(err, MemoryError):
        # cbor2 before 5.6 allocates a string's declared length before reading it.
        return "not valid CBOR (a declared length larger than this process can allocate)"
    return f"not valid CBOR ({err})"


def decode_error(err: BaseException, max_depth: int) -> InputError:
    """The error for a cbor2 exception raised while decoding an input."""
    return InputError(f"input: {what_went_wrong(err, max_depth)}")


def decode_one(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decodes exactly one CBOR item from ``data``: no less, and nothing after it.

    >>> decode_one(b"\\x18\\x2a")
    42
    >>> try:
    ...     decode_one(b"\\x18\\x2a\\x00")
    ... except InvalidInput as err:
    ...     print(err)
    input: 1 trailing bytes after the CBOR item (expected exactly one item)
    """
    if not data:
        raise InputError("input: no CBOR data item (empty input)")
    stream = io.BytesIO(data)
    try:
        value = new_decoder(stream, max_depth).decode()
    except Exception as err:  # malformed bytes raise more than CBORDecodeError
        raise decode_error(err, max_depth) from None
    if value is _BREAK_MARKER:
        raise InputError("input: not valid CBOR (a break code where an item was expected)")
    extra = len(data) - stream.tell()
    if extra:
        raise InputError(
            f"input: {extra} trailing bytes after the CBOR item (expected exactly one item)"
        )
    return value
