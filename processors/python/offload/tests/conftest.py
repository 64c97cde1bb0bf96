"""Shared helpers: every test runs real ``offload serve`` and worker processes, and checks what
is left of them in /proc."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import List

import pytest

import offload

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True, scope="session")
def _installed_package():
    """The tests are of the installed package, not of a source tree on the path."""
    if os.environ.get("OFFLOAD_TEST_SOURCE") != "1":
        assert "site-packages" in offload.__file__, offload.__file__


@pytest.fixture
def marker():
    """A variable name and value that only the processes a test starts carry."""
    return "OFFLOAD_TEST_MARK", uuid.uuid4().hex


def processes_with(name: str, value: str) -> List[int]:
    """The pids whose environment holds ``name=value`` (zombies are gone processes)."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                if stat.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if needle in environ.read().split(b"\0"):
                    found.append(int(entry))
        except (OSError, IndexError):
            continue
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def wait_until(check, seconds: float, step: float = 0.02) -> bool:
    """Polls ``check`` until it is true or ``seconds`` pass; its last value."""
    deadline = time.monotonic() + seconds
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return bool(check())
        time.sleep(step)
