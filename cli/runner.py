"""Running CLI commands: the event loop, signals, output that cannot fail, process titles, and
turning errors into one line on stderr.

Only this module installs signal handlers (library classes never do). For a long-running process the
first SIGINT/SIGTERM/SIGHUP sets the stop event and the process drains gracefully; a second one
cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TextIO, TypeVar, cast

import typer

from common.errors import ClawError

T = TypeVar("T")

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
# A terminal that closes sends SIGHUP: a service stops as on Ctrl-C rather than die mid-task.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion (with uvloop when installed); user errors exit cleanly."""
    try:
        return run_loop(main)
    except ClawError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None


def run_service(serve: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a long-lived process: `serve(stop)` returns after `stop` is set by SIGINT/SIGTERM."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        current = asyncio.current_task()

        def on_signal(signum: int) -> None:
            if stop.is_set():
                sys.stderr.write(f"{signal.Signals(signum).name} again: stopping now\n")
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
