"""When schedules fire: cron in a time zone (DST included), intervals from an anchor, fire ids, and the
missed-fire policies (skip, once, all with a cap) - all with fixed times, no clock."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest

from common.errors import InvalidInputError
from coordinator.schedules.engine import check_subject, subject_matches
from coordinator.schedules.timing import (
    CronTiming,
    IntervalTiming,
    MissedPolicy,
    due_fires,
    fire_id,
    format_duration,
    parse_duration,
)

NY = ZoneInfo("America/New_York")


def at(*args: int, tz: datetime.tzinfo = datetime.UTC) -> float:
    return datetime.datetime(*args, tzinfo=tz).timestamp()  # type: ignore[misc]


def test_weekday_close_in_new_york_follows_the_exchange_clock_across_dst() -> None:
    timing = CronTiming("30 16 * * 1-5", "America/New_York")
    friday_close = at(2026, 3, 6, 16, 30, tz=NY)
    monday = timing.next_after(friday_close)  # the weekend is skipped
    assert monday == at(2026, 3, 9, 16, 30, tz=NY)
    # EST (UTC-5) before 8 March 2026, EDT (UTC-4) after: the UTC hour moves, the local one does not.
    assert datetime.datetime.fromtimestamp(friday_close, datetime.UTC).hour == 21
    assert datetime.datetime.fromtimestamp(monday, datetime.UTC).hour == 20


def test_a_cron_time_that_dst_skips_fires_once_that_day() -> None:
    timing = CronTiming("30 2 * * *", "America/New_York")
    fires = [timing.next_after(at(2026, 3, 7, 0, 0, tz=NY))]
    for _ in range(2):
        fires.append(timing.next_after(fires[-1]))
    local = [datetime.datetime.fromtimestamp(t, NY).strftime("%d %H:%M") for t in fires]
    assert local == ["07 02:30", "08 03:00", "09 02:30"]


def test_a_cron_time_that_dst_repeats_fires_once_that_day_and_hourly_fires_each_real_hour() -> None:
    """1 November 2026, New York: 01:00-01:59 happens twice (EDT, then EST)."""
    daily = CronTiming("30 1 * * *", "America/New_York")
    fires = [daily.next_after(at(2026, 10, 31, 23, 0, tz=NY))]
    fires.append(daily.next_after(fires[-1]))
    assert [datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%d %H:%M") for t in fires] == [
        "01 05:30",  # 01:30 EDT, the first of the two; not again an hour later at 01:30 EST
        "02 06:30",  # 01:30 EST the next day
    ]
    assert len({fire_id("close", t) for t in fires}) == 2
    hourly = CronTiming("0 * * * *", "America/New_York")
    t, utc_hours = at(2026, 11, 1, 0, 30, tz=NY), []
    for _ in range(3):
        t = hourly.next_after(t)
        utc_hours.append(datetime.datetime.fromtimestamp(t, datetime.UTC).hour)
    assert utc_hours == [5, 6, 7]  # 01:00 EDT, 01:00 EST, 02:00 EST: one fire per real hour, none twice


def test_bad_cron_expressions_and_zones_are_refused_with_a_hint() -> None:
    with pytest.raises(InvalidInputError, match="bad cron expression '61 \\* \\* \\* \\*'.*five fields"):
        CronTiming("61 * * * *")
    with pytest.raises(InvalidInputError, match="unknown time zone 'Mars/Olympus'.*IANA"):
        CronTiming("* * * * *", "Mars/Olympus")


def test_interval_fire_times_count_from_the_anchor() -> None:
    timing = IntervalTiming(600.0, anchor=1000.0)
    assert timing.next_after(1000.0) == 1600.0
    assert timing.next_after(1599.9) == 1600.0
    assert timing.next_after(1600.0) == 2200.0
    assert timing.next_after(10.0) == 1600.0
    assert timing.describe() == "every 10m"


def test_durations_parse_and_print_and_bad_ones_are_refused() -> None:
    assert parse_duration("90s") == 90 and parse_duration("1h30m") == 5400 and parse_duration("1d") == 86400
    assert format_duration(5400) == "1h30m" and format_duration(45) == "45s"
    for bad in ("", "10", "ten minutes", "5x", "1h 30"):
        with pytest.raises(InvalidInputError, match="bad interval"):
            parse_duration(bad)
    with pytest.raises(InvalidInputError, match="at least 1 s"):
        IntervalTiming(0.5, anchor=0.0)


def test_the_fire_id_names_the_schedule_and_the_utc_fire_time() -> None:
    t = at(2026, 3, 9, 16, 30, tz=NY)
    assert fire_id("quant-close", t) == "schedule:quant-close:2026-03-09T20:30:00Z"


def test_nothing_is_due_before_the_next_fire_time() -> None:
    due = due_fires(IntervalTiming(60, 0), 600.0, 599.0, policy=MissedPolicy.ALL, max_catchup=10)
    assert due.fire_times == [] and due.next_fire_at == 600.0


def test_an_on_time_fire_fires_under_every_policy() -> None:
    for policy in MissedPolicy:
        due = due_fires(IntervalTiming(60, 0), 600.0, 600.4, policy=policy, max_catchup=10)
        assert due.fire_times == [600.0] and due.missed == 0 and due.next_fire_at == 660.0, policy


# Down from 600 to 980.5 with fires every 60 s: 600..960 due (7 fires), 960 is 20.5 s old (on time:
# the grace of a one-minute schedule is 30 s), 600..900 (6) missed.
DOWN = dict(next_fire_at=600.0, now=980.5)


@pytest.mark.parametrize(
    ("policy", "cap", "expected"),
    [
        (MissedPolicy.SKIP, 10, [960.0]),
        (MissedPolicy.ONCE, 10, [960.0]),
        (MissedPolicy.ALL, 10, [600.0, 660.0, 720.0, 780.0, 840.0, 900.0, 960.0]),
        (MissedPolicy.ALL, 2, [840.0, 900.0, 960.0]),
        (MissedPolicy.ALL, 0, [960.0]),
    ],
)
def test_missed_fires_follow_the_policy_and_the_cap(policy: MissedPolicy, cap: int, expected: list[float]) -> None:
    due = due_fires(IntervalTiming(60, 0), DOWN["next_fire_at"], DOWN["now"], policy=policy, max_catchup=cap)
    assert due.fire_times == expected
    assert due.missed == 6 and due.skipped == 7 - len(expected) and due.next_fire_at == 1020.0


def test_a_fire_nearer_to_the_next_fire_time_than_to_its_own_is_late() -> None:
    timing = IntervalTiming(60, 0)
    assert due_fires(timing, 600.0, 629.0, policy=MissedPolicy.SKIP, max_catchup=0).fire_times == [600.0]
    assert due_fires(timing, 600.0, 631.0, policy=MissedPolicy.SKIP, max_catchup=0).fire_times == []


def test_when_even_the_latest_fire_is_late_skip_fires_nothing_and_once_fires_the_latest() -> None:
    timing = IntervalTiming(3600, 0)
    late = dict(next_fire_at=3600.0, now=3 * 3600.0 + 600)  # 3600 and 7200 and 10800 due; 10800 is 600 s old
    skip = due_fires(timing, late["next_fire_at"], late["now"], policy=MissedPolicy.SKIP, max_catchup=5)
    once = due_fires(timing, late["next_fire_at"], late["now"], policy=MissedPolicy.ONCE, max_catchup=5)
    every = due_fires(timing, late["next_fire_at"], late["now"], policy=MissedPolicy.ALL, max_catchup=5)
    assert skip.fire_times == [] and skip.missed == 3
    assert once.fire_times == [10800.0]
    assert every.fire_times == [3600.0, 7200.0, 10800.0]
    assert skip.next_fire_at == once.next_fire_at == every.next_fire_at == 14400.0


def test_a_very_long_outage_is_scanned_in_bounded_time_and_resumes_after_now() -> None:
    due = due_fires(IntervalTiming(1, 0), 1.0, 1_000_000.0, policy=MissedPolicy.ALL, max_catchup=3)
    assert len(due.fire_times) == 3 and due.next_fire_at == 1_000_001.0


def test_trigger_subjects_match_with_nats_wildcards_and_bad_ones_are_refused() -> None:
    assert subject_matches("material.new", "material.new")
    assert subject_matches("material.*", "material.new") and not subject_matches("material.*", "material.a.b")
    assert subject_matches("material.>", "material.a.b") and not subject_matches("material.>", "material")
    assert not subject_matches("material.new", "material.new.x")
    for bad in ("", "a..b", "a.>.b", "a.b*", "a b"):
        with pytest.raises(InvalidInputError, match="bad trigger subject"):
            check_subject(bad)
