"""Where the ``offload`` command is.

In order: ``OFFLOAD_BIN`` when set; the one installed with this package (the wheel puts it
among the environment's scripts, beside ``python``, as ruff's and uv's wheels do); in this
source tree's development layout, the workspace's newest build (``target/release`` or
``target/debug``, or under ``CARGO_TARGET_DIR``); else ``offload`` on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Iterator, List

#: The variable that names the ``offload`` executable to use, overriding the search.
BIN_ENV = "OFFLOAD_BIN"
_NAME = "offload"


def _installed() -> Iterator[Path]:
    """Where an install of this package put its scripts: the interpreter's scheme, the user
    scheme, and ``pip install --target``'s ``bin`` beside the package."""
    package = Path(__file__).resolve().parent
    scripts = sysconfig.get_path("scripts")
    if scripts:
        yield Path(scripts) / _NAME
    user = sysconfig.get_path("scripts", scheme=f"{os.name}_user")
    if user:
        yield Path(user) / _NAME
    yield package.parent / "bin" / _NAME
    # PREFIX/lib/pythonX.Y/site-packages/offload: the prefix's bin (a venv run by another
    # interpreter, with the package on its path).
    if len(package.parents) > 4:
        yield package.parents[3] / "bin" / _NAME
    yield Path(sys.prefix) / "bin" / _NAME


def _source_tree() -> List[Path]:
    """The workspace's builds, newest first, when this package runs from its source tree
    (``processors/python/offload/src/offload`` in the repository)."""
    parents = Path(__file__).resolve().parents
    if len(parents) < 6:
        return []
    root = parents[5]
    package = root / "processors" / "python" / "offload" / "pyproject.toml"
    if not (root / "Cargo.toml").is_file() or not package.is_file():
        return []
    target = Path(os.environ.get("CARGO_TARGET_DIR") or root / "target")
    if not target.is_absolute():
        target = root / target
    builds = [target / p / _NAME for p in ("release", "debug", "wheel", "wheel-test")]
    found = [p for p in builds if _runnable(p)]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _runnable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_offload() -> str:
    """The path of the ``offload`` executable to run; :class:`FileNotFoundError` says where
    it was looked for."""
    explicit = os.environ.get(BIN_ENV)
    if explicit:
        if _runnable(Path(explicit)):
            return explicit
        raise FileNotFoundError(f"{BIN_ENV}={explicit} is not an executable file")
    for path in _installed():
        if _runnable(path):
            return str(path)
    for path in _source_tree():
        return str(path)
    on_path = shutil.which(_NAME)
    if on_path:
        return on_path
    raise FileNotFoundError(
        "the offload command was not found: install this package with pip (its wheel brings "
        "it), build it in the source tree (cargo build), or set OFFLOAD_BIN to its path"
    )
