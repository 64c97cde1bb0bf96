"""The runtime that turns a plain function into a protocol-speaking executable.

Mirrors the Rust SDK's ``processor.rs``: :meth:`Processor.run` parses the command line, reads
and decodes stdin within the limits, calls the function, writes the result or the error report,
and exits with the code of PROTOCOL.md, section 12. Started with ``--persistent`` it serves
job after job instead (``persistent.py``); the function is the same either way, and so is
stdout: reserved for the processor's own output, with prints going to stderr (``frame.py``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any, Callable, Dict, NoReturn, Optional, Sequence

import cbor2

from . import frame
from .context import Context, end_watch, progress_fd_from_env
from .decode import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DEPTH,
    decode_one,
    max_input_bytes,
    read_stdin,
)
from .errors import (
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_USAGE,
    InvalidInput,
    ProcessorError,
    one_line,
)
from .jsonform import dumps_json, json_input_to_cbor, to_json_form
from .params import Files, Parameter, check_input
from .persistent import Worker
from .report import internal_message, say, say_internal
from .sets import SetInResult, check_encoded, refusal, where_a_set_is

#: A processor function: the decoded input and a :class:`Context`, returning the result.
Work = Callable[[Any, Context], Any]
#: Set-up run once per process before the first job; its return value is ``ctx.state``.
Setup = Callable[[], Any]

_DESCRIBE_FLAG = "--describe"


class Processor:
    """A processor's name, summary, example and limits; :meth:`run` makes it an executable.

    ``name`` is the processor's name (its executable is ``offload-NAME``), ``summary`` one
    line saying what it does, ``example`` an input it accepts (shown by ``--describe``, in the
    JSON form), ``example_output`` a result for it (also shown by ``--describe``, so that an
    author learns the result's shape without running it), ``version`` its own version. ``persistent=False`` opts out of persistent mode,
    for a function that must not run twice in a process (one that leaks, or changes global
    state it cannot put back). ``max_input_bytes`` (default 1 GiB; ``OFFLOAD_MAX_INPUT_BYTES``
    overrides it) and ``max_depth`` (default 128) bound the input.
    """

    def __init__(
        self,
        name: str,
        summary: str,
        *,
        example: Any = None,
        example_output: Any = None,
        files: Optional[Files] = None,
        parameters: Sequence[Parameter] = (),
        version: Optional[str] = None,
        persistent: bool = True,
        max_input_bytes: int = DEFAULT_MAX_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        self.name = name
        self.summary = summary
        self.example = example
        self.example_output = example_output
        self.files = files
        self.parameters = list(parameters)
        self.version = version
        self.persistent = persistent
        self.max_input_bytes = max_input_bytes
        self.max_depth = max_depth

    @property
    def executable(self) -> str:
        """``offload-NAME``: the prefix of every line the processor writes to stderr."""
        return "offload-" + self.name

    def description(self) -> Dict[str, Any]:
        """What ``--describe`` prints (PROTOCOL.md, section 10)."""
        description = {
            "name": self.name,
            "summary": self.summary,
            "protocol": frame.PROTOCOL_VERSION,
            "example_input": to_json_form(self.example),
        }
        if self.example_output is not None:
            description["example_output"] = to_json_form(self.example_output)
        if self.files is not None:
            description["files"] = self.files.to_json()
        if self.parameters:
            description["parameters"] = [p.to_json() for p in self.parameters]
        if self.version is not None:
            description["version"] = self.version
        description["persistent"] = self.persistent
        return description

    def run(self, work: Work, setup: Optional[Setup] = None) -> NoReturn:
        """Runs the processor with the process's command line and exits with its code.

        ``work(input, ctx)`` gets the decoded input and a :class:`Context` and returns the
        result. ``setup()``, if given, runs once per process before the first job (in
        persistent mode before the worker answers the host's hello); what it returns is
        ``ctx.state`` for every job.
        """
        sys.exit(self.main(work, setup))

    def main(
        self, work: Work, setup: Optional[Setup] = None, args: Optional[Sequence[str]] = None
    ) -> int:
        """:meth:`run` without the exit: returns the exit code. ``args`` defaults to the
        process's arguments (``sys.argv[1:]``). Like :meth:`run`, it takes the process's
        stdout for the processor's output and points descriptor 1 at stderr, for good."""
        if args is None:
            args = sys.argv[1:]
        # Die at once on SIGTERM (the host's "stop") and SIGINT (Ctrl-C), without a traceback.
        # Set explicitly: a disposition of "ignore" is inherited through exec. SIGPIPE stays
        # ignored (Python's default), so writing to a closed pipe is an error, not death.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        # Before the set-up and the function run: whatever they print goes to stderr.
        _output_fd()
        if self.parameters:
            work = self._checking(work)
        try:
            mode = self._parse_args(args)
            if isinstance(mode, int):
                return mode
            if mode == "persistent":
                return Worker(
                    self.executable,
                    self.name,
                    self.version,
                    max_input_bytes(self.max_input_bytes),
                    self.max_depth,
                    work,
                    setup,
                ).run()
            return self._run_once(mode, work, setup)
        except Exception as err:  # a bug in the SDK or a broken environment: one line
            say_internal(self.executable, internal_message(err), err)
            return EXIT_INTERNAL

    def _checking(self, work: Work) -> Work:
        """``work``, after the declared parameters in its input are checked."""
        parameters = self.parameters

        def checked(inp: Any, ctx: Context) -> Any:
            problem = check_input(parameters, inp)
            if problem is not None:
                raise InvalidInput(problem)
            return work(inp, ctx)

        return checked

    def _say(self, message: str) -> None:
        say(self.executable, message)

    def _parse_args(self, args: Sequence[str]) -> Any:
        """``"cbor"``, ``"json"`` or ``"persistent"``; an exit code when the command line was
        fully handled (``--describe``, ``--help``) or wrong."""
        mode = "cbor"
        for arg in args:
            if arg in ("--json", frame.PERSISTENT_FLAG) and mode != "cbor":
                self._say(f"{frame.PERSISTENT_FLAG} and --json do not go together")
                return EXIT_USAGE
            if arg == "--json":
                mode = "json"
            elif arg == frame.PERSISTENT_FLAG:
                if not self.persistent:
                    self._say(f"{frame.PERSISTENT_FLAG}: this processor runs one job per process")
                    return EXIT_USAGE
                mode = "persistent"
            elif arg == _DESCRIBE_FLAG:
                text = json.dumps(self.description(), indent=2, ensure_ascii=False)
                return self._print(text + "\n")
            elif arg in ("--version", "-V"):
                return self._print(f"{self.executable} {self.version or '0'}\n")
            elif arg in ("--help", "-h"):
                return self._print(self._help())
            else:
                self._say(f"unknown argument {json.dumps(arg)} (try --help)")
                return EXIT_USAGE
        return mode

    def _help(self) -> str:
        exe = self.executable
        return (
            f"{exe}: {self.summary}\n\n"
            f"Usage: {exe} [--json] < INPUT > RESULT\n"
            f"       {exe} --persistent   (started by a host: frames on stdin and stdout)\n\n"
            "Reads one CBOR item from stdin and writes one CBOR item to stdout.\n\n"
            "Options:\n"
            '  --json        read and write JSON instead (byte strings as {"$bytes": "<base64>"})\n'
            "  --describe    print name, summary and an example input as JSON\n"
            "  --persistent  serve many jobs as frames on stdin and stdout (for hosts)\n"
            "  --version     print the version\n"
            "  --help        print this help\n"
        )

    def _print(self, text: str) -> int:
        try:
            _write_all(_output_fd(), text.encode("utf-8"))
            return EXIT_OK
        except OSError as err:
            self._say(f"cannot write to stdout: {err.strerror}")
            return EXIT_FAILED

    def _run_once(self, mode: str, work: Work, setup: Optional[Setup]) -> int:
        """One job: stdin to the result on stdout."""
        stage = ""
        try:
            data = read_stdin(max_input_bytes(self.max_input_bytes))
            if mode == "json":
                data = json_input_to_cbor(data, self.max_depth)
            value = decode_one(data, self.max_depth)
            stage = "setup"
            state = setup() if setup is not None else None
            stage = ""
            output = work(value, Context(state, None, progress_fd_from_env()))
        except ProcessorError as err:
            return self._fail(mode, err)
        except Exception as err:
            # A bug, not bad input: one line, no error report (as a Rust panic).
            say_internal(self.executable, internal_message(err, stage), err)
            return EXIT_INTERNAL
        finally:
            end_watch()
        # Encode the whole result before writing any of it: a failure never leaves half a result.
        try:
            encoded = _encode(mode, output)
        except Exception as err:
            self._say(f"cannot encode the result: {one_line(err)}")
            return EXIT_FAILED
        try:
            if sys.stdout is not None:
                sys.stdout.flush()  # what the function printed goes to stderr before the end
            _write_all(_output_fd(), encoded)
        except OSError as err:
            self._say(f"cannot write the result to stdout: {err.strerror}")
            return EXIT_FAILED
        return EXIT_OK

    def _fail(self, mode: str, err: ProcessorError) -> int:
        """Reports a failure on stderr and, in CBOR mode, as an error report on stdout."""
        message = str(err)
        self._say(message)
        if mode == "cbor":
            try:
                _write_all(_output_fd(), cbor2.dumps({"error": message, "kind": err.kind}))
            except OSError:
                pass  # best effort: the exit code and stderr already say it failed
        return err.exit_code


def _encode(mode: str, output: Any) -> bytes:
    """The result as it goes to stdout; raises when it has no faithful encoding (a set among
    them, with where it is)."""
    if mode == "json":
        try:
            return (dumps_json(output) + "\n").encode("utf-8")
        except Exception:
            where = where_a_set_is(output)
            if where is not None:
                raise SetInResult(refusal(where)) from None
            raise
    encoded = cbor2.dumps(output)
    check_encoded(output, encoded)
    return encoded


def _output_fd() -> int:
    """Where the processor's own output goes: the private duplicate of stdout (taken now if
    the import did not), or descriptor 1 itself when it cannot be taken."""
    try:
        return frame.take_stdout()
    except OSError:
        return 1


def _write_all(fd: int, data: bytes) -> None:
    """Writes all of ``data`` to a descriptor (``os.write`` may write only part)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
