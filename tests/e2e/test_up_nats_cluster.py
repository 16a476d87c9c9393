"""`claw up --nats-nodes 3`: a NATS cluster on one machine, every stream on each server; a server
that dies is started again while the other two keep the quorum, and tasks keep running."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.e2e.test_up import claw_up, json_values
from tests.helpers import ProcessPool, child_env, wait_until

pytestmark = pytest.mark.e2e


def nats_servers(data_dir: Path) -> dict[str, psutil.Process]:
    """The running nats-servers of this data dir, by server name (n1, n2, ...)."""
    found = {}
    for process in psutil.process_iter(["cmdline"]):
        argv = process.info["cmdline"] or []
        if argv and argv[0].endswith("nats-server") and any(str(data_dir) in a for a in argv):
            found[argv[argv.index("-n") + 1]] = process
    return found


def replicas(monitor_url: str, stream: str) -> int:
    """How many servers hold `stream` (the leader and its replicas), as the server says."""
    with urllib.request.urlopen(f"{monitor_url}/jsz?accounts=true&streams=true", timeout=5) as reply:
        info = json.load(reply)
    for account in info.get("account_details", []):
        for detail in account.get("stream_detail", []):
            if detail["name"] == stream:
                return 1 + len(detail.get("cluster", {}).get("replicas", []))
    raise AssertionError(f"no stream {stream}")


@pytest.mark.timeout(360)
def test_claw_up_runs_a_three_node_nats_cluster_and_restarts_a_killed_server(tmp_path: Path) -> None:
    pool = ProcessPool(child_env(), tmp_path)
    # Three servers elect their JetStream leaders before the coordinator can make its streams: slower
    # than one server on a loaded machine.
    with claw_up(tmp_path, json_out=True, extra=("--nats-nodes", "3", "--gateway", "off"), ready_timeout_s=240) as up:
        [banner] = [v for v in json_values((tmp_path / "up.log").read_text()) if "nats_url" in v]
        assert banner["nats_nodes"] == 3 and len(up.url.split(",")) == 3
        servers = nats_servers(up.data_dir)
        assert sorted(servers) == ["n1", "n2", "n3"]
        assert replicas(banner["monitor_url"], "CLAW_TASKS") == 3
        creds = str(up.data_dir / "auth" / "admin.creds")

        def submit(label: str) -> bool:
            result = pool.run("--nats", up.url, "--creds", creds, "submit", "echo", "--input",
                              json.dumps({"label": label}), "--wait", timeout_s=60)  # fmt: skip
            return result.returncode == 0 and f'"label":"{label}"' in result.stdout.replace(" ", "")

        assert submit("before")
        servers["n2"].kill()
        wait_until(
            lambda: "nats-server n2 exited; starting it again" in (tmp_path / "up.log").read_text(),
            timeout_s=30,
            what="claw up to report the restart of n2",
        )
        # Served by the other two while n2 comes back, and after.
        wait_until(lambda: submit("after"), timeout_s=90, interval_s=1.0, what="a task after n2 was killed")
        wait_until(
            lambda: (n2 := nats_servers(up.data_dir).get("n2")) is not None and n2.pid != servers["n2"].pid,
            timeout_s=30,
            what="n2 running again",
        )
        assert up.popen.poll() is None
    assert nats_servers(up.data_dir) == {}


def test_nats_nodes_must_be_one_three_or_five_and_a_store_keeps_its_layout(tmp_path: Path) -> None:
    pool = ProcessPool(child_env(), tmp_path)
    result = pool.run("up", "--nats-nodes", "2", "--data-dir", str(tmp_path / "d"))
    assert result.returncode != 0 and "use 1, 3 or 5" in result.stderr and "Traceback" not in result.stderr
    single = tmp_path / "single" / "nats" / "jetstream"
    single.mkdir(parents=True)  # what one nats-server leaves in <data dir>/nats
    result = pool.run("up", "--nats-nodes", "3", "--data-dir", str(tmp_path / "single"), "--nats-port", "0",
                      "--monitor-port", "0", "--gateway", "off")  # fmt: skip
    assert result.returncode == 1 and "holds the store of a single nats-server" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_malformed_nats_url_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    pool = ProcessPool(child_env(), tmp_path)
    # The trailing ';' is what copying a URL out of a sentence gives; nats-py raised an AssertionError.
    for url in ("nats://127.0.0.1:4222;", "http://127.0.0.1:4222", "nats://127.0.0.1:1,nats://host:port"):
        result = pool.run("--nats", url, "status", timeout_s=30)
        assert result.returncode == 1, result
        assert "is not valid: give nats://HOST:PORT" in result.stderr and "Traceback" not in result.stderr
