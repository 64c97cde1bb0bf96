"""The JSON form of CBOR values (PROTOCOL.md, section 11), for people at a shell.

Mirrors the Rust SDK's ``json.rs``. JSON has no byte strings, so a CBOR byte string is written
``{"$bytes": "<base64>"}`` (standard alphabet, with padding) and a tagged item
``{"$tag": N, "$value": ...}``. Integers outside 64 bits become their decimal digits as text,
NaN and the infinities ``null``, and map keys that are not text their JSON text.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from typing import Any

import cbor2

from .decode import DEFAULT_MAX_DEPTH, InputError

#: Key of the one-entry JSON object that stands for a CBOR byte string.
BYTES_KEY = "$bytes"
#: Keys of the two-entry JSON object that stands for a tagged CBOR item.
TAG_KEY = "$tag"
TAG_VALUE_KEY = "$value"

_I64_MIN = -(1 << 63)
_U64_END = 1 << 64


def to_json_form(value: Any) -> Any:
    """The JSON form of a value as cbor2 decodes or encodes it, ready for :func:`json.dumps`.

    >>> to_json_form({"pixels": b"\\x00\\x7f\\xff", "n": 1 << 70})
    {'pixels': {'$bytes': 'AH//'}, 'n': '1180591620717411303424'}

    Raises :class:`TypeError` for a value that has no JSON form (a set, a datetime).
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        # JSON readers lose integers outside 64 bits: keep the digits as text, as the Rust SDK.
        return value if _I64_MIN <= value < _U64_END else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {BYTES_KEY: base64.b64encode(value).decode("ascii")}
    if isinstance(value, (list, tuple)):
        return [to_json_form(item) for item in value]
    if isinstance(value, Mapping):
        return {_key_text(key): to_json_form(item) for key, item in value.items()}
    if isinstance(value, cbor2.CBORTag):
        return {TAG_KEY: value.tag, TAG_VALUE_KEY: to_json_form(value.value)}
    if value is cbor2.undefined or isinstance(value, cbor2.CBORSimpleValue):
        return None
    raise TypeError(f"no JSON form for a value of type {type(value).__name__}")


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return key
    return json.dumps(to_json_form(key), separators=(",", ":"), ensure_ascii=False)


def dumps_json(value: Any) -> str:
    """A value in the JSON form as one compact line of JSON (no newline)."""
    return json.dumps(to_json_form(value), separators=(",", ":"), ensure_ascii=False)


def from_json_form(document: Any, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """A parsed JSON document in the JSON form, as a value :func:`cbor2.dumps` encodes.

    ``{"$bytes": ...}`` becomes :class:`bytes`, ``{"$tag": n, "$value": v}`` a
    :class:`cbor2.CBORTag`, a whole number outside 64 bits a float. Raises
    :class:`~offload_sdk.InvalidInput` for bad base64, a bad tag or too deep nesting.

    >>> from_json_form({"pixels": {"$bytes": "AH//"}})
    {'pixels': b'\\x00\\x7f\\xff'}
    """
    return _from_json(document, 0, max_depth)


def _from_json(node: Any, depth: int, max_depth: int) -> Any:
    if isinstance(node, list):
        if depth >= max_depth:
            raise InputError(f"input: nested deeper than {max_depth} levels")
        return [_from_json(item, depth + 1, max_depth) for item in node]
    if isinstance(node, dict):
        if depth >= max_depth:
            raise InputError(f"input: nested deeper than {max_depth} levels")
        if len(node) == 1 and BYTES_KEY in node:
            text = node[BYTES_KEY]
            if not isinstance(text, str):
                raise InputError(f'input: "{BYTES_KEY}" must hold a base64 string')
            try:
                return base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as err:
                raise InputError(f'input: "{BYTES_KEY}" is not valid base64: {err}') from None
        if len(node) == 2 and TAG_KEY in node and TAG_VALUE_KEY in node:
            tag = node[TAG_KEY]
            if isinstance(tag, bool) or not isinstance(tag, int) or not 0 <= tag < _U64_END:
                raise InputError(f'input: "{TAG_KEY}" must be a non-negative integer')
            return cbor2.CBORTag(tag, _from_json(node[TAG_VALUE_KEY], depth + 1, max_depth))
        return {key: _from_json(value, depth + 1, max_depth) for key, value in node.items()}
    if isinstance(node, int) and not isinstance(node, bool) and not _I64_MIN <= node < _U64_END:
        try:
            return float(node)
        except OverflowError:
            raise InputError(f"input: the number {node} is too large") from None
    return node  # null, true and false, other numbers and text map directly


def json_input_to_cbor(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> bytes:
    """JSON-form input bytes as CBOR bytes.

    The ``--json`` path then decodes those bytes like any CBOR input, so both modes hand the
    function the same values (a bignum tag becomes an integer either way).
    """

    def reject_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        document = json.loads(data, parse_constant=reject_constant)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise InputError(f"input is not valid JSON: {err}") from None
    return cbor2.dumps(from_json_form(document, max_depth))
