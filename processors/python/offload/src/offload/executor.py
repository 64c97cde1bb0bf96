"""``offload.Executor``: a ``concurrent.futures.Executor`` whose jobs run on offload's
persistent workers, through one ``offload serve`` per executor.

What it keeps of ``ProcessPoolExecutor``: ``submit``, ``map``, ``shutdown(wait,
cancel_futures)``, the context manager, futures that ``concurrent.futures.wait`` and
``as_completed`` take, a function found by module and name in the worker (the main script
run there as ``__mp_main__``), the function's exceptions re-raised with the worker's
traceback. What it changes: ``Future.cancel()`` stops a running job too (its process is
killed), and a job whose process crashes, runs past its timeout or over its memory limit
fails alone, with :class:`~offload.JobFailed`; the executor and every other job go on.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import pickle
import subprocess
import sys
import threading
import weakref
from concurrent import futures as _futures
from concurrent.futures._base import (  # the states a Future moves through
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Set,
    Tuple,
)

from cbor2 import CBORTag

from . import _context, _wire
from ._binary import find_offload
from ._serve import Serve
from .errors import (
    BrokenOffloadExecutor,
    JobFailed,
    RemoteError,
    RemoteTraceback,
    WorkerBootstrapError,
)

#: The environment variable that carries the caller's preparation to its workers.
PREP_ENV = "OFFLOAD_PYTHON_PREP"

#: How long :meth:`Executor.kill` waits for serve to report its stopped jobs and exit (it
#: kills serve after that, and waits as long again); a margin for a loaded machine.
_KILL_WAIT = 15.0


class Listener:
    """Hears an executor's jobs (:meth:`Executor.add_listener`). Every method is called on
    the executor's reader thread, except :meth:`submitted` (on the submitting thread);
    the toolkit adapters take each call to their GUI thread. The default methods do
    nothing."""

    def submitted(self, future: Future) -> None:
        """A job was submitted (its future is pending)."""

    def started(self, future: Future) -> None:
        """Its process took it (``future.pid``, ``future.worker``)."""

    def progress(self, future: Future) -> None:
        """It reported progress (``future.progress``, ``future.message``)."""

    def finished(self, future: Future) -> None:
        """It ended: its future is done (a result, an exception, or cancelled)."""

    def batch_finished(self, batch: Batch) -> None:
        """Every job submitted to ``batch`` so far has ended."""


class Future(_futures.Future):
    """A ``concurrent.futures.Future`` for one job, with what offload knows of it.

    Unlike the standard one, :meth:`cancel` also stops a running job: its process is
    killed, the future is cancelled at once, and it returns ``True``.
    """

    def __init__(self, executor: Executor, job_id: int, label: str, tag: Any, batch: Any) -> None:
        super().__init__()
        self._executor = executor
        #: The job's id in the executor's ``offload serve`` session.
        self.job_id = job_id
        #: What the job runs: the function's qualified name, or the processor.
        self.label = label
        #: The caller's tag (:meth:`Batch.submit_tagged`), or ``None``.
        self.tag = tag
        #: The :class:`Batch` it belongs to, or ``None``.
        self.batch: Optional[Batch] = batch
        #: How much is done, 0.0 to 1.0, and the last progress message.
        self.progress = 0.0
        self.message: Optional[str] = None
        #: The pid of the process that runs it (its worker's), once started.
        self.pid: Optional[int] = None
        #: Which worker, or ``None`` for a process of its own.
        self.worker: Optional[int] = None
        #: The job's figures once ended (``wall_ms``, ``cpu_ms``, ``peak_rss_bytes``, ...).
        self.stats: Optional[Dict[str, Any]] = None
        self._python = False  # a function's job: its result is {"r": ...} or {"e": ...}

    def cancel(self) -> bool:
        """Cancels the job, queued or running (its process is stopped). ``False`` only when
        it has already ended."""
        with self._condition:
            if self._state == FINISHED:
                return False
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED):
                return True
            self._state = CANCELLED
            self._condition.notify_all()
        self._executor._cancel_ids([self.job_id])
        self._invoke_callbacks()
        return True

    def _notify_cancelled(self) -> None:
        """The job is gone: waiters of ``concurrent.futures.wait`` hear the cancel."""
        with self._condition:
            if self._state == CANCELLED:
                self._state = CANCELLED_AND_NOTIFIED
                for waiter in self._waiters:
                    waiter.add_cancelled(self)
                return
            if self._state in (PENDING, RUNNING):
                # Cancelled by a batch, cancel_all or shutdown before this future heard.
                self._state = CANCELLED_AND_NOTIFIED
                for waiter in self._waiters:
                    waiter.add_cancelled(self)
                self._condition.notify_all()
            else:
                return
        self._invoke_callbacks()

    def _mark_cancelled(self) -> bool:
        """Cancels this future without asking serve (it was asked for many at once)."""
        with self._condition:
            if self._state != PENDING and self._state != RUNNING:
                return False
            self._state = CANCELLED
            self._condition.notify_all()
        self._invoke_callbacks()
        return True

    def __repr__(self) -> str:
        return f"<offload.Future job {self.job_id} {self.label} {self._state.lower()}>"


class Counts(NamedTuple):
    """A batch's jobs by state; ``total`` counts every job submitted to it."""

    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    total: int

    @property
    def ended(self) -> int:
        return self.succeeded + self.failed + self.cancelled


class Submitter:
    """What submits jobs, with options applied to each: the executor itself, a view with
    other options (:meth:`Executor.with_options`), or a :class:`Batch`."""

    _OPTIONS = ("timeout", "memory_limit", "cpu_limit", "priority", "max_output")

    def __init__(self, executor: Executor, options: Dict[str, Any], batch: Optional[Batch]) -> None:
        unknown = set(options) - set(self._OPTIONS)
        if unknown:
            raise TypeError(f"unknown job options: {', '.join(sorted(unknown))}")
        self._executor = executor
        self._options = {k: v for k, v in options.items() if v is not None}
        self._batch = batch

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Runs ``fn(*args, **kwargs)`` on a worker; its future."""
        return self._executor._submit_call(fn, args, kwargs, None, self._options, self._batch)

    def submit_tagged(self, tag: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """:meth:`submit`, with the caller's ``tag`` on the future (``future.tag``)."""
        return self._executor._submit_call(fn, args, kwargs, tag, self._options, self._batch)

    def submit_processor(
        self,
        processor: str,
        input: Any,
        *,
        tag: Any = None,
        args: Optional[List[str]] = None,
        env: Optional[Dict[str, str]] = None,
        persistent: str = "auto",
        sandbox: bool = False,
    ) -> Future:
        """Runs a processor (a name, found as ``offload-NAME``, or a path) on ``input`` (any
        value cbor2 encodes: bytes go as byte strings); the future's result is the
        processor's result, as cbor2 decodes it."""
        return self._executor._submit_processor(
            processor, input, tag, args, env, persistent, sandbox, self._options, self._batch
        )

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """As ``Executor.map``: every call submitted at once, results in order."""
        return _futures.Executor.map(self, fn, *iterables, timeout=timeout)  # type: ignore[arg-type]


class Batch(Submitter):
    """Jobs submitted as one: their own cancel, counts and progress, and their futures in
    completion order. Made by :meth:`Executor.batch`."""

    def __init__(self, executor: Executor, name: Any, label: int, options: Dict[str, Any]) -> None:
        super().__init__(executor, options, self)
        #: The caller's name for the batch.
        self.name = name
        self._label = label
        self._cond = threading.Condition()
        #: Every future submitted to it, in submission order.
        self.futures: List[Future] = []
        self._ended: List[Future] = []

    def _add(self, future: Future) -> None:
        with self._cond:
            self.futures.append(future)

    def _ended_one(self, future: Future) -> bool:
        """Records an ended job; whether the batch has ended with it."""
        with self._cond:
            self._ended.append(future)
            self._cond.notify_all()
            return len(self._ended) == len(self.futures)

    def cancel(self) -> int:
        """Cancels every unfinished job of the batch, queued or running; how many."""
        with self._cond:
            pending = [f for f in self.futures if not f.done()]
        count = sum(1 for f in pending if f._mark_cancelled())
        if count:
            self._executor._send({"type": "cancel_batch", "batch": self._label})
        return count

    def counts(self) -> Counts:
        with self._cond:
            futures = list(self.futures)
        queued = running = succeeded = failed = cancelled = 0
        for f in futures:
            if f.cancelled():
                cancelled += 1
            elif f.done():
                if f.exception() is None:
                    succeeded += 1
                else:
                    failed += 1
            elif f.running():
                running += 1
            else:
                queued += 1
        return Counts(queued, running, succeeded, failed, cancelled, len(futures))

    def progress(self) -> float:
        """The batch's overall fraction: ended jobs count whole, running ones by their
        progress."""
        with self._cond:
            futures = list(self.futures)
        if not futures:
            return 0.0
        return sum(1.0 if f.done() else f.progress for f in futures) / len(futures)

    def done(self) -> bool:
        with self._cond:
            return len(self._ended) == len(self.futures)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits until every job submitted so far has ended; whether it did in time."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._ended) == len(self.futures), timeout)

    def as_completed(self, timeout: Optional[float] = None) -> Iterator[Future]:
        """The batch's futures in the order they end, until every one submitted (also while
        iterating) has; :class:`TimeoutError` when ``timeout`` seconds pass first."""
        deadline = None if timeout is None else _now() + timeout
        index = 0
        while True:
            with self._cond:
                while index >= len(self._ended):
                    if index >= len(self.futures):
                        return
                    left = None if deadline is None else deadline - _now()
                    if left is not None and left <= 0:
                        raise _futures.TimeoutError(f"{len(self.futures) - index} jobs unfinished")
                    self._cond.wait(left)
                future = self._ended[index]
            index += 1
            yield future

    def results(self, timeout: Optional[float] = None) -> Iterator[Tuple[Any, Any]]:
        """``(tag, result)`` in completion order; a failed job's ``result`` is its
        exception, a cancelled one's a ``CancelledError``."""
        for future in self.as_completed(timeout):
            if future.cancelled():
                yield future.tag, _futures.CancelledError()
            else:
                error = future.exception()
                yield future.tag, error if error is not None else future.result()

    def __repr__(self) -> str:
        return f"<offload.Batch {self.name!r} {self.counts()}>"


def _now() -> float:
    import time

    return time.monotonic()


class Executor(Submitter, _futures.Executor):
    """Runs module-level functions (and processors) on offload's persistent workers.

    ``max_workers`` bounds the jobs that run at once (default: offload's, the number of
    cores). ``timeout`` (seconds), ``memory_limit`` (bytes), ``cpu_limit`` (CPU seconds)
    and ``priority`` apply to every job (:meth:`with_options` and :meth:`batch` set them for
    some); ``nice`` is the workers' nice (offload's default 10: below the app). ``env`` adds
    variables to the workers' environment.

    Arguments and results travel as CBOR: bytes, ``bytearray`` and ``memoryview`` (and numpy
    arrays) as CBOR byte strings, never base64; what CBOR cannot say is pickled into a byte
    string (``offload._wire``). The function is found in the worker by its module and name;
    a lambda or a local function is pickled, which fails as it does with
    ``ProcessPoolExecutor``.
    """

    def __init__(
        self,
        max_workers: Optional[int] = None,
        *,
        timeout: Optional[float] = None,
        memory_limit: Optional[int] = None,
        cpu_limit: Optional[float] = None,
        priority: Optional[int] = None,
        nice: Optional[int] = None,
        env: Optional[Dict[str, str]] = None,
        offload_bin: Optional[str] = None,
    ) -> None:
        if _context.bootstrapping:
            raise WorkerBootstrapError(
                "an offload.Executor was made while a worker imported the main script: "
                'guard the script\'s work with if __name__ == "__main__": as with multiprocessing'
            )
        if max_workers is not None and max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        Submitter.__init__(
            self,
            self,
            {
                "timeout": timeout,
                "memory_limit": memory_limit,
                "cpu_limit": cpu_limit,
                "priority": priority,
            },
            None,
        )
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._labels = itertools.count(1)
        self._jobs: Dict[int, Future] = {}
        self._idle = threading.Condition(self._lock)
        self._shutdown = False
        self._broken: Optional[str] = None
        self._listeners: List[Listener] = []
        self._refs: Dict[Any, Any] = {}
        self._call_base = self._python_request(env)
        self.max_workers = max_workers
        command = [offload_bin or find_offload(), "serve"]
        if max_workers is not None:
            command += ["-j", str(max_workers)]
        if nice is not None:
            command += ["--nice", str(nice)]
        self._hello = threading.Event()
        self._serve = Serve(command, self._on_event, self._on_end)
        _live.add(self)

    # -- submitting ---------------------------------------------------------------------------

    def _python_request(self, env: Optional[Dict[str, str]]) -> Dict[str, Any]:
        """The fixed part of a function's job: this interpreter running offload's worker,
        with this process's preparation (as multiprocessing's spawn passes it)."""
        package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        python_path = [package_dir]
        if os.environ.get("PYTHONPATH"):
            python_path.append(os.environ["PYTHONPATH"])
        worker_env = dict(env or {})
        worker_env["PYTHONPATH"] = os.pathsep.join(python_path)
        worker_env[PREP_ENV] = json.dumps(_preparation())
        worker_env.setdefault("OFFLOAD_TRACEBACK", "1")  # a failed set-up shows its traceback
        flags = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
        return {
            "type": "submit",
            "processor": sys.executable,
            "args": [*flags, "-c", "from offload.worker import main; main()"],
            "env": worker_env,
        }

    def _function_ref(self, fn: Callable[..., Any]) -> Any:
        """How the worker finds ``fn``: its module and qualified name, else ``fn`` pickled."""
        try:
            return self._refs[fn]
        except (KeyError, TypeError):
            pass
        module = getattr(fn, "__module__", None)
        qualname = getattr(fn, "__qualname__", None)
        if (
            isinstance(module, str)
            and isinstance(qualname, str)
            and "<" not in qualname
            and _resolves(module, qualname, fn)
        ):
            ref: Any = [module, qualname]
        else:
            ref = CBORTag(_wire.TAG_PICKLE, pickle.dumps(fn, protocol=5))
        try:
            self._refs[fn] = ref
        except TypeError:
            pass
        return ref

    def _submit_call(
        self,
        fn: Callable[..., Any],
        args: Tuple[Any, ...],
        kwargs: Dict[str, Any],
        tag: Any,
        options: Dict[str, Any],
        batch: Optional[Batch],
    ) -> Future:
        label = getattr(fn, "__qualname__", None) or repr(fn)
        future = self._new_future(label, tag, batch)
        future._python = True
        try:
            encoded_args, encoded_kwargs = _wire.call_parts(args, kwargs)
            job_input = {"f": self._function_ref(fn), "a": encoded_args, "k": encoded_kwargs}
        except Exception as err:  # noqa: BLE001 - as ProcessPoolExecutor: the future fails
            self._fail_unsent(future, err)
            return future
        request = dict(self._call_base)
        request["id"] = future.job_id
        request["input"] = job_input
        self._send_submit(future, request, options)
        return future

    def _submit_processor(
        self,
        processor: str,
        job_input: Any,
        tag: Any,
        args: Optional[List[str]],
        env: Optional[Dict[str, str]],
        persistent: str,
        sandbox: bool,
        options: Dict[str, Any],
        batch: Optional[Batch],
    ) -> Future:
        future = self._new_future(processor, tag, batch)
        request: Dict[str, Any] = {
            "type": "submit",
            "id": future.job_id,
            "processor": processor,
            "input": job_input,
        }
        if args:
            request["args"] = list(args)
        if env:
            request["env"] = dict(env)
        if persistent != "auto":
            request["persistent"] = persistent
        if sandbox:
            request["sandbox"] = True
        self._send_submit(future, request, options)
        return future

    def _new_future(self, label: str, tag: Any, batch: Optional[Batch]) -> Future:
        with self._lock:
            if self._broken is not None:
                raise BrokenOffloadExecutor(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future = Future(self, next(self._ids), label, tag, batch)
            self._jobs[future.job_id] = future
        if batch is not None:
            batch._add(future)
        for listener in self._listeners:
            listener.submitted(future)
        return future

    def _send_submit(self, future: Future, request: Dict[str, Any], options: Dict[str, Any]) -> None:
        if options:
            request.update(options)
        if future.batch is not None:
            request["batch"] = future.batch._label
        try:
            self._serve.send(request)
        except Exception as err:  # noqa: BLE001
            if isinstance(err, OSError):
                err = BrokenOffloadExecutor(self._broken or f"offload serve is gone: {err}")
            self._fail_unsent(future, err)

    def _fail_unsent(self, future: Future, err: BaseException) -> None:
        """A job that never reached serve: its future fails at once."""
        with self._lock:
            self._jobs.pop(future.job_id, None)
        future.set_exception(err)
        self._ended(future)

    def with_options(self, **options: Any) -> Submitter:
        """A view of this executor whose jobs get these options (``timeout``,
        ``memory_limit``, ``cpu_limit``, ``priority``, ``max_output``) over the executor's."""
        return Submitter(self, {**self._options, **options}, None)

    def batch(self, name: Any = None, **options: Any) -> Batch:
        """A new :class:`Batch` of this executor's, its jobs with these options."""
        return Batch(self, name, next(self._labels), {**self._options, **options})

    # -- controlling --------------------------------------------------------------------------

    def _send(self, request: Dict[str, Any]) -> None:
        try:
            self._serve.send(request)
        except OSError:
            pass  # serve is gone: its end fails every job it had

    def _cancel_ids(self, ids: List[int]) -> None:
        for job_id in ids:
            self._send({"type": "cancel", "id": job_id})

    def cancel_all(self) -> int:
        """Cancels every unfinished job, queued or running; how many."""
        with self._lock:
            pending = list(self._jobs.values())
        count = sum(1 for f in pending if f._mark_cancelled())
        self._send({"type": "cancel_all"})
        return count

    def pause(self, paused: bool = True) -> None:
        """Stops starting jobs (running ones go on), or starts again."""
        self._send({"type": "pause", "paused": paused})

    def set_max_workers(self, max_workers: int) -> None:
        """How many jobs run at once, from now on."""
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._send({"type": "set_max_running", "max_running": max_workers})

    def set_priority(self, future: Future, priority: int) -> None:
        """Changes a queued job's priority (higher starts first)."""
        self._send({"type": "set_priority", "id": future.job_id, "priority": priority})

    def add_listener(self, listener: Listener) -> None:
        """``listener`` hears every job from now on (see :class:`Listener`)."""
        self._listeners = [*self._listeners, listener]

    def remove_listener(self, listener: Listener) -> None:
        self._listeners = [x for x in self._listeners if x is not listener]

    @property
    def serve_pid(self) -> int:
        """The pid of this executor's ``offload serve``."""
        return self._serve.pid

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more jobs; ``cancel_futures`` cancels those not started yet; ``wait`` waits for
        the rest to end. ``offload serve`` exits once every job has ended (at once, when
        there are none)."""
        with self._lock:
            self._shutdown = True
            pending = list(self._jobs.values())
        if cancel_futures:
            queued = [f for f in pending if not f.running() and f._mark_cancelled()]
            self._cancel_ids([f.job_id for f in queued])
        if wait:
            with self._lock:
                self._idle.wait_for(lambda: not self._jobs or self._broken is not None)
            self._serve.close()
            self._serve.thread.join()
        else:
            with self._lock:
                idle = not self._jobs
            if idle:
                self._serve.close()
        _live.discard(self)

    def kill(self) -> None:
        """Ends at once: every job is stopped (cancelled), and serve exits."""
        with self._lock:
            self._shutdown = True
            pending = list(self._jobs.values())
        for future in pending:
            future._mark_cancelled()
        self._serve.close()
        # Serve reports every job it stops and exits; its reader thread ends with its stdout.
        # Waiting for that thread here means no listener is called (a Qt signal emitted from
        # it, say) while the interpreter shuts down, which aborted a PySide6 process in CI.
        reader = self._serve.thread
        if reader is not threading.current_thread():
            reader.join(_KILL_WAIT)
            if reader.is_alive():
                self._serve.kill()
                reader.join(_KILL_WAIT)
        _live.discard(self)

    # -- events (on the reader thread) --------------------------------------------------------

    def _on_event(self, event: Dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "finished":
            self._on_finished(event)
        elif kind == "started":
            future = self._jobs.get(event.get("id"))  # type: ignore[arg-type]
            if future is not None:
                future.pid = event.get("pid")
                future.worker = event.get("worker")
                with future._condition:
                    if future._state == PENDING:
                        future._state = RUNNING
                for listener in self._listeners:
                    listener.started(future)
        elif kind == "progress":
            future = self._jobs.get(event.get("id"))  # type: ignore[arg-type]
            if future is not None:
                future.progress = float(event.get("fraction") or 0.0)
                future.message = event.get("message")
                for listener in self._listeners:
                    listener.progress(future)
        elif kind == "refused":
            future = self._jobs.get(event.get("id"))  # type: ignore[arg-type]
            if future is not None:
                self._finish(future, None, JobFailed("could_not_start", str(event.get("error"))))
        elif kind == "hello":
            if self.max_workers is None:
                self.max_workers = event.get("max_running")
            self._hello.set()
        elif kind == "error":
            print(f"offload serve: {event.get('message')}", file=sys.stderr)

    def _on_finished(self, event: Dict[str, Any]) -> None:
        future = self._jobs.get(event.get("id"))  # type: ignore[arg-type]
        if future is None:
            return
        stats = event.get("stats")
        future.stats = stats
        if "result" in event:
            result = event["result"]
            if future._python:
                self._finish(future, *_call_outcome(result))
            else:
                self._finish(future, result, None)
        else:
            error = event.get("error") or {}
            failure = JobFailed.from_event(error, stats)
            self._finish(future, None, failure)

    def _finish(self, future: Future, result: Any, error: Optional[BaseException]) -> None:
        with self._lock:
            self._jobs.pop(future.job_id, None)
        if isinstance(error, JobFailed) and error.kind == "cancelled":
            future._notify_cancelled()
        elif future.cancelled():
            future._notify_cancelled()
        elif error is not None:
            try:
                future.set_exception(error)
            except _futures.InvalidStateError:
                pass
        else:
            try:
                future.set_result(result)
            except _futures.InvalidStateError:
                pass
        self._ended(future)

    def _ended(self, future: Future) -> None:
        for listener in self._listeners:
            listener.finished(future)
        batch = future.batch
        if batch is not None and batch._ended_one(future):
            for listener in self._listeners:
                listener.batch_finished(batch)
        with self._lock:
            idle = not self._jobs
            if idle:
                self._idle.notify_all()
            close = idle and self._shutdown
        if close:
            self._serve.close()

    def _on_end(self, why: str) -> None:
        """Serve's events ended: every job it had fails."""
        with self._lock:
            self._broken = why
            pending = list(self._jobs.values())
        for future in pending:
            self._finish(future, None, JobFailed("serve_exited", why))
        with self._lock:
            self._idle.notify_all()
        self._hello.set()


def _call_outcome(result: Any) -> Tuple[Any, Optional[BaseException]]:
    """A function job's answer from the worker: its value, or the exception it raised."""
    if type(result) is dict:
        if "r" in result:
            try:
                return _wire.decode(result["r"]), None
            except Exception as err:  # noqa: BLE001 - part of it does not unpickle here
                return None, err
        if "t" in result:
            return None, _raised(result)
    return None, JobFailed("bad_output", f"the worker answered {result!r:.200}")


def _raised(answer: Dict[str, Any]) -> BaseException:
    text = str(answer.get("t") or "")
    error: Optional[BaseException] = None
    pickled = answer.get("e")
    if type(pickled) is CBORTag and pickled.tag == _wire.TAG_PICKLE:
        try:
            error = pickle.loads(pickled.value)
        except Exception:  # noqa: BLE001 - its class cannot be rebuilt here: by name
            error = None
    if not isinstance(error, BaseException):
        error = RemoteError(str(answer.get("n")), str(answer.get("m")), text)
    error.__cause__ = RemoteTraceback(f'\n"""\n{text}"""')
    return error


def _resolves(module: str, qualname: str, fn: Any) -> bool:
    """Whether ``module.qualname`` names ``fn`` here (so that the worker finds it)."""
    target: Any = sys.modules.get(module)
    if target is None:
        return False
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            return False
    return target is fn


def _preparation() -> Dict[str, Any]:
    """What a worker needs to import what this process can: as multiprocessing's
    ``spawn.get_preparation_data``, less the authentication key."""
    data: Dict[str, Any] = {"sys_path": list(sys.path), "dir": os.getcwd()}
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name is not None and name != "__main__":
        data["main_name"] = name
    else:
        path = getattr(main, "__file__", None)
        if path is not None:
            data["main_path"] = os.path.normpath(os.path.join(os.getcwd(), path))
    return data


_live: "weakref.WeakSet[Executor]" = weakref.WeakSet()


@atexit.register
def _at_exit() -> None:
    """As ``ProcessPoolExecutor``: an executor not shut down waits for its jobs at exit."""
    for executor in list(_live):
        try:
            executor.shutdown(wait=True)
        except Exception:  # noqa: BLE001
            pass
