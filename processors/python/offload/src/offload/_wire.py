"""How a function's arguments and its return value travel: as CBOR, byte data as CBOR byte
strings (never base64), and what CBOR cannot say pickled into a byte string.

:func:`encode` turns a value into one cbor2 can write, :func:`decode` turns it back:

- ``None``, ``bool``, ``int`` (any size), ``float``, ``str``, ``bytes``, ``list`` and ``dict``
  (with ``str``, ``int``, ``bytes``, ``float`` or ``bool`` keys) are themselves in CBOR;
- ``bytearray`` and ``memoryview`` are byte strings (a ``bytearray`` tagged so it comes back
  a ``bytearray``; a ``memoryview`` comes back as ``bytes``), ``tuple`` is a tagged array;
- a numpy array (when numpy is installed) is a tagged ``[dtype, shape, bytes]``, its data one
  byte string, and comes back a writable array of the same dtype and shape;
- anything else (a ``set``, a ``datetime``, a class of the caller's, a subclass of ``dict``)
  is pickled (protocol 5) into a tagged byte string, so it comes back what it was, as with
  ``ProcessPoolExecutor``.

:func:`decode` is a walk after cbor2 has decoded the item (no ``tag_hook``: cbor2's hook gets
what is inside a tag already made immutable, and an unpickling error raised inside the decoder
would end the whole stream of events).

The tags are private to this package (a range no registry uses): a processor never sees them,
since inputs and results of processors called by name go as the caller gives them.
"""

from __future__ import annotations

import pickle
import sys
from typing import Any, Dict, Tuple

import cbor2
from cbor2 import CBORTag

#: The first tag of this package's own (0x6f666c00, "ofl").
TAG_BASE = 0x6F666C00
TAG_PICKLE = TAG_BASE + 1
TAG_TUPLE = TAG_BASE + 2
TAG_BYTEARRAY = TAG_BASE + 3
TAG_NDARRAY = TAG_BASE + 4

_SCALARS = frozenset({str, int, float, bool, type(None), bytes})
_KEYS = frozenset({str, int, bytes, float, bool})


def _ndarray_type() -> Any:
    """numpy's ``ndarray`` if numpy is imported already (it is never imported for this)."""
    numpy = sys.modules.get("numpy")
    return getattr(numpy, "ndarray", None)


def encode(value: Any) -> Any:
    """``value`` as cbor2 can write it faithfully (see the module's documentation)."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list:
        return [encode(item) for item in value]
    if kind is dict:
        if all(type(key) in _KEYS for key in value):
            return {key: encode(item) for key, item in value.items()}
        return _pickled(value)
    if kind is tuple:
        return CBORTag(TAG_TUPLE, [encode(item) for item in value])
    if kind is bytearray:
        return CBORTag(TAG_BYTEARRAY, value)
    if kind is memoryview:
        return value.tobytes()  # cbor2 would write a memoryview as an array of integers
    ndarray = _ndarray_type()
    if ndarray is not None and kind is ndarray and not value.dtype.hasobject:
        return _array(value)
    return _pickled(value)


def _array(array: Any) -> CBORTag:
    return CBORTag(TAG_NDARRAY, [array.dtype.str, list(array.shape), array.tobytes()])


def _pickled(value: Any) -> CBORTag:
    return CBORTag(TAG_PICKLE, pickle.dumps(value, protocol=5))


def _from_array(value: Any) -> Any:
    import numpy

    dtype, shape, data = value
    array = numpy.frombuffer(data, dtype=numpy.dtype(dtype)).reshape(shape)
    return array.copy()  # writable, as an array that came through pickle is


_FROZEN = getattr(cbor2, "frozendict", dict)


def decode(value: Any) -> Any:
    """A value as cbor2 decoded it (this package's tags left as ``CBORTag``), made what it
    was. cbor2 (6 and later) decodes what is inside a tag as immutable (tuples, frozendict):
    an array that is not tagged as a tuple is a list, whatever cbor2 made of it. Raises what
    unpickling raises."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list or kind is tuple:
        return [decode(item) for item in value]
    if kind is dict or kind is _FROZEN:
        return {key: decode(item) for key, item in value.items()}
    if kind is CBORTag:
        tag, inner = value.tag, value.value
        if tag == TAG_TUPLE:
            return tuple(decode(item) for item in inner)
        if tag == TAG_BYTEARRAY:
            return bytearray(inner)
        if tag == TAG_PICKLE:
            return pickle.loads(inner)
        if tag == TAG_NDARRAY:
            return _from_array(inner)
    return value


def call_parts(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[Any, Any]:
    """A call's arguments, encoded."""
    return [encode(a) for a in args], {k: encode(v) for k, v in kwargs.items()}
