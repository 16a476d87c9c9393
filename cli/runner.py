"""Running CLI commands: the event loop, signals, output that cannot fail, process titles, and
turning errors into one line on stderr.

Only this module installs signal handlers (library classes never do). For a long-running process the
first SIGINT/SIGTERM/SIGHUP sets the stop event and the process drains gracefully; a second one
cancels it.

Errors are one `error: ...` line for people; when the command line holds `--json` they are one JSON
object, `{"error": message, "code": kind}`, so a program reading the output never parses prose.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TextIO, TypeVar, cast

import msgspec
import typer

from common.errors import ClawError

T = TypeVar("T")

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# A terminal that closes sends SIGHUP: a service stops as on Ctrl-C rather than die mid-task.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_json_messages = False


def use_json_messages(enabled: bool = True) -> None:
    """Print errors and notices as JSON objects from now on (the command line holds `--json`)."""
    global _json_messages
    _json_messages = enabled


def json_messages() -> bool:
    """Whether errors and notices are printed as JSON."""
    return _json_messages


def report_error(message: str, code: str = "error") -> None:
    """Print one error on stderr: `error: message`, or `{"error": message, "code": code}` with --json."""
    if _json_messages:
        sys.stderr.write(msgspec.json.encode({"error": message, "code": code}).decode() + "\n")
    else:
        sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def notice(message: str, **fields: object) -> None:
    """Tell the person running the command what is going on, on stderr (stdout stays the answer).

    With --json it is one JSON object, `{"notice": message, ...fields}`, so stderr stays parseable.
    """
    if _json_messages:
        sys.stderr.write(msgspec.json.encode({"notice": message, **fields}).decode() + "\n")
    else:
        sys.stderr.write(f"{message}\n")
    sys.stderr.flush()


def warn(message: str, **fields: object) -> None:
    """Something went wrong that the command lives with (a child restarted): `warning: message` on
    stderr, or one JSON object `{"warning": message, ...fields}` with --json."""
    if _json_messages:
        sys.stderr.write(msgspec.json.encode({"warning": message, **fields}).decode() + "\n")
    else:
        sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


def fail(message: str, code: int = EXIT_ERROR, *, kind: str = "error") -> NoReturn:
    """Report `message` as an error of `kind` and exit with `code`."""
    report_error(message, kind)
    raise typer.Exit(code)


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion (with uvloop when installed); user errors exit cleanly."""
    try:
        return run_loop(main)
    except ClawError as exc:
        fail(str(exc), kind=exc.code)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None


async def until_interrupted(work: Awaitable[T]) -> tuple[bool, T | None]:
    """Await `work` unless SIGINT/SIGTERM comes first: (True, result), or (False, None) after a signal.

    For commands that wait on the cluster (`submit --wait`): the signal ends the waiting, not the
    process, so the command can say what keeps running before it exits.
    """
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupted.set)
    waiting = asyncio.ensure_future(work)
    watching = asyncio.ensure_future(interrupted.wait())
    try:
        await asyncio.wait([waiting, watching], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        watching.cancel()
        if not waiting.done():
            waiting.cancel()
        await asyncio.gather(waiting, watching, return_exceptions=True)
    if waiting.cancelled():
        return False, None
    return True, waiting.result()  # raises what `work` raised


def run_service(serve: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a long-lived process: `serve(stop)` returns after `stop` is set by SIGINT/SIGTERM."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        current = asyncio.current_task()

        def on_signal(signum: int) -> None:
            if stop.is_set():
                notice(f"{signal.Signals(signum).name} again: stopping now")
                if current is not None:
                    current.cancel()
                return
            stop.set()

        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            await serve(stop)
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
        finally:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)

    run_async(main())


def run_interruptible(main: Coroutine[Any, Any, T]) -> T:
    """Run a batch job (the benchmark) that SIGINT or SIGTERM interrupts: the signal cancels `main`,
    whose `finally` blocks clean up (a second signal cancels the clean-up too), and then
    KeyboardInterrupt is raised. Unlike `run_async`, errors are the caller's to report."""

    async def interruptible() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(main)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    return run_loop(interruptible())


def set_process_title(title: str) -> None:
    """What `ps` and `top` show for this process, e.g. `claw coordinator` (not `python -m cli ...`)."""
    import setproctitle

    setproctitle.setproctitle(title)


class _UnfailingOutput:
    """stdout or stderr whose writes never fail: once its reader is gone (a closed pipe: `claw up |
    tee log` after Ctrl-C killed tee) its descriptor is pointed at /dev/null and the rest of the
    output is dropped, so that no print or log line can interrupt a shutdown."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            self._drop()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            self._drop()

    def _drop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()  # what is still buffered goes to /dev/null too

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def protect_output() -> None:
    """Make this process's stdout and stderr unable to fail (`_UnfailingOutput`); call it first,
    before a logger captures either stream."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _UnfailingOutput):
            setattr(sys, name, cast(TextIO, _UnfailingOutput(stream)))


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop when it is installed (as every `claw` process does), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    result: T = uvloop.run(main)
    return result
