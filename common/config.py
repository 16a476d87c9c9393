"""Configuration: typed msgspec Structs loaded from YAML, then environment, then CLI flags.

Each process reads one `ClawConfig`; its sections (`nats`, `jetstream`, `coordinator`, `worker`,
`log`) are shared by every process so that one file can describe a whole deployment. Precedence, lowest
first: defaults, the YAML file, `CLAW_<SECTION>_<FIELD>` environment variables (for example
`CLAW_WORKER_CONCURRENCY=4`, `CLAW_NATS_URL=nats://host:4222`), and CLI flags. Unknown keys are
refused (a typo must not silently fall back to a default) and every error names the key and where
it came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin

import msgspec
import yaml

from common.errors import ConfigError
from common.flow import Limit, Price

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PREFIX_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
# JetStream's fsync interval: "always", or a duration nats-server reads (100ms, 10s, 2m, 1h).
SYNC_INTERVAL_PATTERN = r"^(always|[0-9]+(\.[0-9]+)?(ms|s|m|h))$"
ENV_PREFIX = "CLAW_"
CONFIG_PATH_ENV = "CLAW_CONFIG"


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Base of config sections: typed, immutable, and strict about unknown keys."""


class TlsSettings(_Section, frozen=True):
    """TLS to NATS (docs/Security.md). A client: `ca` to trust the server (and `cert`/`key` when the
    server verifies clients). The embedded server (`claw up`, `claw nats start`): `cert`/`key` are
    its own, `ca` the authority its clients' certificates must come from when `verify`."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    # The server asks every client for a certificate signed by `ca` (mutual TLS).
    verify: bool = False


class NatsSettings(_Section, frozen=True):
    """How to reach NATS, and the prefix every subject, stream and bucket name derives from."""

    url: str = "nats://127.0.0.1:4222"
    prefix: Annotated[str, msgspec.Meta(pattern=PREFIX_PATTERN)] = "claw"
    # The nats-server monitoring endpoint, read by `claw status`; unset means "not shown".
    monitor_url: str | None = None
    connect_timeout_s: PositiveFloat = 2.0
    # How long a long-running process keeps retrying its first connection (0: fail at once).
    connect_retry_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    # Short pings notice a half-open connection in seconds, not minutes (JETSTREAM.md).
    ping_interval_s: PositiveFloat = 5.0
    max_outstanding_pings: PositiveInt = 2
    reconnect_wait_s: PositiveFloat = 1.0
    request_timeout_s: PositiveFloat = 5.0
    # A process's start-up calls to NATS (streams, buckets, consumers, the skill store) retry with
    # backoff for this long, then the process stops saying what it waited for: a fresh replicated
    # cluster answers JetStream requests only once it has elected its leaders.
    startup_deadline_s: PositiveFloat = 60.0
    # Credentials: prefer the environment (CLAW_NATS_TOKEN, ...); they are never logged.
    user: str | None = None
    password: str | None = None
    token: str | None = None
    # An OpenClaw credentials file (`claw creds create`; also --creds, CLAW_CREDS): the identity, its
    # roles and NKey. Without one, `claw` uses <data dir>/auth/admin.creds of a local `claw up`.
    creds_file: str | None = None
    # The name to go by on a server WITHOUT authentication (default: the OS user), where anyone can
    # claim any name; with credentials the identity is theirs and this is ignored.
    identity: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")] | None = None
    # TLS (also CLAW_NATS_TLS_CA, CLAW_NATS_TLS_CERT, CLAW_NATS_TLS_KEY, CLAW_NATS_TLS_VERIFY).
    tls: TlsSettings | None = None


class JetStreamSettings(_Section, frozen=True):
    """Stream and consumer settings shared by every process that creates them."""

    # Copies of each stream and bucket: 0 (the default) makes 3 on a NATS cluster and 1 on a single
    # server, as the server a process connects to reports itself; a stream keeps the count it was made with.
    replicas: Annotated[int, msgspec.Meta(ge=0, le=5)] = 0
    ack_wait_s: PositiveFloat = 30.0
    # The coordinator's events consumer: redelivery delay of events a crashed coordinator held.
    events_ack_wait_s: PositiveFloat = 10.0
    max_ack_pending: PositiveInt = 20_000
    duplicate_window_s: PositiveFloat = 120.0
    events_max_age_s: PositiveFloat = 7 * 24 * 3600.0
    dlq_max_age_s: PositiveFloat = 30 * 24 * 3600.0
    # Backstop per (priority, skill) subject of the task stream, above coordinator.max_queued_per_skill.
    tasks_max_per_subject: PositiveInt = 100_000
    # How often the embedded nats-server (`claw up`, `claw nats start`; also --sync-interval) fsyncs
    # its store: unset keeps nats-server's default (2 min: acknowledged writes of that window can be
    # lost when the OS crashes or the power fails); "always" fsyncs each write before acknowledging
    # it, at a throughput cost measured in docs/Performance.md ("JetStream sync interval").
    sync_interval: Annotated[str, msgspec.Meta(pattern=SYNC_INTERVAL_PATTERN)] | None = None


class CoordinatorSettings(_Section, frozen=True):
    """The coordinator process."""

    db_path: str = ".claw/claw.db"
    node_id: str | None = None
    # A node is offline after this many heartbeat intervals without a beat.
    offline_after_missed_beats: PositiveInt = 3
    default_timeout_s: PositiveFloat = 300.0
    default_max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    # Backoff between attempts (a task's own `backoff` overrides): base * factor^(n-1), capped, +-jitter.
    retry_base_s: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    retry_factor: Annotated[float, msgspec.Meta(ge=1)] = 2.0
    retry_max_s: Annotated[float, msgspec.Meta(ge=0)] = 300.0
    retry_jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.2
    # Tasks waiting (pending, queued or retrying) per skill; a submit beyond is refused: "queue full".
    max_queued_per_skill: PositiveInt = 10_000
    # A task whose attempts are exhausted (or that failed permanently) goes to the DLQ and ends
    # `dead`; with false it ends `failed` and nothing is dead-lettered.
    dead_letter: bool = True
    # NAK the in-flight tasks of a node declared offline, so they run elsewhere at once.
    reclaim_on_node_loss: bool = True
    # The guard policy file (config/guard.yaml); unset: the default policy.
    guard_policy: str | None = None
    # A task waiting for approval longer than this ends `rejected`.
    approval_ttl_s: PositiveFloat = 24 * 3600.0
    # Tasks held for approval, all skills together; a submit that would hold more is refused.
    max_waiting_approval: PositiveInt = 1000
    # The environment variable holding the key that makes the event log's hashes HMACs.
    audit_key_env: str = "CLAW_AUDIT_KEY"
    max_input_bytes: PositiveInt = 1024 * 1024
    # How deep a task's input may nest arrays and objects; deeper is refused at submit (the JSON
    # decoders of coordinator and workers recurse: thousands of levels would overflow them).
    max_input_depth: Annotated[int, msgspec.Meta(ge=1, le=512)] = 64
    # A task id a client chose (a ULID) may be dated at most this far ahead of the coordinator's
    # clock: ids sort by time, and a far-future one would head every task list for ever.
    task_id_max_future_s: Annotated[float, msgspec.Meta(ge=0)] = 300.0
    max_tasks_per_request: PositiveInt = 10_000
    submit_batch_max: PositiveInt = 512
    event_batch_max: PositiveInt = 512
    # Events that cannot be decoded or folded are kept in the quarantine table: the newest this many.
    quarantine_max_rows: PositiveInt = 10_000
    # One coordinator per prefix: it holds a lease in the KV bucket <prefix>_coordinator, renewed
    # every lease_renew_interval_s. A second coordinator refuses to start while the lease is renewed;
    # a killed one's lease lapses lease_ttl_s after its last renewal (a clean stop releases it at
    # once), and a coordinator that could not renew for lease_ttl_s stops writing (docs/Reliability.md).
    # 4 s makes a standby take over within 5 s (the lease's rest, plus catch-up and start); renewing
    # every second keeps three renewals inside one TTL, so a slow or missed one costs no write.
    lease_ttl_s: Annotated[float, msgspec.Meta(ge=2, le=600)] = 4.0
    lease_renew_interval_s: Annotated[float, msgspec.Meta(ge=0.1, le=120)] = 1.0
    # "normal" survives a process crash (like JetStream's default sync); "full" also an OS crash.
    sqlite_synchronous: Literal["normal", "full"] = "normal"
    # The state database is checked before the coordinator serves: "quick" (PRAGMA quick_check,
    # seconds on a large file), "full" (integrity_check: also indexes against tables; `claw
    # coordinator start --check-db`), or "off". A damaged file stops the start with the way out.
    db_check: Literal["quick", "full", "off"] = "quick"
    # Scheduled backups (storage/backup.py, docs/RUNBOOK.md "Backups"): every backup_interval_s a
    # folder claw-backup-<UTC time> under backup_dir, keeping the newest backup_keep; unset: none.
    backup_dir: str | None = None
    backup_interval_s: Annotated[float, msgspec.Meta(ge=60)] = 24 * 3600.0
    backup_keep: PositiveInt = 7
    # A standby coordinator (docs/Reliability.md "A standby coordinator"): with replication on, every
    # commit is shipped to the stream <PREFIX>_REPL before anyone is answered, a snapshot of the
    # database goes to the object store <prefix>_repl every replication_snapshot_interval_s, and a
    # second `claw coordinator start` stands by, applying the stream, until the lease lapses. The
    # stream keeps replication_max_age_s of commits: far more than one snapshot interval.
    replication: bool = False
    replication_snapshot_interval_s: Annotated[float, msgspec.Meta(ge=10)] = 600.0
    replication_max_age_s: Annotated[float, msgspec.Meta(ge=600)] = 24 * 3600.0
    # While the state database refuses writes (a full disk), a submit is stored or refused within
    # this long of its arrival, never stored later: keep it below the clients'
    # nats.request_timeout_s (5 s), so no client is told "no answer" about a task that then runs.
    submit_answer_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 4.0
    # Tasks persisted but not confirmed published for this long are published again (same msg id).
    republish_after_s: PositiveFloat = 5.0
    # Prometheus text at http://<metrics_host>:<metrics_port>/metrics; unset: not served. 0 picks a
    # free port (logged as `metrics.serving`, and reported by `claw status`).
    metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None
    metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped from other machines; set 127.0.0.1 to keep it local
    # How often the gauges (queue depth, DLQ size, nodes, tasks by state) are read and set.
    metrics_refresh_s: PositiveFloat = 5.0
    # Alerts over the last `alert_window_s` of finished tasks, judged every `alert_interval_s` once
    # at least `alert_min_tasks` finished: completion (succeeded / finished) below the minimum,
    # failure ((failed + dead) / finished) above the maximum. A rate equal to its threshold is fine.
    alert_min_completion: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.8
    alert_max_failure: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.2
    alert_window_s: PositiveFloat = 3600.0
    alert_min_tasks: PositiveInt = 10
    alert_interval_s: PositiveFloat = 10.0
    # A heartbeat announcing a shorter interval is refused: the offline sweep trusts the interval,
    # and a tiny one would let a forged beat declare a live node offline.
    min_heartbeat_interval_s: PositiveFloat = 0.1


class WorkerSettings(_Section, frozen=True):
    """A worker process."""

    node_id: str | None = None
    # Skills to run; empty means every skill this worker can load.
    skills: list[str] = []
    concurrency: PositiveInt = 8
    labels: dict[str, str] = {}
    heartbeat_interval_s: PositiveFloat = 1.0
    shutdown_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    # How often a worker looks for redelivered tasks that no wake-up announced (a task whose worker
    # died without the coordinator noticing comes back after the ack wait; this finds it).
    idle_poll_interval_s: PositiveFloat = 2.0
    # Where installed skills' files are unpacked.
    skill_cache_dir: str = ".claw/skill-cache"
    fetch_batch_max: PositiveInt = 256
    # A task's `started` event is sent only once it has run this long (or reported progress): a
    # shorter task reports its outcome alone, which carries its start, and the cluster saves one
    # event per task. 0: always at once.
    started_event_delay_s: Annotated[float, msgspec.Meta(ge=0)] = 0.05
    # Priorities that cannot starve: while higher work waits too, a waiting normal task gets one start
    # in this many, a waiting low task one in `low_share_every` (docs/Flow_control.md, "Priorities").
    normal_share_every: Annotated[int, msgspec.Meta(ge=2)] = 5
    low_share_every: Annotated[int, msgspec.Meta(ge=2)] = 10


class ToolSettings(_Section, frozen=True):
    """Limits of the agent tool skills (fs.*, shell.exec, python.exec, http.request, llm.chat) and
    of the processes of `command:` skills (docs/Tool_skills.md says which guarantee holds where)."""

    # fs.* skills work inside <sandbox_root>/<workspace>; a task names its workspace or gets its own.
    sandbox_root: str = ".claw/sandboxes"
    # The user (name, or uid:gid) that tool processes run as when the worker runs as root; never root.
    sandbox_user: str = "nobody"
    # bubblewrap namespaces for tool processes: auto (when bwrap works here), require (refuse to
    # run without), off.
    sandbox_bwrap: Literal["auto", "require", "off"] = "auto"
    # Inside bwrap, whether tool processes share the worker's network (false: loopback of their own only).
    sandbox_network: bool = False
    # More read-only paths visible inside bwrap (the system's /usr, /etc basics and Python always are).
    sandbox_ro_paths: list[str] = []
    # Limits on one tool call's whole process tree: a cgroup per call where the worker may make one,
    # else a watchdog that kills the tree over them.
    sandbox_cgroups: bool = True
    task_memory_mb: PositiveInt = 512
    task_max_processes: PositiveInt = 64
    sandbox_watch_interval_s: PositiveFloat = 0.25
    # A workspace may hold this much; one file (fs.write, or written by a process) at most write_max_bytes.
    workspace_max_bytes: PositiveInt = 1024 * 1024 * 1024
    write_max_bytes: PositiveInt = 100 * 1024 * 1024
    # The interpreter python.exec runs (unset: the worker's own).
    python_executable: str | None = None
    # Executables shell.exec may run (names looked up on PATH, or absolute paths); empty: none.
    shell_allow: list[str] = []
    output_max_bytes: PositiveInt = 1024 * 1024
    python_memory_mb: PositiveInt = 512
    python_cpu_s: PositiveInt = 60
    # Hosts http.request may call; empty: any.
    http_allow_hosts: list[str] = []
    # Loopback, link-local, private, CGNAT, multicast and unspecified addresses are refused to
    # http.request and llm.chat (by the resolved IP) unless listed here: CIDRs, IPs or host names.
    http_allow_private: list[str] = []
    http_max_redirects: Annotated[int, msgspec.Meta(ge=0, le=20)] = 5
    http_max_response_bytes: PositiveInt = 5 * 1024 * 1024
    http_timeout_s: PositiveFloat = 30.0
    llm_base_url: str = "https://api.openai.com/v1"
    llm_model: str = "gpt-4o-mini"
    # The API key is read from this environment variable, never from a file or the task.
    llm_api_key_env: str = "OPENAI_API_KEY"
    llm_extra_headers: dict[str, str] = {}
    llm_timeout_s: PositiveFloat = 120.0


class ArtifactSettings(_Section, frozen=True):
    """Where artifacts (large inputs and results, files skills produce) are stored."""

    backend: Literal["local", "minio"] = "local"
    # local: a folder (shared by all processes of `claw up`; use minio across machines).
    local_dir: str = ".claw/artifacts"
    # minio: any S3 API. Credentials come from the environment variables named here.
    endpoint: str = "127.0.0.1:9000"
    bucket: str = "claw-artifacts"
    region: str | None = None
    secure: bool = False
    access_key_env: str = "CLAW_S3_ACCESS_KEY"
    secret_key_env: str = "CLAW_S3_SECRET_KEY"  # noqa: S105 - the name of a variable, not a secret
    # Artifacts older than this are removed by the coordinator's cleanup job (0: kept for ever).
    default_ttl_s: Annotated[float, msgspec.Meta(ge=0)] = 7 * 24 * 3600.0
    # Inputs and results larger than this travel through the store, as references.
    inline_max_bytes: PositiveInt = 256 * 1024
    cleanup_interval_s: PositiveFloat = 60.0
    # An object no row references is deleted only once it is this old (a worker may be about to
    # record it): longer than the longest task.
    cleanup_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 24 * 3600.0
    # How often the whole store is listed for objects no row ever referenced (0: never).
    orphan_sweep_interval_s: Annotated[float, msgspec.Meta(ge=0)] = 3600.0


class TracingSettings(_Section, frozen=True):
    """OpenTelemetry tracing (docs/Monitoring.md); unset keys fall back to OTel's own variables."""

    # none | console | otlp | jsonl; unset: OTEL_TRACES_EXPORTER, else none.
    exporter: Literal["none", "console", "otlp", "jsonl"] | None = None
    # Where the jsonl exporter appends spans (or CLAW_TRACING_JSONL_PATH).
    jsonl_path: str | None = None
    sample_ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0


class AuthSettings(_Section, frozen=True):
    """Who may do what (docs/Security.md): the identity registry and the API roles of identities."""

    # The folder `claw creds` keeps the identity registry in (identities.json, 0600); the coordinator
    # reads each identity's roles there. `claw up` sets <data dir>/auth.
    dir: str | None = None
    # More API roles per identity (admin, operator, approver, submitter, viewer), added to the
    # registry's. On a server without authentication an identity listed here holds exactly these;
    # one not listed holds every role (anyone can claim any name there anyway).
    roles: dict[str, list[str]] = {}
    # Whether the submitter of a held task may approve it (claw up: true, for its single local admin).
    self_approval: bool = False
    # Identities that may act for the people they authenticated (the HTTP gateway, docs/Gateway.md):
    # a request of theirs naming a person (header Claw-Acting-For) and carrying the credential that
    # person presented (Claw-Acting-Credential, checked by the coordinator: coordinator/acting_proof.py)
    # is that person's, with their credential's roles (at most the gateway's) and tenant. On a server
    # without authentication any identity may (anyone can claim any name there anyway).
    gateways: list[str] = []
    # The tenant each identity submits for (docs/Security.md): its submits are that tenant's, and one
    # naming another tenant is refused. Added to the registry's (`claw creds create --tenant`); an
    # identity bound to none names its tenant in the request, as before.
    tenants: dict[str, str] = {}


class LogSettings(_Section, frozen=True):
    """Logging of every process."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    # auto: pretty on a terminal, JSON lines otherwise.
    format: Literal["auto", "json", "console"] = "auto"
    file: str | None = None


class TenantQuota(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One tenant's quotas and fair-share weight (unset: no limit)."""

    # Tasks waiting to run (pending, queued, retrying); a submit beyond is refused, nothing stored.
    max_queued: PositiveInt | None = None
    # Tasks dispatched and not finished; enforced by the fair-share dispatcher (needs fair_share).
    max_running: PositiveInt | None = None
    # Share of the starts under contention, relative to the other waiting tenants' weights.
    weight: PositiveFloat = 1.0


class TenantSettings(_Section, frozen=True):
    """Tenants: quotas per tenant and weighted fair share between them (docs/Flow_control.md)."""

    # Weighted fair queueing between tenants in the coordinator's dispatch: a tenant over its share
    # waits in the coordinator instead of in the queue. Off: tasks are published as they come.
    fair_share: bool = False
    # With fair_share: tasks per skill and priority published ahead of their start (the rest wait their turn).
    dispatch_ahead: PositiveInt = 64
    # Quotas of tenants not listed under `quotas`.
    default_quota: TenantQuota = TenantQuota()
    quotas: dict[str, TenantQuota] = {}

    def quota(self, tenant: str) -> TenantQuota:
        """The quota of `tenant` (its own, else `default_quota`)."""
        return self.quotas.get(tenant, self.default_quota)


class FlowSettings(_Section, frozen=True):
    """`flow:` in the config: limits applied at start, key templates, cooldowns, breaker, prices."""

    # Limits applied at start-up (`claw limits set` changes them at run time, kept in SQLite).
    limits: list[Limit] = []
    # Skill -> key templates over its input, e.g. {"my.agent": ["llm:{provider}:{model}"]}.
    skill_keys: dict[str, list[str]] = {}
    # How often waiting tasks are looked at again (room appears between two looks at most this late).
    gate_interval_s: Annotated[float, msgspec.Meta(gt=0, le=5)] = 0.05
    # A start keeps its place in a request window this much (plus 1 % of the window) longer than
    # the window: it is counted from when its worker started the task, and reaches the API a little
    # later, by a delay that varies with the worker's load.
    rate_margin_s: Annotated[float, msgspec.Meta(ge=0, le=60)] = 0.5
    # The longest cooldown a worker honours from a broadcast (a Retry-After beyond it is cut to it):
    # until the cooldown subject is bound to the coordinator, this bounds what a forged one can do.
    max_cooldown_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 300.0
    # A dropped connection (or a 429 without Retry-After) cools its key down for this long.
    cooldown_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 5.0
    # Consecutive failures (disconnect, timeout, server error, rate limit) that open a key's breaker.
    breaker_failures: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    # How long an open breaker stays open before one probe task is let through.
    breaker_open_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0
    # Skill -> seconds its answers are cached (the response cache, opt-in; llm.chat), e.g. {"llm.chat": 3600}.
    cache_ttl_s: dict[str, float] = {}
    # Model name -> price per million tokens, for usage's estimated cost.
    prices: dict[str, Price] = {}


class ClawConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The whole configuration of one process."""

    nats: NatsSettings = NatsSettings()
    jetstream: JetStreamSettings = JetStreamSettings()
    coordinator: CoordinatorSettings = CoordinatorSettings()
    worker: WorkerSettings = WorkerSettings()
    tools: ToolSettings = ToolSettings()
    artifacts: ArtifactSettings = ArtifactSettings()
    tracing: TracingSettings = TracingSettings()
    log: LogSettings = LogSettings()
    auth: AuthSettings = AuthSettings()
    tenants: TenantSettings = TenantSettings()
    flow: FlowSettings = FlowSettings()


SECTIONS: dict[str, type[_Section]] = {
    "nats": NatsSettings,
    "jetstream": JetStreamSettings,
    "coordinator": CoordinatorSettings,
    "worker": WorkerSettings,
    "tools": ToolSettings,
    "artifacts": ArtifactSettings,
    "tracing": TracingSettings,
    "log": LogSettings,
    "auth": AuthSettings,
    "tenants": TenantSettings,
    "flow": FlowSettings,
}
SECRET_KEYS = frozenset({"nats.password", "nats.token"})

Overrides = Mapping[str, Mapping[str, Any]]


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Overrides | None = None,
) -> ClawConfig:
    """Build the config from defaults, a YAML file, `CLAW_*` variables and flag overrides.

    `path` defaults to `$CLAW_CONFIG` when set. `overrides` maps section -> field -> value for the
    flags a user passed (None values are ignored, so unset flags can be passed through as they are).
    """
    env = os.environ if env is None else env
    path = path if path is not None else env.get(CONFIG_PATH_ENV)
    merged: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    if path:
        _merge(merged, sources, _read_yaml(Path(path)), f"config file {path}")
    _merge(merged, sources, _from_env(env), "environment")
    if overrides:
        flags = {s: {k: v for k, v in f.items() if v is not None} for s, f in overrides.items()}
        _merge(merged, sources, flags, "command line")
    try:
        return msgspec.convert(merged, ClawConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise _config_error(str(exc), sources) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(data).__name__}")
    for section, fields in data.items():
        if section not in SECTIONS:
            known = ", ".join(SECTIONS)
            raise ConfigError(f"config file {path}: unknown section '{section}' (known: {known})")
        if fields is not None and not isinstance(fields, dict):
            raise ConfigError(f"config file {path}: section '{section}' must be a mapping")
    return {section: fields or {} for section, fields in data.items()}


def _from_env(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Collect `CLAW_<SECTION>_<FIELD>` variables; a known section with an unknown field is an error."""
    found: dict[str, dict[str, Any]] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_PATH_ENV:
            continue
        section, _, field = name[len(ENV_PREFIX) :].lower().partition("_")
        cls = SECTIONS.get(section)
        if cls is None or not field:
            continue
        if section == "nats" and field.startswith("tls_"):
            # The one nested section: CLAW_NATS_TLS_<FIELD> sets nats.tls.<field>.
            tls_field = field.removeprefix("tls_")
            if tls_field not in {f.name for f in msgspec.structs.fields(TlsSettings)}:
                raise ConfigError(f"unknown environment setting {name} (known: CLAW_NATS_TLS_CA, _CERT, _KEY, _VERIFY)")
            found.setdefault("nats", {}).setdefault("tls", {})[tls_field] = raw
            continue
        types = {f.name: f.type for f in msgspec.structs.fields(cls)}
        if field not in types:
            known = ", ".join(f"{ENV_PREFIX}{section.upper()}_{f.upper()}" for f in types)
            raise ConfigError(f"unknown environment setting {name} (known for {section}: {known})")
        found.setdefault(section, {})[field] = _parse_env_value(name, raw, types[field])
    return found


def _parse_env_value(name: str, raw: str, field_type: Any) -> Any:
    """Lists are comma-separated, mappings are `k=v,k2=v2`; scalars are converted by msgspec."""
    origin = get_origin(field_type)
    if origin is list:
        return [item.strip() for item in raw.split(",") if item.strip()]
    if origin is dict:
        return parse_labels([item for item in raw.split(",") if item.strip()], source=name)
    return raw


def parse_labels(items: list[str], *, source: str = "--label") -> dict[str, str]:
    """Turn `["k=v", ...]` into a mapping, refusing items without `=`."""
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source}: '{item}' is not of the form key=value")
        labels[key.strip()] = value.strip()
    return labels


def _merge(
    into: dict[str, dict[str, Any]],
    sources: dict[str, str],
    layer: Mapping[str, Mapping[str, Any]],
    source: str,
) -> None:
    for section, fields in layer.items():
        target = into.setdefault(section, {})
        for key, value in fields.items():
            if key == "tls" and isinstance(value, dict) and isinstance(target.get(key), dict):
                value = target[key] | value  # CLAW_NATS_TLS_* add to the file's nats.tls
            target[key] = value
            sources[f"{section}.{key}"] = source


_PATH = re.compile(r" - at `\$\.(?P<path>[^`]+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`")


def _config_error(message: str, sources: dict[str, str]) -> ConfigError:
    """Rewrite msgspec's message to name the dotted key and where the bad value came from."""
    match = _PATH.search(message)
    path = match.group("path") if match else ""
    detail = _PATH.sub("", message)
    unknown = _UNKNOWN.match(detail)
    if unknown:
        key = f"{path}.{unknown.group('field')}" if path else unknown.group("field")
        known = ""
        cls = SECTIONS.get(path)
        if cls is not None:
            known = " (known: " + ", ".join(f.name for f in msgspec.structs.fields(cls)) + ")"
        return ConfigError(f"unknown config key '{key}' in {sources.get(key, 'config')}{known}")
    origin = sources.get(path, "config")
    return ConfigError(f"invalid config value for '{path}' from {origin}: {detail}")


def redacted(config: ClawConfig) -> dict[str, Any]:
    """The config as a mapping with secrets masked, fit for logs."""
    data: dict[str, Any] = msgspec.to_builtins(config)
    for key in SECRET_KEYS:
        section, field = key.split(".")
        if data[section].get(field):
            data[section][field] = "***"
    data["nats"]["url"] = redact_url(data["nats"]["url"])
    return data


def redact_url(url: str) -> str:
    """`nats://user:secret@host` -> `nats://user:***@host`; other URLs unchanged."""
    return re.sub(r"(//[^:/@]+:)[^@/]+@", r"\1***@", url)
