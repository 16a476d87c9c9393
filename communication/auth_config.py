"""The nats-server side of authentication: per-role permissions generated from the identity registry.

Every identity connects with its NKey (a signature over the server's nonce; no password travels) and
gets an allow-list of subjects (anything not listed is refused, and the server logs the refusal):

- coordinator: publishes and subscribes to everything.
- worker (node N): publishes events (poison reports among them), heartbeats and claims under N, pulls
  and acks of its skills' task consumers (every skill's unless its credentials name a skill set), its
  own node key, flow control's permit verbs under its identity and the response cache bucket (never
  the DLQ: the coordinator writes every letter), and reads of the node controls, skill registry and
  skill code; subscribes to its inbox, wake-ups, cancellations and N's control subject.
- client: publishes API requests and (holding submitter) schedule triggers under its own identity;
  subscribes to its inbox and task state changes. One holding the admin role also uploads skill
  packages to the skill code store (`claw skills install`) and writes the HTTP credentials bucket
  (`claw gateway key ...`, `claw creds ... --http`: API keys, token records, the token public key).
- gateway: a client that also reads (never writes) the HTTP credentials bucket, reads and writes its
  session secret's bucket, and follows the task feed. Its requests name the person it acts for and
  carry their credential, which the coordinator checks (coordinator/acting_proof.py): a stolen
  gateway credential can neither mint a credential nor act for someone without theirs.
- viewer: as a client, but only the read-only API verbs.

Only the coordinator can publish tasks, read events (which carry inputs and results), write any KV
bucket but a worker's own node key, or touch the audit bucket (also denied explicitly to every other
role). Replies reach an identity under its own inbox prefix (`_INBOX_<identity>`), which only it may
subscribe to.

The server reads `<auth dir>/nats-server.conf`; `claw creds create|revoke` rewrite it and signal the
server (SIGHUP) to reload, so new credentials work at once and revoked ones are cut off at once.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import nkeys

from common.config import TlsSettings
from common.errors import CredentialsError
from common.flow import cooldown_subject
from common.identity import BusRole, write_private
from common.log import get_logger
from common.states import PRIORITIES
from common.verbs import ALL, Role
from communication.auth_registry import IdentityRecord, IdentityRegistry
from communication.subjects import Subjects

log = get_logger("communication.auth")

SERVER_CONFIG = "nats-server.conf"
SERVER_STATE = "server.json"
SERVER_TLS = "server-tls.json"
RELOAD_TIMEOUT_S = 10.0


class ServerState(msgspec.Struct, frozen=True, kw_only=True):
    """Where the running nats-server of an auth folder is: for `claw creds` to make it reload."""

    pid: int
    monitor_url: str


def server_config_path(auth_dir: str | Path) -> Path:
    """The nats-server config file of an auth folder."""
    return Path(auth_dir) / SERVER_CONFIG


def permissions(record: IdentityRecord, prefix: str) -> dict[str, Any]:
    """The nats-server permissions of one identity."""
    s = Subjects(prefix)
    role = record.bus_role
    if role == BusRole.COORDINATOR:
        return {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}
    inbox = f"{s.inbox_prefix(record.name)}.>"
    deny = _coordinator_only(s)
    if role == BusRole.WORKER:
        node = record.node_id or record.name
        # Its reports and reads, and flow control's permits for its handlers' calls (the verbs of
        # the worker role, under its own identity).
        permits = [s.api(record.name, v.name) for v in ALL if v.role == Role.WORKER]
        return {
            "publish": {"allow": [*permits, *_worker_publish(s, node, record.skills)], "deny": deny},
            # Its inbox, wake-ups (of its skills), cancellations, its control subject and flow
            # control's cooldowns.
            "subscribe": {
                "allow": [inbox, *_wakes(s, record.skills), s.cancel_all, s.ctl(node), cooldown_subject(prefix)],
                "deny": deny,
            },
            # A worker answers control requests sent to it (once per request).
            "allow_responses": True,
        }
    if role == BusRole.VIEWER:
        publish = [s.api(record.name, v.name) for v in ALL if v.role == Role.VIEWER]
    else:
        publish = [s.api_of(record.name)]
    subscribe = [inbox, s.updates_all]
    api_roles = record.api_roles
    if Role.SUBMITTER in api_roles:
        # Event triggers of schedules (docs/Scheduling.md): whoever may submit may raise one, under
        # its own identity (the coordinator checks that identity may fire each schedule).
        publish.append(s.triggers_of(record.name))
    if role == BusRole.GATEWAY:
        # It reads the HTTP credentials (a gateway that could write them could mint its own), keeps
        # the session secret in its own bucket (the coordinator creates both buckets), and follows
        # the feed of committed changes for its live views.
        publish += _bucket_access(f"KV_{s.gateway_keys_bucket}")
        publish += _bucket_access(f"KV_{s.gateway_sessions_bucket}", f"$KV.{s.gateway_sessions_bucket}.>")
        subscribe.append(s.feed_all)
    elif Role.ADMIN in api_roles:
        # `claw gateway key create|revoke|list` and `claw creds ... --http` edit the credentials bucket.
        publish += _bucket_access(f"KV_{s.gateway_keys_bucket}", f"$KV.{s.gateway_keys_bucket}.>")
    if Role.ADMIN in api_roles:
        # `claw skills install` uploads the package to the skill code store itself (it is larger
        # than one request may be); the coordinator checks its checksum before registering it.
        code = f"OBJ_{s.skill_code_bucket}"
        publish += [f"$O.{s.skill_code_bucket}.>", "$JS.API.INFO", f"$JS.API.STREAM.INFO.{code}",
                    f"$JS.API.STREAM.MSG.GET.{code}", f"$JS.API.DIRECT.GET.{code}.>",
                    f"$JS.API.STREAM.PURGE.{code}"]  # fmt: skip
        deny = [d for d in deny if not d.startswith(f"$O.{s.skill_code_bucket}")]
    return {"publish": {"allow": publish, "deny": deny}, "subscribe": {"allow": subscribe, "deny": deny}}


def _bucket_access(stream: str, writes: str | None = None) -> list[str]:
    """Reading one KV bucket (and writing it, given its `writes` subjects): the JetStream API calls
    nats-py's KeyValue makes, scoped to that bucket's stream. Never creating it: the coordinator does."""
    api = "$JS.API"
    allowed = [
        *([] if writes is None else [writes]),
        f"{api}.INFO",
        f"{api}.STREAM.INFO.{stream}",
        f"{api}.STREAM.MSG.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}.>",
        f"{api}.CONSUMER.CREATE.{stream}",
        f"{api}.CONSUMER.CREATE.{stream}.>",
        f"{api}.CONSUMER.INFO.{stream}.>",
        f"{api}.CONSUMER.DELETE.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]
    return allowed


def _wakes(s: Subjects, skills: list[str] | None) -> list[str]:
    """The wake-ups a worker may hear: its skills' (every skill's when it is bound to none)."""
    return [f"{s.prefix}.wake.*"] if skills is None else [s.wake(skill) for skill in skills]


def _task_consumers(s: Subjects, skills: list[str] | None) -> list[str]:
    """The JetStream API calls and acks a worker makes on the task consumers it may pull: with a skill
    set, only those skills' consumers (one per priority; a consumer's name is one token, so each is
    listed); without one, every consumer of the tasks stream."""
    tasks, api = s.tasks_stream, "$JS.API"
    if skills is None:
        return [
            f"$JS.ACK.{tasks}.>",
            f"{api}.CONSUMER.INFO.{tasks}.*",
            f"{api}.CONSUMER.DURABLE.CREATE.{tasks}.*",
            f"{api}.CONSUMER.CREATE.{tasks}.>",
            f"{api}.CONSUMER.MSG.NEXT.{tasks}.*",
        ]
    allowed: list[str] = []
    for skill in skills:
        for priority in PRIORITIES:
            consumer = s.task_consumer(skill, priority)
            allowed += [
                f"$JS.ACK.{tasks}.{consumer}.>",
                f"{api}.CONSUMER.INFO.{tasks}.{consumer}",
                # Only the create that names the consumer's own filter subject in the API subject: the
                # server checks the config against it. A create without it (DURABLE.CREATE, or CREATE
                # with no filter token) carries any filter in its body, and would let the worker point
                # its own consumer at another skill's tasks and pull them.
                f"{api}.CONSUMER.CREATE.{tasks}.{consumer}.{s.task(priority, skill)}",
                f"{api}.CONSUMER.MSG.NEXT.{tasks}.{consumer}",
            ]
    return allowed


def _worker_publish(s: Subjects, node: str, skill_set: list[str] | None = None) -> list[str]:
    """What a worker may publish: its own reports, acks of its deliveries, and reads it needs."""
    tasks, api = s.tasks_stream, "$JS.API"
    nodes, control, skills = f"KV_{s.nodes_bucket}", f"KV_{s.node_control_bucket}", f"KV_{s.skills_bucket}"
    code = f"OBJ_{s.skill_code_bucket}"
    readable = (nodes, control, skills, code)
    cache = f"{s.prefix}_flow_cache"  # flow control's response cache (communication/response_cache.py)
    return [
        # Read only: a worker that could write would put made-up answers under keys it computed; the
        # worker that made the real call reports the answer and the coordinator writes it (`cache_put`).
        f"{api}.STREAM.INFO.KV_{cache}",
        f"{api}.STREAM.MSG.GET.KV_{cache}",
        f"{api}.DIRECT.GET.KV_{cache}.>",
        s.events_of_node(node),
        s.heartbeat(node),
        s.claims(node),
        *_task_consumers(s, skill_set),
        f"$KV.{s.nodes_bucket}.{node}",
        f"{api}.INFO",
        f"{api}.STREAM.NAMES",  # nats-py looks a stream up by subject before reading an object
        *(f"{api}.STREAM.INFO.{name}" for name in (tasks, s.events_stream, s.dlq_stream, *readable)),
        f"{api}.DIRECT.GET.{nodes}.$KV.{s.nodes_bucket}.{node}",
        *(f"{api}.DIRECT.GET.{name}.>" for name in (control, skills, code)),
        *(f"{api}.STREAM.MSG.GET.{name}" for name in readable),
        *(f"{api}.CONSUMER.CREATE.{name}.>" for name in (control, skills, code)),
        *(f"{api}.CONSUMER.CREATE.{name}" for name in (control, skills, code)),
        *(f"{api}.CONSUMER.DELETE.{name}.>" for name in (control, skills, code)),
    ]


def _coordinator_only(s: Subjects) -> list[str]:
    """Subjects no role but the coordinator's may touch, denied explicitly (a deny wins over any allow):
    the audit bucket, and writes to the skill registry and skill code."""
    audit = f"KV_{s.audit_bucket}"
    return [
        f"$KV.{s.audit_bucket}.>",
        f"$JS.API.STREAM.*.{audit}",
        f"$JS.API.STREAM.MSG.*.{audit}",
        f"$JS.API.CONSUMER.*.{audit}",
        f"$JS.API.CONSUMER.*.{audit}.>",
        f"$JS.API.DIRECT.GET.{audit}.>",
        f"$KV.{s.skills_bucket}.>",
        f"$O.{s.skill_code_bucket}.>",
    ]


def render_server_config(registry: IdentityRegistry, tls: TlsSettings | None = None) -> str:
    """The nats-server config: one user per identity (its NKey and permissions), TLS when set."""
    users = [{"nkey": r.public_key, "permissions": permissions(r, r.prefix)} for r in registry.all()]
    # nats-server reads an empty user list as "no authentication": with no identity issued yet (or
    # the last one revoked) it would be open to anyone. A user whose seed nobody has, allowed
    # nothing, keeps authentication on.
    users.append({"nkey": _nobody(), "permissions": {"publish": {"deny": [">"]}, "subscribe": {"deny": [">"]}}})
    lines = [
        "# Generated by `claw creds` from identities.json: edits are overwritten.",
        f"authorization: {json.dumps({'users': users}, indent=2)}",
    ]
    if tls is not None and tls.cert:
        block: dict[str, Any] = {"cert_file": tls.cert, "key_file": tls.key}
        if tls.ca:
            block["ca_file"] = tls.ca
        block["verify"] = tls.verify
        lines.append(f"tls: {json.dumps(block, indent=2)}")
    return "\n".join(lines) + "\n"


def _nobody() -> str:
    """The public key of a fresh NKey pair whose seed is thrown away."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return str(nkeys.from_seed(bytearray(seed)).public_key.decode())


def write_server_config(auth_dir: str | Path, registry: IdentityRegistry, tls: TlsSettings | None = None) -> Path:
    """Write the server config of `auth_dir` (0600) and return its path."""
    path = server_config_path(auth_dir)
    write_private(path, render_server_config(registry, tls))
    return path


def save_server_tls(auth_dir: str | Path, tls: TlsSettings | None) -> None:
    """Remember the server's TLS settings, so regenerating its config keeps them."""
    path = Path(auth_dir) / SERVER_TLS
    if tls is None or not tls.cert:
        path.unlink(missing_ok=True)
        return
    write_private(path, msgspec.json.encode(tls).decode())


def load_server_tls(auth_dir: str | Path) -> TlsSettings | None:
    """The TLS settings the server of `auth_dir` was started with (None: plain TCP)."""
    try:
        return msgspec.json.decode(Path(auth_dir, SERVER_TLS).read_bytes(), type=TlsSettings)
    except (OSError, msgspec.DecodeError):
        return None


def record_server(auth_dir: str | Path, pid: int, monitor_url: str) -> None:
    """Note that a nats-server runs on this auth folder (for `claw creds` to reload it). Several may
    (`claw up --nats-nodes 3` shares one folder): each is kept while it runs."""
    servers = [s for s in _recorded(auth_dir) if s.pid != pid and _is_our_server(s.pid, auth_dir)]
    servers.append(ServerState(pid=pid, monitor_url=monitor_url))
    write_private(Path(auth_dir) / SERVER_STATE, msgspec.json.encode(servers).decode())


def _recorded(auth_dir: str | Path) -> list[ServerState]:
    raw = b""
    try:
        raw = Path(auth_dir, SERVER_STATE).read_bytes()
        return msgspec.json.decode(raw, type=list[ServerState])
    except (OSError, msgspec.DecodeError):
        try:
            return [msgspec.json.decode(raw, type=ServerState)]  # written by an older version: one server
        except msgspec.DecodeError:
            return []


def reload_server(auth_dir: str | Path, timeout_s: float = RELOAD_TIMEOUT_S) -> bool:
    """Make the nats-servers of `auth_dir` read their config again; False when none runs here.

    Waits until each says it loaded the new config (`/varz` config_load_time moves), so a command
    that returns has credentials that work and revocations that hold.
    """
    # Only a server started with this folder's config gets the signal (a stale pid may be anyone's).
    servers = [s for s in _recorded(auth_dir) if _is_our_server(s.pid, auth_dir)]
    if not servers:
        return False  # not here (another machine or container), or gone: it reads the config at start
    reloaded = False
    for state in servers:
        reloaded = _reload_one(state, timeout_s) or reloaded
    return reloaded


def _reload_one(state: ServerState, timeout_s: float) -> bool:
    before = _config_load_time(state.monitor_url)
    try:
        os.kill(state.pid, signal.SIGHUP)
    except ProcessLookupError:
        return False
    except PermissionError as exc:
        raise CredentialsError(f"cannot signal nats-server (pid {state.pid}) to reload: {exc}") from None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = _config_load_time(state.monitor_url)
        if now is not None and now != before:
            log.info("auth.server_reloaded", pid=state.pid)
            return True
        time.sleep(0.05)
    raise CredentialsError(
        f"nats-server (pid {state.pid}) did not reload its config within {timeout_s:g} s; see its log"
    )


def _is_our_server(pid: int, auth_dir: str | Path) -> bool:
    """Whether `pid` is a nats-server on this machine started with this folder's config."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    if not any("nats-server" in a for a in argv) or "-c" not in argv[:-1]:
        return False
    config = cwd / argv[argv.index("-c") + 1]  # relative to the server's own directory
    return config.resolve() == server_config_path(auth_dir).resolve()


def _config_load_time(monitor_url: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{monitor_url}/varz", timeout=2) as r:  # noqa: S310 - our own server
            return str(json.loads(r.read()).get("config_load_time"))
    except (urllib.error.URLError, OSError, ValueError):
        return None
