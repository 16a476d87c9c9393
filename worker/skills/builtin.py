"""The built-in skills `echo`, `sleep` and `fail` - for trying the cluster, tests and benchmarks.

Their manifests are in common/builtin_skills/.
"""

from __future__ import annotations

import asyncio
from typing import Any

from common.errors import InvalidInputError, PermanentError, RetryableError
from worker.context import TaskContext

MAX_SLEEP_S = 24 * 3600.0


async def echo(ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
    """Return the input unchanged: a no-op task that measures the cluster itself."""
    return input


async def sleep(ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
    """Wait `seconds` (default 1), reporting progress about once a second; returns how long it slept."""
    seconds = input.get("seconds", 1.0)
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 <= seconds <= MAX_SLEEP_S:
        raise InvalidInputError(f"sleep: 'seconds' must be a number from 0 to {MAX_SLEEP_S:.0f}, got {seconds!r}")
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + seconds
    while (remaining := end - loop.time()) > 0:
        await asyncio.sleep(min(remaining, 1.0))
        if seconds >= 2:
            ctx.progress(min(100.0, 100.0 * (loop.time() - start) / seconds), "sleeping")
    return {"slept_s": round(loop.time() - start, 3)}


async def fail(ctx: TaskContext, input: dict[str, Any]) -> None:
    """Always fail with `message`; `retryable: true` raises a retryable error, else a permanent one."""
    message = str(input.get("message", "failed on purpose"))
    if input.get("retryable", False):
        raise RetryableError(message)
    raise PermanentError(message)
