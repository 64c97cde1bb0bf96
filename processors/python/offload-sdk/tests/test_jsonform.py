"""The JSON form of CBOR (PROTOCOL.md, section 11), both ways, as the Rust SDK's json.rs."""

from __future__ import annotations

import cbor2
import pytest

from offload_sdk import InvalidInput, from_json_form, to_json_form
from offload_sdk.decode import decode_one
from offload_sdk.jsonform import json_input_to_cbor


def test_bytes_and_tags_round_trip():
    value = {"rgba": b"\x00\x01\xfe\xff", "t": cbor2.CBORTag(1234, [1, -2])}
    json_form = to_json_form(value)
    assert json_form == {"rgba": {"$bytes": "AAH+/w=="}, "t": {"$tag": 1234, "$value": [1, -2]}}
    assert from_json_form(json_form) == value


def test_lossy_cases_follow_the_protocol():
    assert to_json_form({1: "a", (1, 2): "b"}) == {"1": "a", "[1,2]": "b"}
    assert to_json_form([float("nan"), float("inf"), cbor2.undefined]) == [None, None, None]
    assert to_json_form([(1 << 64) - 1, 1 << 64, -(1 << 63), -(1 << 63) - 1]) == [
        (1 << 64) - 1,
        str(1 << 64),
        -(1 << 63),
        str(-(1 << 63) - 1),
    ]
    # From JSON, a whole number beyond 64 bits becomes a float.
    assert from_json_form([1 << 64, (1 << 64) - 1]) == [float(1 << 64), (1 << 64) - 1]
    with pytest.raises(TypeError):
        to_json_form({"s": {1, 2}})


@pytest.mark.parametrize(
    "document, says",
    [
        (b'{"$bytes": 5}', '"$bytes" must hold a base64 string'),
        (b'{"$bytes": "%%%"}', '"$bytes" is not valid base64'),
        (b'{"$tag": -1, "$value": 0}', '"$tag" must be a non-negative integer'),
        (b"[" * 200 + b"]" * 200, "nested deeper than 128 levels"),
        (b"[NaN]", "input is not valid JSON"),
        (b"\xff", "input is not valid JSON"),
    ],
)
def test_bad_json_inputs_are_invalid_input(document, says):
    with pytest.raises(InvalidInput) as raised:
        json_input_to_cbor(document)
    assert says in str(raised.value)


def test_an_object_with_other_keys_is_a_map():
    data = json_input_to_cbor(b'{"$bytes": "AA==", "x": 1, "$tag": 2}')
    assert decode_one(data) == {"$bytes": "AA==", "x": 1, "$tag": 2}
