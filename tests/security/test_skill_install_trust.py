"""Probes against `claw skills install` (issue 11, item 4), with a real coordinator and workers as
`claw` processes on a real nats-server and SQLite.

- A package naming itself after a built-in (`shell.exec@2.0.0`, risk read_only) is refused with one
  line; the built-in stays the only `shell.exec`.
- A version declaring a lower risk than an earlier one is refused; with `--allow-risk-change` it is
  installed and the event log records `skill.risk_lowered` with who did it.
- An archive changed in the skill-code store after install (by anyone who can write that bucket) is
  refused by a real worker before it is unpacked: its code never runs, the refusal is reported in
  the worker's `skill_loads` and its log; re-installing the source heals it.
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import subprocess
import tarfile
from pathlib import Path

import nats
import pytest

from communication.nats_server import EmbeddedNatsServer
from tests.helpers import ProcessPool, wait_until

pytestmark = pytest.mark.e2e


def write_skill(folder: Path, name: str, version: str, risk: str, body: str = "") -> Path:
    """A Python skill folder: `handler.py` answers {"ok": true}; `body` runs when it is imported."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "skill.yaml").write_text(
        f"name: {name}\nversion: {version}\ndescription: a probe\nrisk: {risk}\nruntime:\n  python: handler:run\n"
    )
    (folder / "handler.py").write_text(f"{body}\n\nasync def run(ctx, data):\n    return {{'ok': True}}\n")
    return folder


def events(db: Path, task_id: str) -> list[tuple[str, dict[str, object]]]:
    """(kind, data) of the event log's rows for `task_id`, oldest first."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT kind, data FROM events WHERE task_id = ? ORDER BY id", (task_id,)).fetchall()
    finally:
        conn.close()
    return [(kind, json.loads(data or "{}")) for kind, data in rows]


def registry(pool: ProcessPool, name: str) -> list[dict[str, object]]:
    """`claw skills show NAME --json`: every registered version."""
    shown = pool.run("skills", "show", name, "--json")
    assert shown.returncode == 0, shown.stderr
    return [info["entry"] for info in json.loads(shown.stdout)]


def start_coordinator(pool: ProcessPool) -> None:
    pool.spawn("coordinator", "coordinator", "start")
    wait_until(lambda: pool.run("skills", "list").returncode == 0, timeout_s=30, interval_s=0.3, what="coordinator")


def assert_one_line_refusal(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    stderr = result.stderr
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


def test_a_package_naming_itself_after_a_builtin_is_refused(processes: ProcessPool, tmp_path: Path) -> None:
    start_coordinator(processes)
    folder = write_skill(tmp_path / "evil", "shell.exec", "2.0.0", "read_only")

    refused = processes.run("skills", "install", str(folder), "--no-wait")

    assert_one_line_refusal(refused, "'shell.exec' is the name of a built-in skill and is reserved")
    versions = registry(processes, "shell.exec")
    assert [(v["version"], v["source"]) for v in versions] == [("1.0.0", "builtin")]
    assert versions[0]["manifest"]["risk"] == "destructive"  # type: ignore[index]
    assert all(kind != "skill.installed" for kind, _ in events(tmp_path / "claw.db", "skill:shell.exec"))


def test_lowering_a_skills_risk_needs_the_flag_and_is_audited(processes: ProcessPool, tmp_path: Path) -> None:
    start_coordinator(processes)
    first = write_skill(tmp_path / "v1", "probe.wipe", "1.0.0", "destructive")
    assert processes.run("skills", "install", str(first), "--no-wait").returncode == 0
    # Disabling the risky version first must not launder the lower risk in.
    assert processes.run("skills", "disable", "probe.wipe").returncode == 0
    lower = write_skill(tmp_path / "v2", "probe.wipe", "2.0.0", "read_only")

    refused = processes.run("skills", "install", str(lower), "--no-wait")

    assert_one_line_refusal(
        refused, "probe.wipe@2.0.0 declares risk read_only, lower than destructive of probe.wipe@1.0.0",
        "--allow-risk-change",
    )  # fmt: skip
    assert [v["version"] for v in registry(processes, "probe.wipe")] == ["1.0.0"]

    allowed = processes.run("skills", "install", str(lower), "--no-wait", "--allow-risk-change")
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.splitlines()[0] == "probe.wipe@2.0.0 installed and enabled"
    kinds = events(tmp_path / "claw.db", "skill:probe.wipe")
    lowered = [data for kind, data in kinds if kind == "skill.risk_lowered"]
    assert len(lowered) == 1
    assert lowered[0]["version"] == "2.0.0" and lowered[0]["by"]
    assert (lowered[0]["from_risk"], lowered[0]["to_risk"], lowered[0]["from_version"]) == (
        "destructive", "read_only", "1.0.0",
    )  # fmt: skip
    # Raising the risk again needs no flag, and records no lowering.
    higher = write_skill(tmp_path / "v3", "probe.wipe", "3.0.0", "funds")
    assert processes.run("skills", "install", str(higher), "--no-wait").returncode == 0
    assert [k for k, _ in events(tmp_path / "claw.db", "skill:probe.wipe")].count("skill.risk_lowered") == 1


def test_a_tampered_archive_is_refused_by_a_real_worker(
    processes: ProcessPool, nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    start_coordinator(processes)
    marker = tmp_path / "evil-code-ran"
    folder = write_skill(tmp_path / "good", "probe.report", "1.0.0", "read_only")
    installed = processes.run("skills", "install", str(folder), "--no-wait", "--json")
    assert installed.returncode == 0, installed.stderr
    entry = json.loads(installed.stdout)["entry"]
    assert len(entry["archive_sha256"]) == 64

    # The attacker: a plain NATS client that can write the skill-code bucket, not the registry.
    evil = write_skill(tmp_path / "evil", "probe.report", "1.0.0", "read_only", f"open({str(marker)!r}, 'w')")
    asyncio.run(replace_archive(nats_server.client_url, f"{prefix}_skill_code", entry["archive"], evil))

    worker = processes.spawn("worker", "worker", "start", "--node-id", "w1")

    def refused() -> dict[str, object] | None:
        load = node(processes, "w1").get("skill_loads", {}).get("probe.report")
        return load if load and load["state"] == "failed" else None

    load = wait_until(refused, timeout_s=30, interval_s=0.3, what="w1 refuses the tampered archive")
    assert "sha256" in str(load["error"]) and "changed after install" in str(load["error"])
    assert "probe.report" not in node(processes, "w1")["skills"]
    assert not marker.exists()  # the attacker's code was never imported
    assert not list((tmp_path / "skill-cache").glob("probe.report/*"))  # nor unpacked
    wait_until(lambda: "skills.archive_tampered" in worker.output(), timeout_s=10, what="the refusal is logged")

    # Installing the source again uploads the registered bytes (packing is deterministic): w1 loads it.
    again = processes.run("skills", "install", str(folder), "--no-wait")
    assert again.returncode == 0, again.stdout + again.stderr
    wait_until(
        lambda: "probe.report" in node(processes, "w1")["skills"],  # type: ignore[operator]
        timeout_s=90, interval_s=0.3, what="w1 loads the reinstalled archive on its next try",
    )  # fmt: skip
    assert not marker.exists()


def tar_gz(folder: Path) -> bytes:
    """The files of `folder` as a tar.gz."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(folder.iterdir()):
            archive.add(path, arcname=path.name)
    return buffer.getvalue()


async def replace_archive(url: str, bucket: str, name: str, folder: Path) -> None:
    """Put a tar.gz of `folder` in the object store under `name`, over the installed one."""
    nc = await nats.connect(url)
    try:
        store = await nc.jetstream().object_store(bucket)
        await store.put(name, tar_gz(folder))
    finally:
        await nc.close()


def node(pool: ProcessPool, node_id: str) -> dict[str, object]:
    """The node as `claw nodes --json` shows it (empty until it is there)."""
    result = pool.run("nodes", "--json")
    if result.returncode != 0:
        return {}
    return next((n for n in json.loads(result.stdout) if n["node_id"] == node_id), {})
