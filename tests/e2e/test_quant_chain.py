"""End to end: the quant pipeline as users run it today, with real `claw` processes. Each skill is
installed from its folder with `claw skills install`; the chain runs task by task with `claw submit`,
this test feeding each step's output to the next (the workflow engine will do that later);
propose_orders waits for a person and is approved with `claw approve`; the back-test report's
chart comes back with `claw artifacts get` and is a valid PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli_cluster import start_cluster
from tests.helpers import ProcessPool, wait_until
from tests.skill_modules import SKILLS
from tests.unit.test_quant_chart import decode

pytestmark = pytest.mark.e2e

CHAIN = [
    "fetch_market_data",
    "compute_features",
    "run_strategy",
    "backtest",
    "backtest_report",
    "propose_orders",
    "record_fills",
    "execution_report",
]


def submit(processes: ProcessPool, tmp_path: Path, skill: str, input: dict[str, Any], *, wait: bool = True) -> Any:
    """`claw submit SKILL --input-file F [--wait] --json`; the task (with its result when waited for)."""
    path = tmp_path / f"{skill}.input.json"
    path.write_text(json.dumps(input))
    args = ["submit", skill, "--input-file", str(path), "--json", *(["--wait"] if wait else [])]
    done = processes.run(*args, timeout_s=120)
    assert done.returncode == 0, f"{skill}: {done.stdout}{done.stderr}"
    [task] = json.loads(done.stdout)
    return task


def test_the_quant_chain_runs_task_by_task_through_claw_with_an_approval(
    processes: ProcessPool, tmp_path: Path
) -> None:
    start_cluster(processes, workers=1)
    for folder in CHAIN:
        installed = processes.run("skills", "install", str(SKILLS / "quant" / folder), timeout_s=90)
        assert installed.returncode == 0, installed.stdout + installed.stderr
        assert installed.stdout.splitlines()[0] == f"quant.{folder}@1.0.0 installed and enabled"

    results: dict[str, Any] = {}
    tasks: dict[str, Any] = {}

    def step(name: str, input: dict[str, Any]) -> Any:
        tasks[name] = submit(processes, tmp_path, f"quant.{name}", input)
        assert tasks[name]["state"] == "succeeded", tasks[name]
        results[name] = tasks[name]["result"]
        return results[name]

    prices = step("fetch_market_data", {"symbol": "SYN", "seed": 42, "days": 250})
    features = step("compute_features", {"prices": prices, "fast_window": 10, "slow_window": 30})
    signals = step("run_strategy", {"features": features})
    backtest = step("backtest", {"signals": signals, "initial_capital": 10_000, "fee_bps": 5, "slippage_bps": 5})
    report = step("backtest_report", {"backtest": backtest})

    held = submit(processes, tmp_path, "quant.propose_orders", {"report": report}, wait=False)
    assert held["state"] == "waiting_approval" and "needs 1 approval" in held["note"]
    waiting = processes.run("approvals").stdout
    assert held["task_id"] in waiting and "quant.propose_orders" in waiting
    # Another person than the submitter (on this unauthenticated test server, a name it goes by).
    approved = processes.run("approve", held["task_id"], env={"CLAW_NATS_IDENTITY": "risk-officer"})
    assert approved.returncode == 0, approved.stderr
    watched = processes.run("task", "watch", held["task_id"], timeout_s=90)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    shown = json.loads(processes.run("task", "show", held["task_id"], "--json").stdout)
    assert shown["state"] == "succeeded"
    proposal = results["propose_orders"] = shown["result"]
    fills = step("record_fills", {"proposal": proposal, "fee_bps": 1, "slippage_bps": 5})
    execution = step("execution_report", {"fills": fills})

    # The numbers carry through the chain.
    assert features["dates"] == prices["dates"] and len(prices["close"]) == 250
    assert backtest["position"] == signals["position"]
    assert report["metrics"] == backtest["metrics"]
    assert report["target"] == {
        "symbol": "SYN",
        "date": prices["dates"][-1],
        "price": prices["close"][-1],
        "position": signals["position"][-1],
    }
    price, position = report["target"]["price"], report["target"]["position"]
    wanted = math.floor(10_000 / price) if position == 1 else 0
    assert proposal["target"]["quantity"] == wanted
    assert [(o["side"], o["quantity"]) for o in proposal["orders"]] == ([("buy", wanted)] if wanted else [])
    assert fills["portfolio_after"]["positions"].get("SYN", 0.0) == wanted
    assert execution["totals"] == fills["totals"]

    # The report's artifacts, fetched as a user would.
    chart = tmp_path / "equity_curve.png"
    got = processes.run("artifacts", "get", tasks["backtest_report"]["task_id"], "equity_curve.png", "-o", str(chart))
    assert got.returncode == 0, got.stderr
    width, height, _ = decode(chart.read_bytes())
    assert (width, height) == (800, 420) and report["chart"]["size"] == chart.stat().st_size
    markdown = tmp_path / "report.md"
    got = processes.run(
        "artifacts", "get", tasks["backtest_report"]["task_id"], "backtest_report.md", "-o", str(markdown)
    )
    assert got.returncode == 0, got.stderr
    text = markdown.read_text()
    assert text.startswith("# Back-test: SYN, ma_crossover 10/30\n")
    assert f"| Total return | {backtest['metrics']['total_return'] * 100:+.2f}% |" in text
    assert "![Equity curve and drawdown](equity_curve.png)" in text
    listed = json.loads(processes.run("artifacts", "list", tasks["execution_report"]["task_id"], "--json").stdout)
    assert [a["name"] for a in listed] == ["execution_report.md"]
    wait_until(lambda: _events(processes, held["task_id"]) >= {"held", "approved", "succeeded"}, what="the timeline")


def _events(processes: ProcessPool, task_id: str) -> set[str]:
    shown = json.loads(processes.run("task", "show", task_id, "--json").stdout)
    return {event["kind"] for event in shown["events"]}
