"""Persistent mode on the processor's side (PROTOCOL.md, section 18): one process serves job
after job, with the same function and the same exit codes as one-shot mode.

Mirrors the Rust SDK's ``persistent.rs``, with one difference: an unexpected exception in the
function is answered with an ``error`` frame of kind ``failed`` ("internal error: ...") and the
worker goes on serving, as a ``ProcessPoolExecutor`` worker does; in Rust a panic ends the
worker (exit 70), since its state may be broken. A :class:`~offload_sdk.Cancelled` error ends
it with 143, as in one-shot mode.

The per-job path is kept lean: one cbor2 decoder reads whole frames from a buffered stdin for
the whole stream, and each answer is one ``cbor2.dumps`` and one ``os.write``.

The input bound: no request frame may make the worker read more than the input limit plus
:data:`FRAME_OVERHEAD` bytes from where the frame starts. The count is kept below the buffer,
once per read from the pipe, so it costs nothing per item; cbor2 (5.6 and later) reads a long
string in chunks, so a declared length is never allocated before its bytes arrive (older
versions ask for it at once: a length past what the process can allocate fails at once, and
one below it is reserved but only filled, and bounded, as bytes arrive). Over the bound, the
worker says so on stderr and exits 65, as the Rust SDK does.
"""

from __future__ import annotations

import io
import os
from typing import Any, Callable, Optional, Tuple

import cbor2

from . import context as _context
from . import frame
from .context import Context
from .decode import new_decoder, what_went_wrong
from .errors import (
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_OK,
    Cancelled,
    ProcessorError,
    one_line,
)
from .report import internal_message, say, say_internal
from .sets import SET_TAG, SetInResult, check_encoded

#: Room for a request frame's own fields around its input.
FRAME_OVERHEAD = 1024
#: Bytes read from stdin at once.
READ_BUFFER = 1 << 16


class FrameTooLarge(Exception):
    """A request frame went over the input limit while it was being read."""


class CountingStdin(io.RawIOBase):
    """Stdin, counting the bytes read, so that a frame that goes past ``limit`` bytes from
    where it starts stops the reading.

    It sits under an :class:`io.BufferedReader`, so it is called once per refill of the
    buffer (once per frame for small frames), never per item cbor2 reads; its :meth:`tell`
    lets the buffered reader say exactly where the next frame starts.
    """

    def __init__(self, fd: int, limit: int) -> None:
        super().__init__()
        self._readinto = io.FileIO(fd, "rb", closefd=False).readinto
        self.limit = limit
        self.total = 0  # bytes read from stdin so far
        self.stop = limit  # the total past which the frame being read is over the limit
        self.over = False

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.total

    def readinto(self, buffer: Any) -> Optional[int]:
        n = self._readinto(buffer)
        if n:
            self.total += n
            if self.total > self.stop:
                self.over = True
                raise FrameTooLarge()
        return n


Work = Callable[[Any, Context], Any]


class Worker:
    """One persistent worker: the host's hello, the set-up, then job after job."""

    def __init__(
        self,
        executable: str,
        name: str,
        version: Optional[str],
        max_bytes: int,
        max_depth: int,
        work: Work,
        setup: Optional[Callable[[], Any]],
    ) -> None:
        self.executable = executable
        self.name = name
        self.version = version
        self.work = work
        self.setup = setup
        self.state: Any = None
        self.limit = max_bytes + FRAME_OVERHEAD
        self.max_depth = max_depth
        self.raw = CountingStdin(0, self.limit)
        self.stream = io.BufferedReader(self.raw, READ_BUFFER)
        # The frame is one level of nesting around the input.
        self.decoder = new_decoder(self.stream, max_depth + 1)
        self.writer: Optional[frame.FrameWriter] = None

    def say(self, message: str) -> None:
        say(self.executable, message)

    def run(self) -> int:
        """Serves jobs until stdin ends; returns the exit code."""
        code = self._start()
        if code is not None:
            return code
        return self._serve()

    def _start(self) -> Optional[int]:
        """Takes stdout, reads the host's hello, sets up and answers; an exit code when the
        worker cannot go on."""
        try:
            self.writer = frame.FrameWriter(frame.take_stdout())
        except OSError as err:
            self.say(f"persistent mode: cannot set up stdout: {err}")
            return EXIT_FAILED
        mark = self.stream.tell()
        self.raw.stop = mark + self.limit
        try:
            first = self.decoder.decode()
        except Exception as err:
            return self._stream_broke(err, mark)
        if type(first) is not dict or first.get("type") != frame.HELLO:
            self.say("persistent mode: the host's first frame is not a hello")
            return EXIT_BAD_INPUT
        host = first.get("protocol")
        # The host says the highest version it speaks; this worker speaks 2 (PROTOCOL.md 18.4).
        if type(host) is not int or host < frame.PROTOCOL_VERSION:
            self.say(
                f"persistent mode: the host speaks protocol {host}, "
                f"this worker {frame.PROTOCOL_VERSION}"
            )
            return EXIT_BAD_INPUT
        if self.setup is not None:
            try:
                self.state = self.setup()
            except ProcessorError as err:
                self.say(str(err))
                return err.exit_code
            except Exception as err:
                say_internal(self.executable, internal_message(err, "setup"), err)
                return EXIT_INTERNAL
        try:
            self.writer.write(frame.hello(self.name, self.version))
        except OSError:
            return EXIT_FAILED  # the host is gone
        return None

    def _serve(self) -> int:
        """The loop, once per job. Its names are bound locally, and everything off the path
        of a well-formed job and a successful result is in other methods."""
        writer = self.writer
        assert writer is not None
        lock, fd = writer.lock, writer.fd
        raw, tell, decode = self.raw, self.stream.tell, self.decoder.decode
        limit = self.limit
        work, state = self.work, self.state
        dumps, write = cbor2.dumps, os.write
        context = _context
        while True:
            mark = tell()  # exact: what was read, minus what is still buffered
            raw.stop = mark + limit
            try:
                request = decode()
            except Exception as err:
                return self._stream_broke(err, mark)
            if type(request) is not dict or request.get("type") != "job":
                code = self._other_frame(request)
                if code is None:
                    continue
                return code
            job_id = request.get("id")
            if type(job_id) is not int or job_id < 0 or "input" not in request:
                self.say("persistent mode: a job frame without an id or an input")
                return EXIT_BAD_INPUT

            ctx = Context(state, job_id, None, writer)
            try:
                result = work(request["input"], ctx)
                reply = dumps({"type": "result", "id": job_id, "result": result})
                if SET_TAG in reply:
                    check_encoded(result, reply)
                exit_code = None
            except Exception as err:
                reply, exit_code = self._failure(job_id, err)
            ctx.close()  # before the answer: no progress frame may follow it
            if context._watching or context._cancelled:
                if context.end_watch():
                    exit_code = EXIT_CANCELLED  # SIGTERM came while the job watched
            try:
                with lock:
                    written = write(fd, reply)
                    if written < len(reply):
                        writer.write_locked(memoryview(reply)[written:])
            except OSError:
                return EXIT_FAILED  # the host is gone
            if exit_code is not None:
                return exit_code

    def _stream_broke(self, err: Exception, mark: int) -> int:
        """The exit code when a frame could not be read: 0 at end of input between frames."""
        if self.raw.over or isinstance(err, FrameTooLarge):
            self.say(
                f"persistent mode: a request frame over the limit of {self.limit} bytes "
                "(set OFFLOAD_MAX_INPUT_BYTES to raise it)"
            )
            return EXIT_BAD_INPUT
        if isinstance(err, cbor2.CBORDecodeEOF):
            arrived = self.stream.tell() - mark
            if arrived == 0:
                return EXIT_OK  # the host is done with this worker
            self.say(f"persistent mode: stdin ended inside a frame ({arrived} bytes of it arrived)")
            return EXIT_BAD_INPUT
        if isinstance(err, OSError):
            self.say(f"persistent mode: cannot read stdin: {err}")
            return EXIT_BAD_INPUT
        self.say(f"persistent mode: the frame stream broke: {what_went_wrong(err, self.max_depth)}")
        return EXIT_BAD_INPUT

    def _other_frame(self, request: Any) -> Optional[int]:
        """A frame that is not a job: ``None`` to skip it (a type this version does not
        know), or the exit code when it is malformed."""
        if type(request) is not dict:
            self.say("persistent mode: a malformed frame: not a map")
            return EXIT_BAD_INPUT
        if not isinstance(request.get("type"), str):
            self.say('persistent mode: a malformed frame: no text "type"')
            return EXIT_BAD_INPUT
        return None

    def _failure(self, job_id: int, err: Exception) -> Tuple[bytes, Optional[int]]:
        """The ``error`` frame for a job that raised, and the exit code if the worker must
        stop. Only a cancellation stops it."""
        if isinstance(err, ProcessorError):
            message = str(err)
            self.say(message)
            exit_code = EXIT_CANCELLED if isinstance(err, Cancelled) else None
            return frame.error(job_id, message, err.kind), exit_code
        tb = err.__traceback__
        if isinstance(err, SetInResult) or (
            isinstance(err, cbor2.CBOREncodeError) and tb is not None and tb.tb_next is None
        ):
            # Raised in the loop itself, not inside the function: the result cannot be encoded.
            message = f"cannot encode the result: {one_line(err)}"
            self.say(message)
        else:
            # A bug in the function. Unlike a Rust panic, it leaves the interpreter sound, so
            # the worker serves on, as a ProcessPoolExecutor worker does.
            message = internal_message(err)
            say_internal(self.executable, message, err)
        return frame.error(job_id, message, "failed"), None
