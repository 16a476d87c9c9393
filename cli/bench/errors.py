"""The benchmark's error."""

from __future__ import annotations

from common.errors import ClawError


class BenchError(ClawError):
    """The benchmark could not run to the end (a process died, a phase timed out)."""

    code = "bench"
