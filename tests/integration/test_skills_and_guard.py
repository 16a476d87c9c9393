"""The skill registry, the guard with human approval, and the hash-chained event log, on a real
nats-server with an in-process coordinator and workers."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from common.config import ClawConfig
from common.errors import InvalidInputError
from common.skills import Risk
from common.states import AttemptState, Priority, TaskState
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer
from tests.conftest import make_config
from tests.fakes.openai_server import FakeOpenAIServer
from tests.helpers import (
    connected_client,
    eventually,
    running_coordinator,
    running_worker,
    spec,
    wait_nodes_online,
    worker_config,
)
from worker.context import TaskContext
from worker.skills import Skill, builtin_registry

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "skills"


def with_worker(config: ClawConfig, tmp_path: Path, **worker: Any) -> ClawConfig:
    return worker_config(config, **{"skill_cache_dir": str(tmp_path / "skill-cache"), **worker})


async def node_skills(client: ClawClient) -> set[str]:
    return {s for n in await client.nodes() if n.status == "online" for s in n.skills}


async def finish(client: ClawClient, task_id: str) -> Any:
    await client.wait([task_id], timeout_s=30)
    return await client.get_task(task_id)


async def test_install_run_disable_enable_and_search_a_skill(config: ClawConfig, tmp_path: Path) -> None:
    async with (
        running_coordinator(config),
        running_worker(with_worker(config, tmp_path, node_id="w1")) as worker,
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        reply = await client.install_skill(EXAMPLES / "text_stats", by="alice")
        assert reply.created and reply.entry.enabled and reply.entry.source == "installed"
        assert not (await client.install_skill(EXAMPLES / "text_stats")).created  # same files: a no-op
        await eventually(lambda: "text.stats" in worker.skills.names(), what="worker loads the installed skill")
        await eventually(lambda: _has(client, "text.stats"), what="the node advertises it")

        submitted = await client.submit(spec("text.stats", {"text": "to be or not to be", "top": 2}))
        task = await finish(client, submitted.task_id)
        assert task.state == TaskState.SUCCEEDED, task.error_message
        assert msgspec.json.decode(bytes(task.result)) == {
            "words": 6, "lines": 1, "characters": 18, "top": [["to", 2], ["be", 2]],
        }  # fmt: skip

        with pytest.raises(
            InvalidInputError, match=r"input of text\.stats: field '\(the input\)': 'text' is a required"
        ):
            await client.submit(spec("text.stats", {"txt": "typo"}))
        with pytest.raises(InvalidInputError, match=r"field 'top': 0 is less than the minimum of 1"):
            await client.submit(spec("text.stats", {"text": "x", "top": 0}))

        await client.set_skill_enabled("text.stats", enabled=False, by="alice")
        with pytest.raises(
            InvalidInputError, match=r"skill 'text.stats' is disabled; enable it with `claw skills enable"
        ):
            await client.submit(spec("text.stats", {"text": "x"}))
        # Within a heartbeat the worker stops pulling it - without restarting.
        await eventually(lambda: "text.stats" not in worker.puller.skills, timeout_s=5, what="worker drops the skill")
        await eventually(lambda: _lacks(client, "text.stats"), timeout_s=5, what="no longer advertised")

        await client.set_skill_enabled("text.stats", enabled=True, by="alice")
        await eventually(lambda: "text.stats" in worker.puller.skills, timeout_s=5, what="worker pulls it again")
        again = await client.submit(spec("text.stats", {"text": "back again"}))
        assert (await finish(client, again.task_id)).state == TaskState.SUCCEEDED

        found = await client.skills(search="word statistics")
        assert [i.entry.name for i in found] == ["text.stats"]
        assert [i.entry.name for i in await client.skills(search="risky-nonsense")] == []
        await eventually(lambda: _has(client, "text.stats"), what="advertised again")
        [info] = await client.skills(name="text.stats")
        assert info.nodes == ["w1"] and info.entry.manifest.risk == Risk.READ_ONLY

        # The registry changes are events of the hash-chained log too.
        assert (await client.audit_verify()).ok


async def _has(client: ClawClient, skill: str) -> bool:
    return skill in await node_skills(client)


async def _lacks(client: ClawClient, skill: str) -> bool:
    return skill not in await node_skills(client)


async def test_the_coordinator_compiles_input_schemas_at_start_not_in_the_first_submit(config: ClawConfig) -> None:
    from common import skills

    skills._validators.clear()  # other tests in this process may have compiled them already
    async with running_coordinator(config):
        compiled = {name for name, _, which in skills._validators if which == "input"}
    assert {"echo", "llm.chat", "shell.exec"} <= compiled


async def test_a_changed_skill_under_the_same_version_is_refused(config: ClawConfig, tmp_path: Path) -> None:
    folder = tmp_path / "draft_note"
    shutil.copytree(EXAMPLES / "draft_note", folder)
    async with running_coordinator(config), connected_client(config) as client:
        assert (await client.install_skill(folder)).created
        (folder / "note.py").write_text((folder / "note.py").read_text() + "\n# changed\n")
        with pytest.raises(InvalidInputError, match=r"draft\.note@1\.0\.0 is already installed with other contents"):
            await client.install_skill(folder)


async def test_a_skill_is_loaded_only_where_its_required_labels_are(config: ClawConfig, tmp_path: Path) -> None:
    folder = tmp_path / "gpu_skill"
    shutil.copytree(EXAMPLES / "draft_note", folder)
    manifest = (folder / "skill.yaml").read_text().replace("name: draft.note", "name: gpu.render")
    (folder / "skill.yaml").write_text(manifest + 'requires_labels: {gpu: "true"}\n')
    plain = with_worker(config, tmp_path / "plain", node_id="plain")
    gpu = with_worker(config, tmp_path / "gpu", node_id="gpu", labels={"gpu": "true"})
    async with (
        running_coordinator(config),
        running_worker(plain) as plain_worker,
        running_worker(gpu) as gpu_worker,
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 2)
        await client.install_skill(folder)
        await eventually(lambda: "gpu.render" in gpu_worker.skills.names(), what="loaded on the gpu node")
        submitted = await client.submit(spec("gpu.render", {"title": "t", "points": ["p"]}))
        task = await finish(client, submitted.task_id)
        assert (task.state, task.node_id) == (TaskState.SUCCEEDED, "gpu")
        assert "gpu.render" not in plain_worker.skills.names()


def guarded_registry() -> Any:
    registry = builtin_registry()

    async def act(ctx: TaskContext, input: dict[str, Any]) -> str:
        return f"done {ctx.task_id}"

    registry.register(Skill("ext.notify", act, risk=Risk.WRITE_EXTERNAL))
    registry.register(Skill("db.drop", act, risk=Risk.DESTRUCTIVE))
    return registry


async def test_a_write_external_task_waits_for_approval_then_runs(config: ClawConfig) -> None:
    async with (
        running_coordinator(config),
        running_worker(config, skills=guarded_registry()),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        async with connected_client(config, identity="agent-7") as agent:
            held = await agent.submit(spec("ext.notify", {"to": "ops"}))
        assert held.state == TaskState.WAITING_APPROVAL and "external-or-funds" in held.note
        # Held tasks are not published: they hold no queue slot and no ack timer.
        info = await client.conn.js.consumer_info(
            client.conn.subjects.tasks_stream, client.conn.subjects.task_consumer("ext.notify", Priority.NORMAL)
        )
        assert info.num_pending == 0 and info.num_ack_pending == 0
        [waiting] = await client.approvals()
        assert (waiting.task_id, waiting.skill, waiting.risk, waiting.submitter) == (
            held.task_id, "ext.notify", "write_external", "agent-7",
        )  # fmt: skip
        assert waiting.input_summary == '{"to":"ops"}' and waiting.approvals_needed == 1
        async with connected_client(config, identity="alice") as alice:
            outcome = await alice.approve(held.task_id, note="looks fine")
        assert outcome.approved_by == ["alice"]
        task = await finish(client, held.task_id)
    assert task.state == TaskState.SUCCEEDED
    kinds = [e.kind for e in task.events]
    assert kinds[:4] == ["submitted", "held", "approved", "released"]
    approved = next(e for e in task.events if e.kind == "approved")
    assert msgspec.json.decode(bytes(approved.data)) == {"by": "alice", "note": "looks fine", "count": 1}


async def test_a_destructive_task_needs_two_distinct_approvers(config: ClawConfig) -> None:
    async with (
        running_coordinator(config),
        running_worker(config, skills=guarded_registry()),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        held = await client.submit(spec("db.drop", {"table": "old"}))
        assert held.state == TaskState.WAITING_APPROVAL
        async with (
            connected_client(config, identity="alice") as alice,
            connected_client(config, identity="Alice") as alice2,
        ):
            first = await alice.approve(held.task_id)
            assert first.state == TaskState.WAITING_APPROVAL and first.approvals_needed == 2
            with pytest.raises(InvalidInputError, match="Alice already approved task .* needs 2 different approvers"):
                await alice2.approve(held.task_id)
        assert (await client.task_states([held.task_id]))[held.task_id] == TaskState.WAITING_APPROVAL
        async with connected_client(config, identity="bob") as bob:
            second = await bob.approve(held.task_id)
        assert second.approved_by == ["alice", "bob"]
        assert (await finish(client, held.task_id)).state == TaskState.SUCCEEDED


async def test_rejection_and_expiry_end_rejected_and_nothing_runs(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    config = make_config(nats_server, prefix, tmp_path, coordinator={"approval_ttl_s": 0.5})
    calls: list[str] = []

    async def act(ctx: TaskContext, input: dict[str, Any]) -> None:
        calls.append(ctx.task_id)

    registry = builtin_registry()
    registry.register(Skill("ext.notify", act, risk=Risk.WRITE_EXTERNAL))
    async with running_coordinator(config), running_worker(config, skills=registry), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        rejected = await client.submit(spec("ext.notify"))
        expiring = await client.submit(spec("ext.notify"))
        outcome = await client.reject(rejected.task_id, reason="not today")
        assert outcome.state == TaskState.REJECTED
        final = await client.wait([rejected.task_id, expiring.task_id], timeout_s=30)
        assert final == {rejected.task_id: TaskState.REJECTED, expiring.task_id: TaskState.REJECTED}
        expired = await client.get_task(expiring.task_id)
        task = await client.get_task(rejected.task_id)
    assert calls == []
    assert task.error_message == "not today" and expired.error_message == "approval expired"
    assert [e.kind for e in expired.events if e.to_state] == ["submitted", "held", "expired"]


async def test_a_denied_task_never_reaches_jetstream(
    nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path
) -> None:
    policy = tmp_path / "guard.yaml"
    policy.write_text(
        "rules:\n"
        "  - name: no-bots-deleting\n"
        "    match: {risk: destructive, submitter: 'bot-*'}\n"
        "    action: deny\n"
        "    reason: bots may not run destructive skills\n"
        "  - name: small-notices\n"
        "    match: {skill: 'ext.*', input: {priority: {in: [low, normal]}, size: {le: 10}}}\n"
        "    action: allow\n"
        "  - name: rest\n"
        "    match: {}\n"
        "    action: require_approval\n"
    )
    config = make_config(nats_server, prefix, tmp_path, coordinator={"guard_policy": str(policy)})
    async with (
        running_coordinator(config),
        running_worker(config, skills=guarded_registry()),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        async with connected_client(config, identity="bot-3") as bot:  # the submitter is who connects
            denied = await bot.submit(spec("db.drop"))
        assert denied.state == TaskState.REJECTED
        assert denied.note == "denied by guard rule 'no-bots-deleting': bots may not run destructive skills"
        small = await client.submit(spec("ext.notify", {"priority": "low", "size": 3}))
        big = await client.submit(spec("ext.notify", {"priority": "low", "size": 30}))
        assert (small.state, big.state) == (TaskState.QUEUED, TaskState.WAITING_APPROVAL)
        check = await client.guard_check("ext.notify", msgspec.Raw(b'{"priority": "normal", "size": 10}'))
        assert (check.risk, check.decision.rule, check.decision.action) == ("write_external", "small-notices", "allow")
        assert check.decision.explanation[0] == "skill ext.notify matches ext.*"
        human = await client.guard_check("db.drop", submitter="dave")
        assert (human.decision.rule, human.decision.action, human.decision.approvals) == ("rest", "require_approval", 1)
        await client.wait([small.task_id], timeout_s=20)
        stream = await client.conn.js.stream_info(client.conn.subjects.tasks_stream)
        task = await client.get_task(denied.task_id)
    assert stream.state.messages == 0  # the small one ran and was acked; the others were never published
    assert task.attempts == 0 and [e.kind for e in task.events] == ["submitted", "denied"]


async def test_the_default_policy_holds_risky_builtin_tools(config: ClawConfig) -> None:
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        shell = await client.submit(spec("shell.exec", {"argv": ["ls"]}))
        http = await client.submit(spec("http.request", {"url": "http://127.0.0.1:9/"}))
        read = await client.submit(spec("fs.list", {}))
        assert [shell.state, http.state] == [TaskState.WAITING_APPROVAL] * 2
        assert read.state == TaskState.QUEUED
        assert {a.task_id: a.approvals_needed for a in await client.approvals()} == {shell.task_id: 2, http.task_id: 1}


async def test_editing_deleting_or_inserting_events_is_detected(config: ClawConfig, tmp_path: Path) -> None:
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        results = await client.submit_many([spec("echo", {"n": i}) for i in range(3)])
        await client.wait([r.task_id for r in results], timeout_s=20)
        healthy = await client.audit_verify()
        assert healthy.ok and healthy.checked >= 12

        db = sqlite3.connect(tmp_path / "claw.db")
        try:
            ids = [r[0] for r in db.execute("SELECT id FROM events ORDER BY id")]
            target = ids[5]
            node_before = db.execute("SELECT node_id FROM events WHERE id = ?", (target,)).fetchone()[0]
            db.execute("DROP TRIGGER events_no_update")
            db.execute("DROP TRIGGER events_no_delete")
            db.execute("UPDATE events SET node_id = 'forged' WHERE id = ?", (target,))
            db.commit()
            altered = await client.audit_verify()
            assert (altered.ok, altered.broken_event) == (False, target) and "altered" in (altered.problem or "")

            db.execute("UPDATE events SET node_id = ? WHERE id = ?", (node_before, target))
            db.commit()
            assert (await client.audit_verify()).ok  # put back as it was: intact again

            db.execute("DELETE FROM events WHERE id = ?", (ids[3],))
            db.commit()
            removed = await client.audit_verify()
            assert (removed.ok, removed.broken_event) == (False, ids[4])
            assert "removed or inserted" in (removed.problem or "")
        finally:
            db.close()


async def test_an_inserted_event_is_named(config: ClawConfig, tmp_path: Path) -> None:
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        submitted = await client.submit(spec("echo"))
        await client.wait([submitted.task_id], timeout_s=20)
        db = sqlite3.connect(tmp_path / "claw.db")
        try:
            last = db.execute("SELECT id, task_id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
            db.execute(
                "INSERT INTO events (task_id, kind, at, prev_hash, hash) VALUES (?, 'succeeded', ?, ?, ?)",
                (last[1], time.time(), last[2], "f" * 64),
            )
            db.commit()
            inserted_id = db.execute("SELECT MAX(id) FROM events").fetchone()[0]
        finally:
            db.close()
        reply = await client.audit_verify()
    assert (reply.ok, reply.broken_event) == (False, inserted_id)


async def test_llm_chat_rate_limit_is_retried_after_the_servers_retry_after(
    nats_server: EmbeddedNatsServer,
    prefix: str,
    tmp_path: Path,
    openai_server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLAW_TEST_LLM_KEY", "sk-test")
    config = make_config(
        nats_server,
        prefix,
        tmp_path,
        tools={
            "llm_base_url": openai_server.base_url,
            "llm_api_key_env": "CLAW_TEST_LLM_KEY",
            "http_allow_private": ["127.0.0.1"],
        },
    )
    openai_server.next_modes, openai_server.retry_after = ["rate_limited"], "1"
    async with running_coordinator(config), running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        submitted = await client.submit(spec("llm.chat", {"messages": [{"role": "user", "content": "hi"}]}))
        task = await finish(client, submitted.task_id)
    assert task.state == TaskState.SUCCEEDED
    assert msgspec.json.decode(bytes(task.result))["usage"]["total_tokens"] == 19
    first, second = task.attempt_log
    assert (first.state, first.error_type) == (AttemptState.RATE_LIMITED, "RetryableError")  # a 429: pushed back
    retried = [msgspec.json.decode(bytes(e.data))["retry_in_s"] for e in task.events if e.kind == "retrying"]
    assert retried == [1.0]
    assert second.started_at - first.finished_at >= 0.95  # type: ignore[operator]
    assert len(openai_server.completions()) == 2


async def test_a_history_rewritten_with_fresh_hashes_is_caught_by_the_anchor(
    config: ClawConfig, tmp_path: Path
) -> None:
    from storage.audit import GENESIS, canonical, chain_hash

    async with running_coordinator(config) as coordinator, running_worker(config), connected_client(config) as client:
        await wait_nodes_online(client, 1)
        submitted = await client.submit(spec("echo", {"secret": "original"}))
        await client.wait([submitted.task_id], timeout_s=20)
        await coordinator.auditor.anchor()
        db = sqlite3.connect(tmp_path / "claw.db")
        db.row_factory = sqlite3.Row
        try:
            db.execute("DROP TRIGGER events_no_update")
            db.execute("UPDATE events SET node_id = 'forged' WHERE kind = 'started'")
            # Recompute every hash, as someone with the file (and no key) could.
            prev = GENESIS
            for row in db.execute("SELECT * FROM events ORDER BY id").fetchall():
                content = canonical(
                    row["event_id"], row["task_id"], row["attempt"], row["kind"], row["from_state"],
                    row["to_state"], row["node_id"], row["at"], row["data"],
                )  # fmt: skip
                digest = chain_hash(prev, content, None)
                db.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE id = ?", (prev, digest, row["id"]))
                prev = digest
            db.commit()
        finally:
            db.close()
        reply = await client.audit_verify()
    assert not reply.ok and "anchored in NATS" in (reply.problem or "")
