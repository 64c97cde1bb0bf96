"""One ``offload serve`` process (PROTOCOL.md, section 19) and the thread that reads it.

Requests are written whole, under a lock, from whichever thread submits or cancels; events
are read by one thread, which hands each to the executor's handler. That thread also starts
the process: the kernel ties serve's parent-death signal to the thread that started it, so
the process must be started by a thread that lives as long as it does.
"""

from __future__ import annotations

import io
import os
import subprocess
import threading
from typing import Any, Callable, Dict, List, Optional

import cbor2

#: The version of section 19 this client speaks.
SERVE_PROTOCOL = 1
#: Bytes read from serve's stdout at once.
READ_BUFFER = 1 << 16


#: The pipes' capacity asked for (the engine asks the same of its processors' pipes): a
#: 20 MiB input crosses in 20 hand-overs instead of 320.
PIPE_SIZE = 1 << 20


def _widen(fd: int) -> None:
    """Asks the kernel for a larger pipe; keeps the one it has when refused (a limit below
    1 MiB in /proc/sys/fs/pipe-max-size, or no F_SETPIPE_SZ before Python 3.10)."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)  # type: ignore[attr-defined]
    except (OSError, AttributeError, ImportError):
        pass


class Serve:
    """``offload serve``, started on a thread of its own that then reads its events.

    ``on_event(event)`` is called on that thread for each event, in order; ``on_end(why)``
    once, when the events end (serve exited, or its stdout broke). Raises :class:`OSError`
    when the process cannot be started.
    """

    def __init__(
        self,
        command: List[str],
        on_event: Callable[[Dict[str, Any]], None],
        on_end: Callable[[str], None],
    ) -> None:
        self._command = command
        self._on_event = on_event
        self._on_end = on_end
        self._lock = threading.Lock()
        self._closed = False
        self._started = threading.Event()
        self._start_error: Optional[BaseException] = None
        self.process: Optional[subprocess.Popen] = None
        self._stdin_fd = -1
        self.thread = threading.Thread(target=self._run, name="offload-serve", daemon=True)
        self.thread.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _run(self) -> None:
        try:
            self.process = subprocess.Popen(
                self._command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                # A session of its own: a Ctrl-C at the app's terminal is the app's to handle;
                # serve still ends with the app (the end of its stdin, its parent-death signal).
                start_new_session=True,
                bufsize=0,
            )
        except BaseException as err:  # noqa: BLE001 - handed to the thread that asked
            self._start_error = err
            self._started.set()
            return
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin_fd = self.process.stdin.fileno()
        for stream in (self.process.stdin, self.process.stdout):
            _widen(stream.fileno())
        self._started.set()
        why = self._read(self.process.stdout.fileno())
        try:
            code = self.process.wait()
        except Exception:  # noqa: BLE001
            code = None
        self._on_end(f"{why} (exit code {code})" if code is not None else why)

    def _read(self, fd: int) -> str:
        stream = io.BufferedReader(io.FileIO(fd, "rb", closefd=False), READ_BUFFER)
        decoder = cbor2.CBORDecoder(stream)
        decode, on_event = decoder.decode, self._on_event
        while True:
            try:
                event = decode()
            except cbor2.CBORDecodeEOF:
                return "offload serve ended"
            except Exception as err:  # noqa: BLE001 - a broken stream ends the session
                return f"offload serve's events broke: {err}"
            if type(event) is dict:
                on_event(event)

    def send(self, request: Dict[str, Any]) -> None:
        """Writes one request; :class:`OSError` when serve is gone."""
        self.send_encoded(cbor2.dumps(request))

    def send_encoded(self, data: bytes) -> None:
        view = memoryview(data)
        with self._lock:
            if self._closed:
                raise BrokenPipeError("offload serve's stdin is closed")
            while view:
                view = view[os.write(self._stdin_fd, view) :]

    def close(self) -> None:
        """Closes serve's stdin: it stops every job it still has, and exits."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.process is not None and self.process.stdin is not None:
                try:
                    self.process.stdin.close()
                except OSError:
                    pass

    def kill(self) -> None:
        """Kills serve at once (its jobs die with it)."""
        if self.process is not None and self.process.poll() is None:
            try:
                self.process.kill()
            except OSError:
                pass
