"""The generic Python worker: a processor (on the SDK, ``offload_sdk``) that calls a Python
function by module and name, as a ``multiprocessing`` spawn child does.

An :class:`offload.Executor` runs it as ``python -c "from offload.worker import main; main()"``
with the caller's own interpreter and flags, and its preparation in ``OFFLOAD_PYTHON_PREP``
(JSON: the caller's ``sys.path``, working directory and main script). Its set-up, once per
worker, before its hello: that ``sys.path``, that directory, and the main script run as
``__mp_main__`` (``sys.modules["__main__"]`` pointing at it), so that a function defined in
the script is found; a script's work under ``if __name__ == "__main__":`` does not run.

A job's input is ``{"f": [module, qualified name] | pickled callable, "a": [args], "k":
{kwargs}}``; its result ``{"r": value}``, or ``{"e": the exception pickled, "n": its type,
"m": its message, "t": the traceback}`` when the function raised (a result, not a failure: the
job ran; the executor re-raises it).
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import runpy
import sys
import traceback
import types
from typing import Any, Dict

from cbor2 import CBORTag

from . import _context, _wire

_functions: Dict[Any, Any] = {}


def _prepare() -> None:
    """Applies the caller's preparation (``multiprocessing.spawn.prepare``'s part of it)."""
    text = os.environ.get("OFFLOAD_PYTHON_PREP")
    if not text:
        return
    data = json.loads(text)
    if "sys_path" in data:
        sys.path[:] = data["sys_path"]
    if "dir" in data:
        try:
            os.chdir(data["dir"])
        except OSError:
            pass
    _context.bootstrapping = True
    try:
        if "main_name" in data:
            _main_from_name(data["main_name"])
        elif "main_path" in data:
            _main_from_path(data["main_path"])
    finally:
        _context.bootstrapping = False


def _main_from_name(name: str) -> None:
    """The caller ran ``python -m NAME``: import it as ``__mp_main__``."""
    current = sys.modules["__main__"]
    if name == "__main__" or name.endswith(".__main__"):
        return  # a package's __main__ is not importable as the main module's stand-in
    if getattr(current.__spec__, "name", None) == name:
        return
    module = types.ModuleType("__mp_main__")
    module.__dict__.update(runpy.run_module(name, run_name="__mp_main__", alter_sys=True))
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module


def _main_from_path(path: str) -> None:
    """The caller ran a script: run it as ``__mp_main__``."""
    current = sys.modules["__main__"]
    if getattr(current, "__file__", None) == path:
        return
    if os.path.splitext(os.path.basename(path))[0] == "ipython":
        return
    module = types.ModuleType("__mp_main__")
    module.__dict__.update(runpy.run_path(path, run_name="__mp_main__"))
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module


def _function(ref: Any) -> Any:
    """The callable a job names: imported by module and name, or unpickled."""
    if type(ref) is list:
        key = tuple(ref)
        found = _functions.get(key)
        if found is None:
            module_name, qualname = ref
            if module_name in ("__main__", "__mp_main__"):
                target: Any = sys.modules["__main__"]
            else:
                target = importlib.import_module(module_name)
            for part in qualname.split("."):
                target = getattr(target, part)
            found = _functions[key] = target
        return found
    if type(ref) is CBORTag and ref.tag == _wire.TAG_PICKLE:
        return pickle.loads(ref.value)
    raise TypeError(f"not a function reference: {ref!r:.100}")


def call(job: Any, ctx: Any) -> Any:
    """One job: the function called with its arguments, its value or what it raised."""
    try:
        fn = _function(job["f"])
        args = _wire.decode(job.get("a") or [])
        kwargs = _wire.decode(job.get("k") or {})
        _context.current = ctx
        try:
            value = fn(*args, **kwargs)
        finally:
            _context.current = None
        return {"r": _wire.encode(value)}
    except BaseException as err:  # noqa: BLE001 - re-raised by the caller's result()
        return _raised(err)


def _raised(err: BaseException) -> Dict[str, Any]:
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    try:
        pickled: Any = CBORTag(_wire.TAG_PICKLE, pickle.dumps(err, protocol=5))
    except Exception:  # noqa: BLE001 - an exception that does not pickle goes by name
        pickled = None
    kind = type(err)
    return {"e": pickled, "n": f"{kind.__module__}.{kind.__qualname__}", "m": str(err), "t": text}


def main() -> None:
    """Runs the worker (the SDK reads the command line: ``--persistent``, ``--describe``)."""
    from offload_sdk import Processor

    Processor(
        "python",
        "Calls a Python function by module and name (offload.Executor's worker)",
        example={"f": ["operator", "add"], "a": [2, 3], "k": {}},
        example_output={"r": 5},
        version="0.1.0",
    ).run(call, setup=_prepare)


if __name__ == "__main__":
    main()
