"""`claw skills install`: register a skill folder, then wait (a bounded time) until every online worker
says whether it loaded it.

Workers report, in each heartbeat, per installed skill, the enabled version they loaded, failed to
load (they try again with backoff) or skipped (their labels or `--skills` rule it out). Success means
every online worker loaded or skipped this version; a worker that failed, or said nothing before the
wait ended, makes the command exit 1 naming it, so an install never looks done while a worker runs
without the skill.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec

from cli.output import emit_json, fmt_duration, shorten
from common.config import ClawConfig
from common.errors import ClawError
from common.models import NodeView, SkillLoad
from common.skills import RegistryEntry
from common.states import NodeStatus
from communication.api_client import ClawClient

PENDING = "pending"
POLL_S = 0.25
# A node in one of these states is done with the version; any other state makes the install fail.
SETTLED = ("loaded", "skipped")


class SkillNotLoadedError(ClawError):
    """The skill is installed, but an online worker failed to load it or did not say in time."""

    code = "not_loaded"


class InstallOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What `claw skills install --json` prints: the coordinator's reply (`entry`, `created`), and each
    online node's report (empty with `--no-wait`)."""

    entry: RegistryEntry
    created: bool
    waited: bool
    waited_s: float
    nodes: dict[str, SkillLoad]


def rollout(nodes: list[NodeView], name: str, version: str) -> dict[str, SkillLoad]:
    """Per online node, how it fared with `name@version` (`pending`: it has not said yet)."""
    loads: dict[str, SkillLoad] = {}
    for node in nodes:
        if node.status == NodeStatus.OFFLINE:
            continue
        load = node.skill_loads.get(name)
        if load is not None and load.version == version:
            loads[node.node_id] = load
        elif node.skill_versions.get(name) == version:
            loads[node.node_id] = SkillLoad(version=version, state="loaded")  # a worker that predates skill_loads
        else:
            loads[node.node_id] = SkillLoad(version=version, state=PENDING)
    return loads


async def wait_for_rollout(client: ClawClient, name: str, version: str, timeout_s: float) -> dict[str, SkillLoad]:
    """Poll the registry until no online node is pending, or `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        loads = rollout(await client.nodes(), name, version)
        if all(load.state != PENDING for load in loads.values()) or time.monotonic() >= deadline:
            return loads
        await asyncio.sleep(POLL_S)


async def install_skill(
    config: ClawConfig,
    folder: Path,
    *,
    by: str,
    wait_s: float | None,
    json_out: bool,
    allow_risk_change: bool = False,
) -> int:
    """Install `folder`, wait up to `wait_s` (None: not at all) for the online workers; the exit code."""
    started = time.monotonic()
    async with await ClawClient.connect(config.nats, name="claw-cli") as client:
        reply = await client.install_skill(folder, by=by, allow_risk_change=allow_risk_change)
        entry = reply.entry
        loads = {} if wait_s is None else await wait_for_rollout(client, entry.name, entry.version, wait_s)
    outcome = InstallOutcome(
        entry=entry,
        created=reply.created,
        waited=wait_s is not None,
        waited_s=round(time.monotonic() - started, 3),
        nodes=loads,
    )
    if json_out:
        emit_json(outcome)
    else:
        _render(outcome, wait_s)
    missing = sorted(node for node, load in loads.items() if load.state not in SETTLED)
    if missing:
        raise SkillNotLoadedError(
            f"{entry.name}@{entry.version} is installed, but not loaded by {', '.join(missing)}; "
            "a worker that failed tries again with backoff (`claw nodes --json` shows its skill_loads)"
        )
    return 0


def _render(outcome: InstallOutcome, wait_s: float | None) -> None:
    entry = outcome.entry
    done = "installed and enabled" if outcome.created else "was already installed with the same files"
    print(f"{entry.name}@{entry.version} {done}")
    if wait_s is None:
        print("not waiting for the workers: `claw skills show` lists the nodes running it")
        return
    if not outcome.nodes:
        print("no worker is online: workers load it when they start")
        return
    loaded = sorted(node for node, load in outcome.nodes.items() if load.state == "loaded")
    print(f"loaded by {len(loaded)} of {len(outcome.nodes)} online workers in {fmt_duration(outcome.waited_s)}: "
          + (", ".join(loaded) or "none"))  # fmt: skip
    for node, load in sorted(outcome.nodes.items()):
        if load.state == "loaded":
            continue
        if load.state == PENDING:
            print(f"  {node}: no report within {wait_s:g} s")
        elif load.state == "failed":
            print(f"  {node}: failed ({load.attempts} tries so far, retrying): {shorten(load.error or '', 200)}")
        else:
            print(f"  {node}: {load.state}: {load.error or ''}")
