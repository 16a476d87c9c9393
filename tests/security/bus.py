"""A real cluster with credentials for the bus probes: its own nats-server with authentication (the
permissions `claw creds` generates), a coordinator and a worker in this process (uvloop), and
credentials for every role an attacker might hold.

Identities: `coordinator`; workers `w1` (runs the tasks), `w2` (an attacker's worker) and `w3` (bound
to the skill `echo`); people
`alice` (submitter), `bob` and `carol` (approver + submitter), `oscar` (operator), `adam` (admin);
`cli` (a client program), `vic` (a viewer) and `gw` (an HTTP gateway, in `auth.gateways`; `tina`
is bound to tenant `acme` in `auth.tenants`). `connect(name)` opens a raw nats-py client with an
identity's credentials (None: none at all); `client(name)` a `ClawClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client as NatsClient

from cli.credentials import issue, prepare_server
from common.config import ClawConfig
from common.identity import read_credentials
from common.skills import Risk
from common.verbs import Role
from communication import http_tokens
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions
from communication.subjects import Subjects
from coordinator.service import Coordinator
from gateway.server import open_key_store
from tests.conftest import make_config
from tests.helpers import eventually, running_coordinator, running_worker
from worker.context import TaskContext
from worker.skills import Skill, builtin_registry

PREFIX = "claw"
IDENTITIES: dict[str, tuple[list[str], str | None]] = {
    "coordinator": (["coordinator"], None),
    "w1": (["worker"], "w1"),
    "w2": (["worker"], "w2"),
    "alice": (["submitter"], None),
    "bob": (["approver", "submitter"], None),
    "carol": (["approver", "submitter"], None),
    "oscar": (["operator"], None),
    "adam": (["admin"], None),
    "cli": (["client"], None),
    "vic": (["viewer"], None),
    "w3": (["worker"], "w3"),
    # An HTTP gateway's own credentials (listed in auth.gateways): it may act for people.
    "gw": (["gateway"], None),
}
# Workers bound to a skill set (`claw creds create --skills`): w3 may pull echo's tasks only.
SKILL_SETS: dict[str, list[str]] = {"w3": ["echo"]}
# Who may not touch the bus beyond the API: every role but the coordinator's, and no credentials.
NOT_COORDINATOR = ["w2", "alice", "cli", "vic", None]


@dataclass
class SecuredCluster:
    """The running cluster and what the probes need to check that nothing happened."""

    server: EmbeddedNatsServer
    auth_dir: Path
    tmp_path: Path
    coordinator: Coordinator
    ran: list[str] = field(default_factory=list)
    subjects: Subjects = field(default_factory=lambda: Subjects(PREFIX))

    def creds(self, name: str) -> Path:
        """The credentials file of an identity."""
        return self.auth_dir / f"{name}.creds"

    def config(self, name: str | None, **sections: Any) -> ClawConfig:
        """A config connecting as `name` (None: without credentials)."""
        config = make_config(self.server, PREFIX, self.tmp_path, **sections)
        nats_ = msgspec.structs.replace(
            config.nats,
            creds_file=None if name is None else str(self.creds(name)),
            request_timeout_s=3.0,
        )
        return msgspec.structs.replace(config, nats=nats_)

    @contextlib.asynccontextmanager
    async def connect(self, name: str | None) -> AsyncIterator[NatsClient]:
        """A raw nats-py connection as `name`, its async errors kept in `nc.errors`."""
        errors: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        options: dict[str, Any] = {"servers": [self.server.client_url], "error_cb": on_error,
                                   "max_reconnect_attempts": 0, "allow_reconnect": False}  # fmt: skip
        if name is not None:
            creds = read_credentials(self.creds(name))
            options |= {"nkeys_seed_str": creds.seed, "inbox_prefix": Subjects.inbox_prefix(creds.identity)}
        nc = NatsClient()
        try:
            await nc.connect(**options)
        except BaseException:
            await nc.close()  # a refused login leaves its socket open
            raise
        nc.errors = errors  # type: ignore[attr-defined]
        try:
            yield nc
        finally:
            await nc.close()

    @contextlib.asynccontextmanager
    async def client(self, name: str) -> AsyncIterator[ClawClient]:
        """A `ClawClient` with `name`'s credentials."""
        client = await ClawClient.connect(self.config(name).nats)
        try:
            yield client
        finally:
            await client.close()

    async def http_key(self, name: str, roles: list[Role], tenant: str | None = None) -> str:
        """An HTTP API key for `name`, made by the admin `adam` (as `claw gateway key create` does)."""
        async with self.client("adam") as admin:
            store = await open_key_store(admin.conn, self.config("adam"))
            return (await store.create(name, roles, tenant))[1]

    async def http_token(self, name: str, roles: list[Role], tenant: str | None = None, ttl_s: float = 3600) -> str:
        """A signed HTTP token for `name`, issued by the admin `adam` (as `claw creds create --http` does)."""
        private = http_tokens.signing_key(self.auth_dir)
        public = http_tokens.public_key_of(private)
        async with self.client("adam") as admin:
            store = await open_key_store(admin.conn, self.config("adam"))
            await store.publish_public_key(public)
            record = http_tokens.new_record(name, roles, tenant, ttl_s, public.kid)
            await store.add_token(record)
        return http_tokens.sign(private, record, PREFIX)

    async def revoke_http(self, name: str) -> int:
        """Revoke `name`'s HTTP keys and tokens, as the admin `adam`; how many."""
        async with self.client("adam") as admin:
            store = await open_key_store(admin.conn, self.config("adam"))
            return await store.revoke(name) + await store.revoke_tokens(name)

    def server_log(self) -> str:
        """What nats-server logged (its permission refusals among it)."""
        return self.server.log_file.read_text(errors="replace")

    def violations(self, kind: str, subject_part: str) -> list[str]:
        """The server's refusals of `kind` (Publish, Subscription) on a subject containing `subject_part`."""
        return [
            line
            for line in self.server_log().splitlines()
            if f"{kind} Violation - Subject" in line and subject_part in line
        ]

    def submitter_of(self, task_id: str) -> str | None:
        """Who the database says submitted a task."""
        import sqlite3

        db = sqlite3.connect(self.tmp_path / "claw.db")
        try:
            row = db.execute("SELECT submitter FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            return None if row is None else str(row[0])
        finally:
            db.close()

    def db_counts(self) -> tuple[int, int]:
        """(tasks, events) rows in the coordinator's database."""
        import sqlite3

        db = sqlite3.connect(self.tmp_path / "claw.db")
        try:
            return (
                db.execute("SELECT count(*) FROM tasks").fetchone()[0],
                db.execute("SELECT count(*) FROM events").fetchone()[0],
            )
        finally:
            db.close()


def probe_registry(ran: list[str], config: ClawConfig | None = None) -> Any:
    """The built-in skills and `probe.destroy` (destructive: the guard wants two approvals), whose every
    run is recorded in `ran`, plus `probe.wait`, which runs until cancelled."""
    registry = builtin_registry(config)

    async def destroy(ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
        ran.append(ctx.task_id)
        return {"destroyed": input.get("what")}

    async def wait(ctx: TaskContext, input: dict[str, Any]) -> None:
        ran.append(ctx.task_id)
        await asyncio.sleep(float(input.get("seconds", 60)))

    registry.register(Skill("probe.destroy", destroy, risk=Risk.DESTRUCTIVE))
    registry.register(Skill("probe.wait", wait, risk=Risk.READ_ONLY))
    return registry


@contextlib.asynccontextmanager
async def secured_cluster(tmp_path: Path, tools: dict[str, Any] | None = None) -> AsyncIterator[SecuredCluster]:
    """Start the cluster (its own nats-server with authentication); stop everything on exit. `tools`:
    the worker's tool settings (an LLM API to call, say)."""
    auth_dir = tmp_path / "auth"
    prepare_server(auth_dir)
    for name, (roles, node_id) in IDENTITIES.items():
        issue(auth_dir, name=name, roles=roles, out=auth_dir / f"{name}.creds", prefix=PREFIX, node_id=node_id,
              reload=False, skills=SKILL_SETS.get(name))  # fmt: skip
    prepare_server(auth_dir)
    options = NatsServerOptions(store_dir=tmp_path / "nats", port=0, http_port=0, auth_dir=auth_dir)
    server = await EmbeddedNatsServer(options).start_async()
    ran: list[str] = []
    try:
        base = SecuredCluster(server, auth_dir, tmp_path, coordinator=None)  # type: ignore[arg-type]
        coordinator_config = base.config(
            "coordinator", auth={"dir": str(auth_dir), "gateways": ["gw"], "tenants": {"tina": "acme"}}
        )
        worker_sections: dict[str, Any] = {"worker": {"node_id": "w1", "heartbeat_interval_s": 0.2}}
        if tools is not None:
            worker_sections["tools"] = tools
        worker_config = base.config("w1", **worker_sections)
        async with (
            running_coordinator(coordinator_config) as coordinator,
            running_worker(worker_config, skills=probe_registry(ran, worker_config if tools is not None else None)),
        ):
            cluster = SecuredCluster(server, auth_dir, tmp_path, coordinator, ran)
            async with cluster.client("adam") as admin:

                async def w1_online() -> bool:
                    return any(n.node_id == "w1" and n.status.value == "online" for n in await admin.nodes())

                await eventually(w1_online, timeout_s=30, interval_s=0.1, what="w1 online")
            yield cluster
    finally:
        await asyncio.to_thread(server.stop)
