"""`claw up`: nats-server, a coordinator and N workers on this machine, kept running until Ctrl-C.

It starts, in order, the embedded nats-server, the coordinator and the workers (`cli.cluster`),
each a real process with its log in `<data-dir>/logs/`, and waits until the coordinator answers
and every worker has registered. A coordinator or worker that exits later is started again with a
backoff, and `claw up` says so (`cli.supervision`). Ctrl-C, SIGTERM or SIGHUP stop them in reverse
order: workers first (they finish their tasks), then the coordinator (it records their last
events), then NATS. Whatever kills `claw up` itself (SIGKILL too), its children go with it
(`cli.processes`); and a closed output pipe cannot interrupt the stop (`cli.runner.protect_output`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import socket
from pathlib import Path

import msgspec

from cli.cluster import ClusterProcesses
from cli.output import emit_json
from cli.processes import Launcher
from cli.runner import notice, warn
from cli.supervision import Restart, keep_running
from common.aio import wait_any
from common.config import ClawConfig, NatsSettings, load_config
from common.errors import NatsServerError
from common.identity import default_identity
from communication.api_client import ClawClient
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions

# Which option of `claw up` sets each port of nats-server.
PORT_OPTIONS = {"client": "--nats-port", "monitoring": "--monitor-port"}
# The identity the gateway connects as (its credentials: <data dir>/auth/gateway.creds).
GATEWAY_IDENTITY = "gateway"


def local_dirs_under(data_dir: Path, config: ClawConfig) -> dict[str, str]:
    """Environment that moves the folders left at their defaults (artifacts, sandboxes, skill cache)
    under `data_dir`, so one `claw up` keeps everything in one place; folders the user chose stay."""
    defaults = ClawConfig()
    chosen = {
        "CLAW_ARTIFACTS_LOCAL_DIR": (config.artifacts.local_dir, defaults.artifacts.local_dir, "artifacts"),
        "CLAW_TOOLS_SANDBOX_ROOT": (config.tools.sandbox_root, defaults.tools.sandbox_root, "sandboxes"),
        "CLAW_WORKER_SKILL_CACHE_DIR": (config.worker.skill_cache_dir, defaults.worker.skill_cache_dir, "skill-cache"),
    }
    return {name: str(data_dir / folder) for name, (value, default, folder) in chosen.items() if value == default}


class LocalCluster:
    """The processes of `claw up`."""

    def __init__(
        self,
        *,
        data_dir: Path,
        workers: int,
        nats_port: int,
        monitor_port: int,
        concurrency: int,
        metrics_port: int | None = None,
        gateway: str | None = None,
        json_out: bool = False,
        auth: bool = True,
        nats_nodes: int = 1,
        sync_interval: str | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        # 1: one nats-server; 3 or 5: a NATS cluster on this machine, streams replicated on every node.
        self.nats_nodes = nats_nodes
        # Authentication (docs/Security.md): credentials for every process under <data dir>/auth.
        self.auth_dir = self.data_dir / "auth" if auth else None
        # The gateway's HOST:PORT (None: no gateway), and the file holding the first admin's API key.
        self.gateway = gateway
        self.admin_key_file = self.data_dir / "admin.key"
        self.gateway_url: str | None = None
        # The banner as one JSON object on stdout; notices and warnings as JSON objects on stderr.
        self.json_out = json_out
        self.workers = workers
        self.concurrency = concurrency
        self.metrics_port = metrics_port
        # Where the coordinator serves /metrics, once it answered (it knows the port 0 stood for).
        self.metrics_url: str | None = None
        self.logs = self.data_dir / "logs"
        self.nats_options = NatsServerOptions(
            store_dir=self.data_dir / "nats",
            port=nats_port,
            http_port=monitor_port,
            log_file=self.logs / "nats-server.log",
            auth_dir=self.auth_dir,
            sync_interval=sync_interval,
        )
        self.nats_cluster_options = cluster_options(self.nats_options, nats_nodes) if nats_nodes > 1 else []
        self.launcher = Launcher(log_dir=self.logs)
        config = load_config()
        self._local_dirs = local_dirs_under(self.data_dir, config)
        artifacts = config.artifacts
        self.artifacts_location = (
            self._local_dirs.get("CLAW_ARTIFACTS_LOCAL_DIR", artifacts.local_dir)
            if artifacts.backend == "local"
            else f"s3://{artifacts.endpoint}/{artifacts.bucket}"
        )

    async def serve(self, stop: asyncio.Event) -> None:
        """Start everything, keep it running until `stop` (or NATS dies), stop everything."""
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            if self.auth_dir is not None:
                await asyncio.to_thread(self._issue_credentials)
            if self.nats_cluster_options:
                check_store_layout(self.data_dir / "nats", clustered=True)
                await self.launcher.start_nats_cluster(self.nats_cluster_options, PORT_OPTIONS)
                nats = self.launcher.nats_servers[0]
            else:
                check_store_layout(self.data_dir / "nats", clustered=False)
                nats = await self.launcher.start_nats(self.nats_options, PORT_OPTIONS)
            cluster = self._cluster(nats)
            cluster.start()
            await cluster.wait_ready(stop)
            if stop.is_set():
                return  # Ctrl-C while starting
            await self._find_metrics(cluster.settings)
            self.gateway_url = cluster.gateway_url
            if self.gateway_url is not None:
                await self._ensure_admin_key(cluster.settings)
            self._banner(nats)
            await self._supervise(cluster, nats, stop)
        finally:
            running = self.launcher.running()
            if running:
                notice("stopping the cluster ...")
            await self.launcher.stop_all_async()
            if running:
                notice("cluster stopped")

    def _node_id(self, index: int) -> str:
        return f"{socket.gethostname().split('.')[0]}-w{index}"

    def _issue_credentials(self) -> None:
        """The coordinator's, each worker's and the local admin's credentials (kept across runs), and
        the server config generated from them."""
        from cli.credentials import ADMIN_CREDS, GATEWAY_CREDS, LOCAL_ADMIN_ROLES, ensure, prepare_server

        assert self.auth_dir is not None
        prefix = self.prefix
        tls = load_config().nats.tls
        prepare_server(self.auth_dir, tls)
        ensure(self.auth_dir, name="coordinator", roles=["coordinator"], prefix=prefix)
        for i in range(1, self.workers + 1):
            node = self._node_id(i)
            ensure(self.auth_dir, name=node, roles=["worker"], node_id=node, prefix=prefix)
        ensure(self.auth_dir, name=default_identity(), roles=LOCAL_ADMIN_ROLES, prefix=prefix, file=ADMIN_CREDS)
        if self.gateway is not None:
            ensure(self.auth_dir, name=GATEWAY_IDENTITY, roles=["gateway"], prefix=prefix, file=GATEWAY_CREDS)
        prepare_server(self.auth_dir, tls)

    @property
    def prefix(self) -> str:
        """The cluster's NATS prefix."""
        return os.environ.get("CLAW_NATS_PREFIX", "claw")

    def _creds(self, child: str) -> str | None:
        """The credentials file of a child (`coordinator`, `worker-<i>`), None without authentication."""
        if self.auth_dir is None:
            return None
        if child == "coordinator":
            return str(self.auth_dir / "coordinator.creds")
        if child == "gateway":
            return str(self.auth_dir / "gateway.creds")
        return str(self.auth_dir / f"{self._node_id(int(child.removeprefix('worker-')))}.creds")

    @property
    def admin_creds(self) -> Path | None:
        """The local admin's credentials (what `claw` commands in another terminal use)."""
        return None if self.auth_dir is None else self.auth_dir / "admin.creds"

    def _cluster(self, nats: EmbeddedNatsServer) -> ClusterProcesses:
        # The user's own CLAW_* settings (config file, artifact backend, audit key, tracing) reach every
        # child; only what `claw up` itself owns is set over them.
        env = dict(os.environ) | self._local_dirs
        env.update(CLAW_NATS_CONNECT_RETRY_S="30", CLAW_LOG_LEVEL=os.environ.get("CLAW_LOG_LEVEL", "info"))
        # One local admin submits and approves (the README's quick start): their own tasks included.
        env.setdefault("CLAW_AUTH_SELF_APPROVAL", "true")
        if self.nats_nodes > 1:
            env["CLAW_JETSTREAM_REPLICAS"] = str(self.nats_nodes)
        if self.auth_dir is not None:
            env["CLAW_AUTH_DIR"] = str(self.auth_dir)
            if self.gateway is not None and not env.get("CLAW_AUTH_GATEWAYS"):
                # The coordinator believes the gateway's "acting for" only from identities listed here.
                env["CLAW_AUTH_GATEWAYS"] = GATEWAY_IDENTITY
        metrics = () if self.metrics_port is None else ("--metrics-port", str(self.metrics_port))
        return ClusterProcesses(
            self.launcher,
            self.data_dir,
            nats_url=self.nats_url,
            monitor_url=nats.monitor_url,
            prefix=self.prefix,
            workers=self.workers,
            concurrency=self.concurrency,
            node_id=self._node_id,
            env=env,
            coordinator_args=metrics,
            creds=self._creds,
            client_creds=None if self.admin_creds is None else str(self.admin_creds),
            gateway_listen=self.gateway,
        )

    async def _find_metrics(self, settings: NatsSettings) -> None:
        if self.metrics_port is None:
            return
        if self.admin_creds is not None:
            settings = msgspec.structs.replace(settings, creds_file=str(self.admin_creds))
        async with await ClawClient.connect(settings, name="claw-up") as client:
            port = (await client.ping()).metrics_port
        self.metrics_url = None if port is None else f"http://127.0.0.1:{port}/metrics"

    async def _ensure_admin_key(self, settings: NatsSettings) -> None:
        """The first `claw up` of a data dir creates an API key with every role for logging in to the
        dashboard, kept (readable by this user only) in `<data-dir>/admin.key`."""
        if self.admin_key_file.exists():
            return
        from common.verbs import Role
        from gateway.auth import KeyStore
        from gateway.server import open_key_store

        async with await ClawClient.connect(settings, name="claw-up") as client:
            store: KeyStore = await open_key_store(client.conn, ClawConfig(nats=settings))
            if any(record.name == "admin" for record in await store.all_keys()):
                await store.revoke("admin")  # its key file is gone: issue a new one
            _, key = await store.create("admin", [r for r in Role if r != Role.WORKER])
        await asyncio.to_thread(_write_private, self.admin_key_file, key + "\n")

    @property
    def nats_url(self) -> str:
        """The URL clients are given: every server's, comma-separated, for a NATS cluster."""
        return ",".join(s.client_url for s in self.launcher.nats_servers)

    def _login_hint(self, url: str) -> str:
        """The banner's lines on the dashboard: where, the key to log in with, how to make more logins."""
        key = "claw gateway key create --name NAME --roles viewer,submitter"
        if self.auth_dir is None:  # --no-auth: no credentials folder to hold a token signing key
            more = f"\n    more logins: an API key, {key})"
        else:
            # `claw creds` looks in ./.claw/auth unless told: name the folder when it is another.
            where = "" if self.auth_dir == Path(".claw/auth").resolve() else f" --auth-dir {self.auth_dir}"
            more = (
                f"\n    more logins: a signed token, claw creds create NAME --role viewer,submitter --http{where}"
                f"\n    or an API key, {key})"
            )
        return f"\n  dashboard and REST API: {url} (log in with the API key in {self.admin_key_file};{more}"

    def _banner(self, nats: EmbeddedNatsServer) -> None:
        if self.json_out:
            emit_json(
                {
                    "nats_url": self.nats_url,
                    "nats_nodes": self.nats_nodes,
                    "monitor_url": nats.monitor_url,
                    "workers": self.workers,
                    "data_dir": str(self.data_dir),
                    "logs": str(self.logs),
                    "artifacts": self.artifacts_location,
                    "metrics_url": self.metrics_url,
                    "credentials": None if self.admin_creds is None else str(self.admin_creds),
                    "gateway_url": self.gateway_url,
                    "gateway_key_file": None if self.gateway_url is None else str(self.admin_key_file),
                }
            )
            return
        metrics = f"\n  Prometheus metrics: {self.metrics_url}" if self.metrics_url else ""
        if self.admin_creds is None:
            creds = "\n  NO AUTHENTICATION (--no-auth): whoever reaches nats-server owns the cluster"
        else:
            creds = (
                f"\n  credentials: {self.admin_creds} (your admin identity: `claw` run from the folder holding "
                "./.claw finds it; elsewhere export CLAW_CREDS=<that file>)"
            )
        if self.gateway_url is not None:
            metrics += self._login_hint(self.gateway_url)
        url = self.nats_url
        bus = f"nats-server {url} (monitoring {nats.monitor_url})"
        if self.nats_nodes > 1:
            names = ", ".join(str(s.options.server_name) for s in self.launcher.nats_servers)
            bus = (
                f"a NATS cluster of {self.nats_nodes} servers ({names}; n1's monitoring {nats.monitor_url}), "
                "every stream on each; a server that exits is started again"
            )
        print(
            f"""claw cluster up: {bus},
  a coordinator and {self.workers} worker(s); data and logs in {self.data_dir}{metrics}{creds}
  artifacts in {self.artifacts_location} (claw artifacts list)
  a coordinator or worker that exits is started again (after 1 s, doubling to 30 s)

In another terminal:
  claw --nats {url} submit echo --input '{{"hello": "world"}}' --wait
  claw --nats {url} task list
  claw --nats {url} nodes
  claw --nats {url} status

Ctrl-C stops the cluster.""",
            flush=True,
        )

    async def _supervise(self, cluster: ClusterProcesses, nats: EmbeddedNatsServer, stop: asyncio.Event) -> None:
        """Keep the coordinator and the workers running until `stop`; NATS dying ends `claw up`."""
        ended = asyncio.Event()  # `stop`, or NATS died
        async with asyncio.TaskGroup() as tg:
            for name, child in cluster.children.items():
                start = functools.partial(cluster.start_child, name)
                tg.create_task(keep_running(start, ended, self._report, child), name=f"keep-{name}")
            while not await wait_any(stop, timeout_s=0.5) and nats.alive:
                if self.nats_nodes > 1:
                    nats = await self._restart_exited_nats(nats)
            ended.set()
        if not stop.is_set():
            raise NatsServerError(f"nats-server exited; see {nats.log_file}")

    async def _restart_exited_nats(self, first: EmbeddedNatsServer) -> EmbeddedNatsServer:
        """Start again a server of the NATS cluster that exited (the others keep the quorum meanwhile);
        returns the first server as it now is."""
        for server in list(self.launcher.nats_servers):
            if server.alive:
                continue
            name = server.options.server_name
            warn(f"nats-server {name} exited; starting it again (see {server.log_file})", name=name)
            try:
                again = await self.launcher.restart_nats(server)
            except NatsServerError as exc:
                warn(f"nats-server {name} did not start again: {exc}", name=name)
                continue
            if server is first:
                first = again
        return first

    @staticmethod
    def _report(restart: Restart) -> None:
        warn(
            restart.describe(),
            name=restart.name,
            exit_code=restart.exit_code,
            restart_in_s=restart.restart_in_s,
            log=None if restart.log_path is None else str(restart.log_path),
        )


def cluster_options(base: NatsServerOptions, nodes: int) -> list[NatsServerOptions]:
    """The servers n1..nN of a NATS cluster on this machine: n1 on the ports of `base` (0: a free
    one), the others and every route port on free ports chosen now, so that a server that exits
    comes back on the same ones; each with its own store under `base.store_dir`."""
    ports = [(base.port or free_port(), base.http_port or free_port())]
    ports += [(free_port(), free_port()) for _ in range(nodes - 1)]
    routes = [free_port() for _ in range(nodes)]
    return [
        dataclasses.replace(
            base,
            store_dir=base.store_dir / f"n{i + 1}",
            port=client,
            http_port=monitor,
            log_file=None if base.log_file is None else base.log_file.with_name(f"nats-server-n{i + 1}.log"),
            server_name=f"n{i + 1}",
            cluster_name="claw-local",
            cluster_port=routes[i],
            routes=tuple(f"nats://{base.host}:{p}" for j, p in enumerate(routes) if j != i),
        )
        for i, (client, monitor) in enumerate(ports)
    ]


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_store_layout(store: Path, *, clustered: bool) -> None:
    """Refuse to start a single server on a cluster's store or a cluster on a single server's: the
    other layout's streams (and the tasks queued in them) would not be there."""
    has_cluster = (store / "n1").is_dir()
    has_single = (store / "jetstream").is_dir()
    if clustered and has_single:
        raise NatsServerError(
            f"{store} holds the store of a single nats-server; a NATS cluster would start with empty streams "
            "(queued tasks left behind): use another --data-dir for --nats-nodes, or drain this cluster and "
            f"remove {store}"
        )
    if not clustered and has_cluster:
        raise NatsServerError(
            f"{store} holds the stores of a NATS cluster (n1, n2, ...); start it with the same --nats-nodes, "
            "or use another --data-dir for a single server"
        )


def _write_private(path: Path, text: str) -> None:
    """Write a new file that only this user may read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
