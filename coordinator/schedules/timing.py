"""When a schedule fires: cron expressions in a time zone, fixed intervals, and the missed-fire policy.

Pure functions of times given as seconds since the epoch (UTC), so they are tested with a fixed clock.

- **Cron** (`CronTiming`): a five-field expression read in an IANA time zone by `cronsim`, which
  handles daylight-saving changes (a 02:30 that does not exist fires at 03:00 that day; one that
  exists twice fires once).
- **Interval** (`IntervalTiming`): every `every_s` seconds counted from the schedule's anchor (when it
  was created), so fire times are the same on every coordinator and after every restart.

A fire time `t` names its fire: `schedule:<name>:<t as UTC ISO 8601>` (`fire_id`). The id is the
idempotency key of the task (or the run id of the workflow run) a fire starts, so computing the same
fire twice - after a crash between submitting and recording it, or on the next lease holder - starts
nothing twice.

**Missed fires.** When the coordinator finds fire times in the past (it was down, or cut off), the
latest one is *on time* if it is at most `grace_s` old (60 s, and at most half the time to the
following fire); the others are *missed* and follow the
schedule's policy: `skip` (only an on-time fire runs), `once` (only the latest due fire runs, on time
or not: the missed ones collapse into it) or `all` (each runs, at most `max_catchup` of the newest
missed ones plus the on-time one).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from common.errors import InvalidInputError

# A fire is on time up to this long after its time; older ones are missed and follow the policy.
DEFAULT_GRACE_S = 60.0
# The most fire times examined at once (a one-second interval after a day down: 86,400 of them).
MAX_SCAN = 10_000
MIN_INTERVAL_S = 1.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)([smhd])")


class MissedPolicy(StrEnum):
    """What happens to fire times that passed while nobody could fire them."""

    SKIP = "skip"
    ONCE = "once"
    ALL = "all"


class Timing(Protocol):
    """A rule for fire times."""

    def next_after(self, t: float) -> float:
        """The first fire time strictly after `t`."""
        ...

    def describe(self) -> str:
        """The rule for a person (`cron 30 16 * * 1-5 America/New_York`, `every 10m`)."""
        ...


@dataclass(frozen=True, slots=True)
class CronTiming:
    """A cron expression read in a time zone."""

    expression: str
    tz: str = "UTC"

    def __post_init__(self) -> None:
        zone = _zone(self.tz)
        try:
            CronSim(self.expression, datetime.datetime.now(zone))
        except CronSimError as exc:
            raise InvalidInputError(
                f"bad cron expression '{self.expression}': {exc}; five fields: minute hour day month weekday"
            ) from None

    def next_after(self, t: float) -> float:
        """The first time after `t` the expression matches in the zone."""
        zone = _zone(self.tz)
        start = datetime.datetime.fromtimestamp(int(t), zone)  # whole seconds: cron has minutes
        return next(CronSim(self.expression, start)).timestamp()

    def describe(self) -> str:
        """`cron 30 16 * * 1-5 (America/New_York)`."""
        return f"cron {self.expression} ({self.tz})"


@dataclass(frozen=True, slots=True)
class IntervalTiming:
    """Every `every_s` seconds from `anchor`."""

    every_s: float
    anchor: float

    def __post_init__(self) -> None:
        if self.every_s < MIN_INTERVAL_S:
            raise InvalidInputError(f"an interval must be at least {MIN_INTERVAL_S:g} s, not {self.every_s:g} s")

    def next_after(self, t: float) -> float:
        """The first `anchor + k * every_s` after `t` (k >= 1)."""
        if t < self.anchor:
            return self.anchor + self.every_s
        k = int((t - self.anchor) // self.every_s) + 1
        return self.anchor + k * self.every_s

    def describe(self) -> str:
        """`every 10m`."""
        return f"every {format_duration(self.every_s)}"


def parse_duration(text: str) -> float:
    """`90s`, `10m`, `1h30m`, `1d` -> seconds; a clear error for anything else."""
    cleaned = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise InvalidInputError(f"bad interval '{text}': use a number and a unit, like 30s, 10m, 1h30m or 1d")
    return float(sum(int(n) * _UNITS[u] for n, u in parts))


def format_duration(seconds: float) -> str:
    """Seconds as `1h30m`, `10m`, `45s`."""
    rest, out = int(seconds), ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out or "0s"


def fire_id(name: str, fire_time: float) -> str:
    """`schedule:<name>:<UTC ISO time>`, the same on every coordinator for the same fire."""
    stamp = datetime.datetime.fromtimestamp(fire_time, datetime.UTC)
    return f"schedule:{name}:{stamp.strftime('%Y-%m-%dT%H:%M:%SZ')}"


@dataclass(frozen=True, slots=True)
class DueFires:
    """What a look at the clock decided: the fire times to fire now (oldest first), the one on time
    (if any), how many were missed and how many the policy dropped, and the next fire time after now."""

    fire_times: list[float]
    on_time: float | None
    missed: int
    skipped: int
    next_fire_at: float


def due_fires(
    timing: Timing,
    next_fire_at: float,
    now: float,
    *,
    policy: MissedPolicy,
    max_catchup: int,
    grace_s: float = DEFAULT_GRACE_S,
) -> DueFires:
    """The fires due at `now` for a schedule whose next fire time is `next_fire_at`."""
    due: list[float] = []
    t = next_fire_at
    while t <= now and len(due) < MAX_SCAN:
        due.append(t)
        t = timing.next_after(t)
    if t <= now:  # more than MAX_SCAN behind: jump to now, the oldest beyond the scan are missed
        t = timing.next_after(now)
    if not due:
        return DueFires([], None, 0, 0, t)
    # Late once nearer to the next fire time than to its own: a one-minute schedule down for 45 s
    # missed its fire, however long the grace.
    latest = due[-1]
    on_time = latest if now - latest <= min(grace_s, (timing.next_after(latest) - latest) / 2) else None
    missed = due[:-1] if on_time is not None else due
    match policy:
        case MissedPolicy.SKIP:
            chosen = [] if on_time is None else [on_time]
        case MissedPolicy.ONCE:
            chosen = [due[-1]]
        case MissedPolicy.ALL:
            caught_up = missed[-max_catchup:] if max_catchup > 0 else []
            chosen = caught_up + ([] if on_time is None else [on_time])
    return DueFires(chosen, on_time, len(missed), len(due) - len(chosen), t)


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError(
            f"unknown time zone '{tz}': use an IANA name such as UTC, Europe/Paris or America/New_York"
        ) from None
