"""End to end: the quant pipeline as one workflow in `claw up`, as a user runs it. The eight quant
skills are installed with `claw skills install`, examples/workflows/quant.yaml is registered and
run; the run waits at propose_orders (risk funds) until `claw approve` with the risk officer's
name, then finishes; the back-test report's chart is a valid PNG; every node's task has its
timeline."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, ProcessPool, child_env, local_dirs, wait_until
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


def test_the_quant_workflow_runs_in_claw_up_waits_for_approval_and_reports_a_png(tmp_path: Path) -> None:
    pool = ProcessPool(child_env(CLAW_LOG_LEVEL="info", **local_dirs(tmp_path)), tmp_path)
    try:
        up = pool.spawn("up", "up", "--workers", "1", "--data-dir", str(tmp_path / "data"), "--nats-port", "0",
                        "--monitor-port", "0")  # fmt: skip
        match = wait_until(
            lambda: re.search(r"claw --nats (nats://\S+) submit", up.output()), timeout_s=90, what="claw up banner"
        )
        url = match.group(1)

        auth = tmp_path / "data" / "auth"  # claw up's credentials: the local admin's, and more issued there

        def claw(*args: str, timeout_s: float = 90) -> Any:
            return pool.run("--nats", url, "--creds", str(auth / "admin.creds"), *args, timeout_s=timeout_s)

        for folder in CHAIN:
            installed = claw("skills", "install", str(SKILLS / "quant" / folder))
            assert installed.returncode == 0, installed.stdout + installed.stderr
        registered = claw("workflow", "register", str(ROOT / "examples" / "workflows" / "quant.yaml"))
        assert registered.returncode == 0, registered.stderr
        assert registered.stdout.strip() == "quant v1 registered (8 nodes)"
        started = claw("workflow", "run", "quant", "--input", '{"symbol": "SYN", "days": 250}', "--json")
        assert started.returncode == 0, started.stderr
        run_id = json.loads(started.stdout)["run_id"]

        def show() -> dict[str, Any]:
            done = claw("workflow", "show", run_id, "--json")
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)  # type: ignore[no-any-return]

        def nodes(view: dict[str, Any]) -> dict[str, Any]:
            return {n["name"]: n for n in view["nodes"]}

        held = wait_until(
            lambda: (v := show()) and nodes(v)["propose_orders"]["waits_for"] == ["approval"] and v,
            timeout_s=180,
            interval_s=0.5,
            what="the run waiting at propose_orders",
        )
        assert held["state"] == "running"
        assert [nodes(held)[n]["state"] for n in CHAIN[:5]] == ["succeeded"] * 5
        assert [nodes(held)[n]["state"] for n in CHAIN[6:]] == ["waiting", "waiting"]
        text = claw("workflow", "show", run_id).stdout
        assert re.search(r"propose_orders\s+running .* waits for approval", text), text
        task_id = nodes(held)["propose_orders"]["task_ids"][0]
        assert task_id in claw("approvals").stdout
        # Another person than the run's starter approves, with credentials of their own (issued while
        # the cluster runs): the identity is the one bound to them.
        officer = tmp_path / "risk-officer.creds"
        issued = pool.run("creds", "create", "--auth-dir", str(auth), "--role", "approver", "--name", "risk-officer",
                          "-o", str(officer))  # fmt: skip
        assert issued.returncode == 0, issued.stderr
        approved = pool.run("--nats", url, "--creds", str(officer), "approve", task_id)
        assert approved.returncode == 0, approved.stderr
        watched = claw("workflow", "watch", run_id, timeout_s=180)
        assert watched.returncode == 0, watched.stdout + watched.stderr
        assert watched.stdout.strip().endswith(f"run {run_id}: succeeded")

        view = show()
        assert view["state"] == "succeeded" and all(n["state"] == "succeeded" for n in view["nodes"])
        done = nodes(view)
        report_task = done["backtest_report"]["task_ids"][0]
        chart = tmp_path / "equity_curve.png"
        got = claw("artifacts", "get", report_task, "equity_curve.png", "-o", str(chart))
        assert got.returncode == 0, got.stderr
        width, height, _ = decode(chart.read_bytes())
        assert (width, height) == (800, 420)
        # Every node's task has its timeline, and the approval is in propose_orders'.
        for name in CHAIN:
            shown = json.loads(claw("task", "show", done[name]["task_ids"][0], "--json").stdout)
            kinds = {event["kind"] for event in shown["events"]}
            assert {"submitted", "succeeded"} <= kinds, (name, kinds)
            assert shown["trace_id"] == view["trace_id"]
        approvals = json.loads(claw("task", "show", task_id, "--json").stdout)
        assert {"held", "approved", "succeeded"} <= {event["kind"] for event in approvals["events"]}
        fills = json.loads(claw("task", "show", done["record_fills"]["task_ids"][0], "--json").stdout)["result"]
        execution = json.loads(claw("task", "show", done["execution_report"]["task_ids"][0], "--json").stdout)
        assert execution["result"]["totals"] == fills["totals"]

        up.popen.send_signal(signal.SIGTERM)
        assert up.popen.wait(60) == 0
    finally:
        pool.stop_all()
