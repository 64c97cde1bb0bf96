"""Module-level functions the tests run on workers (found there by module and name)."""

from __future__ import annotations

import os
import signal
import time

import offload


def square(x):
    return x * x


def add(a, b=0, *, c=0):
    return a + b + c


def fails(message):
    raise ValueError(message)


def crash_if(i, bad):
    """Returns ``i``, except that job ``bad`` kills its own process (a segfault's look)."""
    if i == bad:
        os.kill(os.getpid(), signal.SIGSEGV)
    return i


def exits(code):
    os._exit(code)


def sleeps(seconds):
    time.sleep(seconds)
    return seconds


def pid_then_sleep(seconds):
    """Sleeps in the worker; the test learns its pid from the future."""
    time.sleep(seconds)
    return os.getpid()


def allocates(mib):
    block = bytearray(mib << 20)
    for i in range(0, len(block), 4096):  # touched, so that it is resident
        block[i] = 1
    return len(block)


def types_of(*values):
    return [type(v).__name__ for v in values]


def echo(value):
    return value


def reports_progress(steps):
    for i in range(1, steps + 1):
        offload.progress(i / steps, f"step {i}")
        time.sleep(0.05)
    return steps


def env(name):
    return os.environ.get(name)
