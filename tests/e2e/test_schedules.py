"""End to end: `claw schedules` with real coordinator and worker processes - create, list with the
next fire time, trigger by hand (the target runs once, also when the trigger is repeated with its
key), pause and resume, and one clear line for bad input."""

from __future__ import annotations

import datetime
import json
import re
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from tests.e2e.test_cli_cluster import start_cluster
from tests.helpers import ProcessPool, wait_until

pytestmark = pytest.mark.e2e


def listed(pool: ProcessPool) -> dict[str, dict[str, object]]:
    result = pool.run("schedules", "list", "--json")
    assert result.returncode == 0, result.stderr
    return {s["name"]: s for s in json.loads(result.stdout)}


def task_state(pool: ProcessPool, task_id: str) -> str:
    return str(json.loads(pool.run("task", "show", task_id, "--json").stdout)["state"])


def test_create_list_trigger_pause_and_resume_a_schedule_through_the_cli(processes: ProcessPool) -> None:
    start_cluster(processes, workers=1)
    created = processes.run(
        "schedules", "create", "close", "--cron", "30 16 * * 1-5", "--tz", "America/New_York",
        "--skill", "echo", "--input", '{"report": "daily"}', "--missed", "once",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("created schedule close: cron 30 16 * * 1-5 (America/New_York) -> task echo")

    zone = ZoneInfo("America/New_York")
    expected = next(CronSim("30 16 * * 1-5", datetime.datetime.now(zone))).timestamp()
    close = listed(processes)["close"]
    assert close["next_fire_at"] == expected and close["paused"] is False and close["missed"] == "once"
    table = processes.run("schedules", "list").stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "RULE", "TARGET"] and "NEXT FIRE" in table[0]
    assert table[1].startswith("close") and "task echo" in table[1] and "active" in table[1]
    shown = processes.run("schedules", "show", "close")
    assert shown.returncode == 0 and "next fires:" in shown.stdout and "no fires yet" in shown.stdout

    fired = processes.run("schedules", "trigger", "close", "--key", "k1", "--json")
    assert fired.returncode == 0, fired.stderr
    fire = json.loads(fired.stdout)["fire"]
    assert fire["fire_id"] == "schedule:close:manual-k1" and fire["duplicate"] is False and fire["reason"] == "manual"
    wait_until(lambda: task_state(processes, fire["target_id"]) == "succeeded", what="the triggered task ran")
    task = json.loads(processes.run("task", "show", fire["target_id"], "--json").stdout)
    assert task["result"] == {"report": "daily"} and task["attempts"] == 1

    again = processes.run("schedules", "trigger", "close", "--key", "k1")
    assert again.returncode == 0
    assert again.stdout == f"schedule:close:manual-k1 had fired already (at {again.stdout.split('(at ')[1]}"
    assert fire["target_id"] in again.stdout
    echoes = json.loads(processes.run("task", "list", "--skill", "echo", "--json").stdout)
    assert len(echoes["tasks"] if isinstance(echoes, dict) else echoes) == 1
    assert listed(processes)["close"]["fires"] == 1

    paused = processes.run("schedules", "pause", "close")
    assert paused.returncode == 0 and paused.stdout.startswith("paused schedule close")
    close = listed(processes)["close"]
    assert close["paused"] is True and close["next_fire_at"] is None
    assert "paused" in processes.run("schedules", "list").stdout.splitlines()[1]
    resumed = processes.run("schedules", "resume", "close", "--json")
    assert resumed.returncode == 0
    assert (
        json.loads(resumed.stdout)["next_fire_at"]
        == next(CronSim("30 16 * * 1-5", datetime.datetime.now(zone))).timestamp()
    )

    deleted = processes.run("schedules", "delete", "close")
    assert deleted.returncode == 0 and listed(processes) == {}

    # A subject schedule fired by `claw schedules publish`, which publishes under the caller's name.
    made = processes.run("schedules", "create", "inbox", "--on-subject", "material.*", "--skill", "echo")
    assert made.returncode == 0, made.stderr
    published = processes.run("schedules", "publish", "material.new", "--data", '{"path": "a.csv"}')
    assert published.returncode == 0, published.stderr
    assert re.match(r"published on \w+\.trigger\.[\w-]+\.material\.new \(stream sequence \d+\)", published.stdout)
    wait_until(lambda: listed(processes)["inbox"]["fires"] == 1, what="the published message firing inbox")


def test_an_interval_schedule_runs_its_task_on_each_fire_until_paused(processes: ProcessPool) -> None:
    start_cluster(processes, workers=1)
    assert processes.run("schedules", "create", "tick", "--every", "1s", "--skill", "echo").returncode == 0
    wait_until(lambda: int(listed(processes)["tick"]["fires"]) >= 2, timeout_s=30, what="two fires")  # type: ignore[call-overload]
    assert processes.run("schedules", "pause", "tick").returncode == 0
    fires = int(listed(processes)["tick"]["fires"])  # type: ignore[call-overload]
    shown = json.loads(processes.run("schedules", "show", "tick", "--json").stdout)
    assert len(shown["fires"]) == fires and shown["upcoming"] == []
    for f in shown["fires"]:
        wait_until(lambda f=f: task_state(processes, f["target_id"]) == "succeeded", what=f"{f['fire_id']} ran")


def test_bad_schedule_commands_print_one_clear_line(processes: ProcessPool) -> None:
    start_cluster(processes, workers=0)
    cases = [
        (("create", "x", "--every", "5m"), "error: give exactly one target: --workflow NAME or --skill NAME\n"),
        (("create", "x", "--every", "often", "--skill", "echo"),
         "error: bad interval 'often': use a number and a unit, like 30s, 10m, 1h30m or 1d\n"),
        (("create", "x", "--cron", "* * *", "--skill", "echo"), None),
        (("create", "x", "--every", "5m", "--workflow", "quant"), None),
        (("trigger", "nope"), "error: no schedule called 'nope'; `claw schedules list` shows them\n"),
        (("pause", "nope"), "error: no schedule called 'nope'; `claw schedules list` shows them\n"),
        (("publish", "material.*"),
         "error: a trigger message goes to one subject, 'material.*' has a wildcard: name it whole\n"),
        (("publish", "material.new", "--data", "{oops"), None),
    ]  # fmt: skip
    for args, message in cases:
        result = processes.run("schedules", *args)
        assert result.returncode == 1, (args, result.stdout)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.stderr
        if message is not None:
            assert result.stderr == message
