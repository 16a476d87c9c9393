"""End to end: the life of `claw up` and `claw nats start` as real processes - however `claw up` is
stopped or killed, nothing it started survives it; it restarts a crashed coordinator or worker; a
port conflict names the port; `nats start --host` serves the multi-machine recipe."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.helpers import ROOT, ProcessPool, child_env, wait_until

pytestmark = pytest.mark.e2e

BANNER = re.compile(r"claw --nats (nats://\S+) submit")


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (the kernel's choice), on the loopback address."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def title(process: psutil.Process) -> str:
    """What `ps` shows for it (setproctitle leaves empty words behind the title)."""
    return " ".join(" ".join(process.cmdline()).split())


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class Up:
    """A running `claw up` and what it started."""

    popen: subprocess.Popen[bytes]
    url: str
    ports: list[int]
    data_dir: Path

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.popen.pid).children(recursive=True)

    def child(self, role: str) -> psutil.Process | None:
        """The running child of this role (its title says `claw <role>`), if there is one."""
        found = [c for c in psutil.Process(self.popen.pid).children() if alive(c) and f"claw {role}" in title(c)]
        assert len(found) <= 1, [title(c) for c in found]
        return found[0] if found else None


@contextlib.contextmanager
def claw_up(
    tmp_path: Path,
    *,
    workers: int = 1,
    stdout: int | None = None,
    json_out: bool = False,
    extra: tuple[str, ...] = (),
    ready_timeout_s: float = 90,
) -> Iterator[Up]:
    """`claw up` on free ports (with `json_out`: `claw up --json`; `extra`: more options); at exit, it
    and every process it started are gone (killed if need be)."""
    nats_port, monitor_port = free_ports(2)
    data_dir = tmp_path / "data"
    log_path = tmp_path / "up.log"
    with open(log_path, "ab") as log_file:
        popen = subprocess.Popen(
            [sys.executable, "-m", "cli", "up", "--workers", str(workers), "--data-dir", str(data_dir),
             "--nats-port", str(nats_port), "--monitor-port", str(monitor_port), "--concurrency", "2",
             "--gateway", "127.0.0.1:0",
             *(["--json"] if json_out else []), *extra],
            cwd=ROOT, env=child_env(CLAW_LOG_LEVEL="info"), stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    started: list[psutil.Process] = []
    try:
        if json_out:
            banner = wait_until(
                lambda: next((v for v in json_values(log_path.read_text()) if "nats_url" in v), None),
                timeout_s=ready_timeout_s,
                what="the JSON banner of claw up",
            )
            url = banner["nats_url"]
        elif stdout is None:
            url = wait_until(
                lambda: BANNER.search(log_path.read_text()), timeout_s=ready_timeout_s, what="the banner of claw up"
            ).group(1)
        else:
            assert popen.stdout is not None
            url = _read_banner(popen.stdout).group(1)
        up = Up(popen, url, [nats_port, monitor_port], data_dir)
        started = up.descendants()
        assert len(started) >= 2 + workers, [c.cmdline() for c in started]  # nats-server, coordinator, workers
        yield up
    finally:
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(60)
            except subprocess.TimeoutExpired:
                popen.kill()
        popen.wait()
        if popen.stdout is not None:
            popen.stdout.close()
        for process in started:  # what survives a test that failed
            with contextlib.suppress(psutil.Error):
                process.kill()


def _read_banner(stream: object) -> re.Match[str]:
    lines = []
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        lines.append(raw.decode(errors="replace"))
        found = BANNER.search(lines[-1])
        if found:
            return found
    raise AssertionError("claw up exited before its banner:\n" + "".join(lines))


def json_values(text: str) -> list[dict[str, Any]]:
    """Every JSON object in `text`, which must hold nothing else (objects may span lines)."""
    decoder = json.JSONDecoder()
    values, at = [], 0
    while (at := len(text) - len(text[at:].lstrip())) < len(text):
        try:
            value, at = decoder.raw_decode(text, at)
        except ValueError:
            raise AssertionError(f"not JSON at {at}: {text[at : at + 200]!r}") from None
        values.append(value)
    return values


def assert_nothing_survives(children: list[psutil.Process], ports: list[int]) -> None:
    try:
        wait_until(lambda: not [c for c in children if alive(c)], timeout_s=60)
    except AssertionError:
        survivors = [f"{c.pid} {title(c)!r}" for c in children if alive(c)]
        raise AssertionError(f"60 s after claw up stopped these still run: {survivors}") from None
    wait_until(lambda: all(port_is_free(p) for p in ports), timeout_s=10, what=f"ports {ports} to be free")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
def test_no_child_outlives_claw_up_however_it_is_stopped(tmp_path: Path, signum: signal.Signals) -> None:
    with claw_up(tmp_path) as up:
        children = up.descendants()
        up.popen.send_signal(signum)
        code = up.popen.wait(90)
        assert_nothing_survives(children, up.ports)
    if signum != signal.SIGKILL:
        assert code == 0, (tmp_path / "up.log").read_text()
        assert "cluster stopped" in (tmp_path / "up.log").read_text()


def test_ctrl_c_stops_the_cluster_when_the_output_pipe_is_already_closed(tmp_path: Path) -> None:
    """`claw up | tee log`, Ctrl-C: tee is gone before claw up writes its last lines."""
    with claw_up(tmp_path, stdout=subprocess.PIPE) as up:
        children = up.descendants()
        assert up.popen.stdout is not None
        up.popen.stdout.close()  # the reader of the pipe went away
        up.popen.send_signal(signal.SIGINT)
        code = up.popen.wait(90)
        assert_nothing_survives(children, up.ports)
    assert code == 0


def test_processes_are_named_for_ps_and_the_banner_says_how_to_log_in(tmp_path: Path) -> None:
    with claw_up(tmp_path) as up:
        titles = {title(c) for c in psutil.Process(up.popen.pid).children()}
        assert title(psutil.Process(up.popen.pid)) == "claw up"
        assert "claw coordinator" in titles and "claw gateway" in titles
        assert any(t.startswith("claw worker ") for t in titles), titles
        banner = (tmp_path / "up.log").read_text()
        found = re.search(
            r"dashboard and REST API: (http://127\.0\.0\.1:\d+) \(log in with the API key in (\S+admin\.key);", banner
        )
        assert found is not None, banner
        assert found.group(2) == str(up.data_dir / "admin.key")
        _follow_the_token_hint(up, found.group(1), banner)


def _follow_the_token_hint(up: Up, url: str, banner: str) -> None:
    """The banner's two ways to another login (a signed token, an API key), and the token's command,
    run as printed, makes a token the dashboard takes."""
    auth_dir = up.data_dir / "auth"
    token_hint = f"a signed token, claw creds create NAME --role viewer,submitter --http --auth-dir {auth_dir}\n"
    assert token_hint in banner, banner
    assert "or an API key, claw gateway key create --name NAME --roles viewer,submitter)" in banner, banner
    command = token_hint.removeprefix("a signed token, claw ").strip().replace("NAME", "bob").split()
    out = up.data_dir.parent / "bob.token"
    env = child_env(CLAW_NATS_URL=up.url, CLAW_CREDS=str(auth_dir / "admin.creds"))
    done = subprocess.run([sys.executable, "-m", "cli", *command, "-o", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    login = httpx.post(url + "/login", data={"key": out.read_text().strip(), "next": "/tasks"})
    assert login.status_code == 303 and login.headers["location"] == "/tasks", login.text


@pytest.mark.parametrize("role", ["worker", "coordinator", "gateway"])
def test_claw_up_restarts_a_killed_child_and_says_so(tmp_path: Path, role: str) -> None:
    pool = ProcessPool(child_env(), tmp_path)
    with claw_up(tmp_path) as up:
        victim = up.child(role)
        assert victim is not None
        victim.kill()
        log = tmp_path / "up.log"
        name = "worker-1" if role == "worker" else role
        wait_until(
            lambda: f"{name} exited with code -9; restarting in 1 s" in log.read_text(),
            timeout_s=30,
            what="claw up to report the restart",
        )
        wait_until(
            lambda: (new := up.child(role)) is not None and new.pid != victim.pid,
            timeout_s=30,
            what=f"a new {role} process",
        )

        def task_succeeds() -> bool:
            creds = str(up.data_dir / "auth" / "admin.creds")  # the local admin's, which claw up wrote
            result = pool.run("--nats", up.url, "--creds", creds, "submit", "echo", "--input", '{"after": "restart"}',
                              "--wait")  # fmt: skip
            return result.returncode == 0 and '"after":"restart"' in result.stdout.replace(" ", "")

        wait_until(task_succeeds, timeout_s=90, interval_s=1.0, what="a task to succeed after the restart")
        assert up.popen.poll() is None


def test_claw_up_serves_the_dashboard_and_its_first_admin_key(tmp_path: Path) -> None:
    """`claw up` starts the gateway, says where, and keeps an admin API key only its user may read."""
    with claw_up(tmp_path, json_out=True) as up:
        [banner] = [v for v in json_values((tmp_path / "up.log").read_text()) if "nats_url" in v]
        url, key_file = banner["gateway_url"], Path(banner["gateway_key_file"])
        assert url.startswith("http://127.0.0.1:") and key_file == up.data_dir / "admin.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        key = key_file.read_text().strip()
        assert httpx.get(url + "/healthz").json() == {"ok": True, "nats": "connected"}
        assert httpx.get(url + "/v1/status").status_code == 401
        status = httpx.get(url + "/v1/status", headers={"Authorization": f"Bearer {key}"})
        assert status.status_code == 200 and status.json()["status"]["nodes_online"] == 1
        assert httpx.get(url + "/").status_code == 303  # the dashboard asks for a login
        # The gateway is on the bus with credentials of its own (0600), and acts for the key's person.
        assert (up.data_dir / "auth" / "gateway.creds").stat().st_mode & 0o777 == 0o600
        auth = {"Authorization": f"Bearer {key}"}
        submitted = httpx.post(url + "/v1/tasks", json={"skill": "echo", "input": {"via": "gateway"}}, headers=auth)
        assert submitted.status_code == 200, submitted.text
        task_id = re.search(r'"task_id":\s*"([0-9A-Z]{26})"', submitted.text).group(1)  # type: ignore[union-attr]

        def succeeded() -> bool:
            return httpx.get(f"{url}/v1/tasks/{task_id}", headers=auth).json()["state"] == "succeeded"

        wait_until(succeeded, timeout_s=60, interval_s=0.3, what="the gateway's task to succeed")


def test_claw_up_json_prints_its_banner_warnings_and_errors_as_json(tmp_path: Path) -> None:
    with claw_up(tmp_path, json_out=True) as up:
        [banner] = [v for v in json_values((tmp_path / "up.log").read_text()) if "nats_url" in v]
        assert banner["nats_url"] == up.url and banner["workers"] == 1 and banner["data_dir"] == str(up.data_dir)
        victim = up.child("worker")
        assert victim is not None
        victim.kill()

        def restart_warning() -> dict[str, Any] | None:
            found = [v for v in json_values((tmp_path / "up.log").read_text()) if "warning" in v]
            return found[0] if found else None

        warning = wait_until(restart_warning, timeout_s=30, what="the restart warning as JSON")
        assert warning["name"] == "worker-1" and warning["exit_code"] == -9 and warning["restart_in_s"] == 1
        assert "worker-1 exited with code -9; restarting in 1 s" in warning["warning"]
        up.popen.send_signal(signal.SIGTERM)
        assert up.popen.wait(90) == 0
    notices = [v["notice"] for v in json_values((tmp_path / "up.log").read_text()) if "notice" in v]
    assert notices == ["stopping the cluster ...", "cluster stopped"]

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pool = ProcessPool(child_env(), tmp_path)
        result = pool.run("up", "--nats-port", str(port), "--monitor-port", "0", "--data-dir", str(tmp_path / "d"),
                          "--json")  # fmt: skip
    assert result.returncode == 1 and result.stdout == ""
    [error] = json_values(result.stderr)
    assert error["code"] == "port_in_use" and "--nats-port" in error["error"], error


def test_a_port_conflict_names_the_port_and_the_option(tmp_path: Path) -> None:
    pool = ProcessPool(child_env(), tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = [
            (["up", "--nats-port", str(port), "--monitor-port", "0"], "--nats-port"),
            (["up", "--nats-port", "0", "--monitor-port", str(port)], "--monitor-port"),
            (["nats", "start", "--port", str(port), "--http-port", "0"], "--port"),
            (["nats", "start", "--port", "0", "--http-port", str(port)], "--http-port"),
        ]
        for i, (args, option) in enumerate(cases):
            result = pool.run(*args, "--store-dir" if args[0] == "nats" else "--data-dir", str(tmp_path / f"d{i}"))
            assert result.returncode == 1, result
            assert re.search(rf"port {port}\b.*in use", result.stderr), result.stderr
            assert option in result.stderr, result.stderr
            assert "Traceback" not in result.stderr


def varz(monitor_port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/varz", timeout=5) as reply:
        return json.load(reply)  # type: ignore[no-any-return]


def test_nats_start_listens_on_loopback_unless_given_a_host(tmp_path: Path) -> None:
    pool = ProcessPool(child_env(), tmp_path)
    try:
        port, monitor_port = free_ports(2)
        nats = pool.spawn("nats", "nats", "start", "--port", str(port), "--http-port", str(monitor_port),
                          "--store-dir", str(tmp_path / "nats"))  # fmt: skip
        wait_until(lambda: "nats-server ready" in nats.output(), timeout_s=30, what="nats-server ready")
        assert varz(monitor_port)["host"] == "127.0.0.1"
        assert nats.stop() == 0
    finally:
        pool.stop_all()


def test_nats_start_no_auth_says_the_bus_is_open_and_lets_anyone_in(tmp_path: Path) -> None:
    pool = ProcessPool(child_env(), tmp_path)
    try:
        port, monitor_port = free_ports(2)
        nats = pool.spawn("nats", "nats", "start", "--no-auth", "--host", "0.0.0.0", "--port", str(port),
                          "--http-port", str(monitor_port), "--store-dir", str(tmp_path / "nats"))  # fmt: skip
        wait_until(lambda: "nats-server ready" in nats.output(), timeout_s=30, what="nats-server ready")
        assert "WITHOUT authentication (--no-auth)" in nats.output() and "authentication on" not in nats.output()
        assert not (tmp_path / "auth").exists()
        # No credentials needed: NATS answers (nobody serves the API yet).
        status = pool.run("--nats", f"nats://127.0.0.1:{port}", "status")
        assert "no coordinator is answering" in status.stderr, status.stderr
        assert nats.stop() == 0
    finally:
        pool.stop_all()


def test_nats_start_issues_the_credentials_of_workers_and_a_gateway_started_alongside(tmp_path: Path) -> None:
    """What docker-compose relies on: the server's container issues every service's credentials."""
    pool = ProcessPool(child_env(), tmp_path)
    try:
        nats = pool.spawn("nats", "nats", "start", "--port", "0", "--http-port", "0", "--store-dir",
                          str(tmp_path / "nats"), "--worker", "worker-1", "--worker", "worker-2",
                          "--gateway", "gw")  # fmt: skip
        wait_until(lambda: "nats-server ready" in nats.output(), timeout_s=30, what="nats-server ready")
        auth = tmp_path / "auth"
        for name in ("coordinator", "admin", "worker-1", "worker-2", "gw"):
            assert (auth / f"{name}.creds").stat().st_mode & 0o777 == 0o600, name
        listed = json.loads(pool.run("creds", "list", "--auth-dir", str(auth), "--json").stdout)
        roles = {i["name"]: (i["roles"], i["node_id"]) for i in listed}
        assert roles["worker-2"] == (["worker"], "worker-2") and roles["gw"] == (["gateway"], None)
        assert nats.stop() == 0
        bad = pool.run("nats", "start", "--port", "0", "--http-port", "0", "--store-dir", str(tmp_path / "n2"),
                       "--worker", "a b")  # fmt: skip
        assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "not a valid identity" in bad.stderr, bad.stderr
    finally:
        pool.stop_all()


def test_multi_machine_recipe_with_the_bus_on_all_addresses(tmp_path: Path) -> None:
    """The RUNBOOK's recipe: `nats start --host 0.0.0.0` (authentication on) on one machine with the
    coordinator, a worker's credentials issued with `claw creds create` and used from another data
    dir (here through 127.0.0.1: the test sends no traffic to any other address of the machine)."""
    port, monitor_port = free_ports(2)
    url = f"nats://127.0.0.1:{port}"
    auth = tmp_path / "auth"
    pool = ProcessPool(
        child_env(
            CLAW_AUTH_DIR=str(auth),
            CLAW_NATS_MONITOR_URL=f"http://127.0.0.1:{monitor_port}",
            CLAW_NATS_CONNECT_RETRY_S="30",
            CLAW_ARTIFACTS_LOCAL_DIR=str(tmp_path / "artifacts"),
            CLAW_TOOLS_SANDBOX_ROOT=str(tmp_path / "sandboxes"),
            CLAW_WORKER_SKILL_CACHE_DIR=str(tmp_path / "skill-cache"),
        ),
        tmp_path,
    )
    try:
        nats = pool.spawn("nats", "nats", "start", "--host", "0.0.0.0", "--port", str(port),
                          "--http-port", str(monitor_port), "--store-dir", str(tmp_path / "nats"))  # fmt: skip
        wait_until(lambda: "nats-server ready" in nats.output(), timeout_s=30, what="nats-server ready")
        assert f"nats-server ready: {url}" in nats.output()
        assert f"authentication on: credentials in {auth}" in nats.output()
        assert varz(monitor_port)["host"] == "0.0.0.0"
        assert (auth / "coordinator.creds").stat().st_mode & 0o777 == 0o600
        admin = ("--nats", url, "--creds", str(auth / "admin.creds"))
        pool.spawn("coordinator", "--nats", url, "--creds", str(auth / "coordinator.creds"),
                   "coordinator", "start", "--db", str(tmp_path / "claw.db"))  # fmt: skip
        far = tmp_path / "elsewhere" / "far-away.creds"
        far.parent.mkdir()
        # Bound to echo: the server lets it pull only echo's tasks, and it loads only echo (no --skills).
        issued = pool.run("creds", "create", "--role", "worker", "--node-id", "far-away", "--skills", "echo",
                          "-o", str(far))  # fmt: skip
        assert issued.returncode == 0 and "the running nats-server reloaded" in issued.stdout, issued.stderr
        assert "it may pull the tasks of: echo" in issued.stdout
        pool.spawn("worker", "--nats", url, "--creds", str(far), "worker", "start", "--node-id", "far-away")

        def online() -> bool:
            result = pool.run(*admin, "nodes", "--json")
            return result.returncode == 0 and [n["status"] for n in json.loads(result.stdout)] == ["online"]

        wait_until(online, timeout_s=60, interval_s=0.5, what="the worker online")
        result = pool.run(*admin, "submit", "echo", "--input", '{"over": "the bus"}', "--wait", timeout_s=90)
        assert result.returncode == 0, result.stderr
        task_id = result.stdout.split()[0]
        shown = json.loads(pool.run(*admin, "task", "show", task_id, "--json").stdout)
        assert shown["node_id"] == "far-away" and shown["state"] == "succeeded"
        [node] = json.loads(pool.run(*admin, "nodes", "--json").stdout)
        assert node["skills"] == ["echo"]
        # Without credentials the server refuses the connection: one line, no traceback.
        refused = pool.run("--nats", url, "nodes")
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        assert "Authorization Violation" in refused.stderr and "--creds" in refused.stderr
        # The registry lists who may connect; a revoked machine is cut off with no restart.
        listed = json.loads(pool.run("creds", "list", "--json").stdout)
        assert {(i["name"], i["node_id"]) for i in listed} >= {("coordinator", None), ("far-away", "far-away")}
        revoked = pool.run("creds", "revoke", "far-away")
        assert revoked.returncode == 0 and "far-away revoked; the running nats-server dropped it" in revoked.stdout
        again = pool.run("--nats", url, "--creds", str(far), "nodes")
        assert again.returncode == 1 and "Authorization Violation" in again.stderr, again.stderr
    finally:
        pool.stop_all()
