"""The examples in the SDK's docstrings run as shown."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["context", "decode", "errors", "jsonform", "params", "processor", "frame", "sets"]


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_run(name):
    module = importlib.import_module(f"offload_sdk.{name}")
    failed, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failed == 0
