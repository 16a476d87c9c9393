"""Running CLI commands: the event loop, signals, and turning errors into one line on stderr.

Only this module installs signal handlers (library classes never do). For a long-running process the
first SIGINT/SIGTERM sets the stop event and the process drains gracefully; a second one cancels it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import typer

from common.errors import ClawError

T = TypeVar("T")

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion (with uvloop when installed); user errors exit cleanly."""
    try:
        return _run(main)
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

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            await serve(stop)
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    run_async(main())


def _run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    result: T = uvloop.run(main)
    return result
