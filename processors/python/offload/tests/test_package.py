"""The installed package: both modules, the command, and the SDK copy complete."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import offload
import offload_sdk

SDK_SOURCE = Path(__file__).resolve().parents[2] / "offload-sdk" / "src" / "offload_sdk"


def test_offload_and_offload_sdk_import_from_one_install():
    assert Path(offload.__file__).parent.parent == Path(offload_sdk.__file__).parent.parent
    from offload.sdk import Processor

    assert Processor is offload_sdk.Processor


def test_the_wheel_carries_every_module_of_the_sdk():
    # The package's src/offload_sdk is a directory of links to the SDK's files: a module
    # added to the SDK without its link would be missing from the wheel.
    installed = {p.name for p in Path(offload_sdk.__file__).parent.iterdir() if p.suffix in (".py", ".typed")}
    source = {p.name for p in SDK_SOURCE.iterdir() if p.suffix in (".py", ".typed")}
    assert installed == source


def test_the_offload_command_is_installed_beside_the_package():
    command = offload.find_offload()
    if os.environ.get("OFFLOAD_TEST_SOURCE") != "1":
        assert Path(command) == Path(sys.prefix) / "bin" / "offload"
    out = subprocess.run([command, "--version"], capture_output=True, text=True, check=True)
    assert "offload" in out.stdout
