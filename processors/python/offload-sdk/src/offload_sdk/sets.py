"""Python sets in a result, which CBOR has no plain form for.

cbor2 sends a ``set`` or ``frozenset`` as an array under tag 258, so a host shows
``{"$tag": 258, "$value": [...]}`` (and a Rust processor's reader a tag) where the function's
author meant a list; JSON has no form for it at all. The SDK refuses such a result, in both
modes, with where the set is and what to return instead, as it refuses any other result it
cannot encode.

The search is cheap where it matters: a result is searched only when its encoding holds the
bytes of tag 258 (a test over the encoded bytes, at C speed), and a match inside a byte string
or a number is told apart by the search finding no set.
"""

from __future__ import annotations

import json
from typing import Any, List, Optional, Tuple

import cbor2

#: Tag 258 as cbor2 writes it before a set's array.
SET_TAG = b"\xd9\x01\x02"


class SetInResult(cbor2.CBOREncodeError):
    """A result holds a set; the message says where."""


def where_a_set_is(value: Any) -> Optional[str]:
    """Where the first set in ``value`` is (``result["tags"][0]``, or ``a key of result``),
    or ``None`` when it holds none. Walks without recursion, and once per container."""
    stack: List[Tuple[Any, str]] = [(value, "result")]
    seen = set()
    while stack:
        node, path = stack.pop()
        if isinstance(node, (set, frozenset)):
            return f"{path} is a set"
        if isinstance(node, (list, tuple, dict, cbor2.CBORTag)):
            if id(node) in seen:
                continue
            seen.add(id(node))
        if isinstance(node, (list, tuple)):
            stack.extend((item, f"{path}[{i}]") for i, item in reversed(list(enumerate(node))))
        elif isinstance(node, dict):
            entries = list(node.items())
            for key, _ in entries:
                if isinstance(key, (set, frozenset)):
                    return f"a key of {path} is a set"
            stack.extend((item, f"{path}[{_key(key)}]") for key, item in reversed(entries))
        elif isinstance(node, cbor2.CBORTag):
            stack.append((node.value, f"{path} (tag {node.tag})"))
    return None


def _key(key: Any) -> str:
    if isinstance(key, str):
        return json.dumps(key, ensure_ascii=False)
    return repr(key)


def refusal(where: str) -> str:
    """The message for a set found at ``where``."""
    return (
        f"{where}, which would arrive as CBOR tag 258, not an array: return a list "
        "instead (e.g. sorted(...))"
    )


def check_encoded(value: Any, encoded: bytes) -> None:
    """Raises :class:`SetInResult` when ``value``, encoded as ``encoded``, holds a set."""
    if SET_TAG in encoded:
        where = where_a_set_is(value)
        if where is not None:
            raise SetInResult(refusal(where))
