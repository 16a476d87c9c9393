"""The launcher of cluster processes (`cli.processes`), with real child processes: the stop order,
children that die with their owner however it dies, and output that a closed pipe cannot break."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

from cli.processes import Launcher, child_env
from communication.nats_server import NatsServerOptions
from tests.helpers import ROOT, wait_until

# A child that notes its name in a file when it gets SIGTERM, then exits.
NOTING_CHILD = textwrap.dedent(
    """
    import pathlib, signal, sys
    name, out = sys.argv[1], pathlib.Path(sys.argv[2])
    def bye(*_):
        with out.open("a") as f:
            f.write(name + "\\n")
        sys.exit(0)
    signal.signal(signal.SIGTERM, bye)
    out.with_name(name + ".ready").touch()
    while True:
        signal.pause()
    """
)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stop_all_stops_workers_then_coordinators_then_the_rest(tmp_path: Path) -> None:
    launcher = Launcher(log_dir=tmp_path, env=child_env(), cwd=tmp_path)
    out = tmp_path / "stopped.txt"
    try:
        for name, role in [("other", "other"), ("coordinator", "coordinator"), ("w1", "worker"), ("w2", "worker")]:
            launcher.spawn(name, [sys.executable, "-c", NOTING_CHILD, name, str(out)], role=role)  # type: ignore[arg-type]
        wait_until(lambda: len(list(tmp_path.glob("*.ready"))) == 4, what="every child ready")
        launcher.stop_all()
    finally:
        launcher.stop_all()
    stopped = out.read_text().split()
    assert sorted(stopped[:2]) == ["w1", "w2"] and stopped[2:] == ["coordinator", "other"]
    assert all(not child.alive for child in launcher.children)


# An owner that starts through the launcher a `claw` child, another program and nats-server, prints
# their pids, and waits.
OWNER = textwrap.dedent(
    """
    import asyncio, json, signal, sys
    from pathlib import Path
    from cli.processes import Launcher
    from communication.nats_server import NatsServerOptions

    async def main():
        launcher = Launcher(log_dir=Path(sys.argv[1]))
        store = str(Path(sys.argv[1]) / "claw-nats")
        child = launcher.claw("nats", "nats", "start", "--port", "0", "--http-port", "0", "--store-dir", store)
        sleeper = launcher.spawn("sleeper", [sys.executable, "-c", "import signal; signal.pause()"])
        nats = await launcher.start_nats(NatsServerOptions(store_dir=Path(sys.argv[1]) / "nats", port=0, http_port=0))
        print(json.dumps([child.pid, sleeper.pid, nats.pid]), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def test_children_die_with_their_owner_even_when_it_is_killed(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path)],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
    )
    pids: list[int] = []
    try:
        assert owner.stdout is not None
        pids = json.loads(owner.stdout.readline())
        # The `claw nats start` child's own nats-server: a grandchild, gone with its parent.
        serving = wait_until(lambda: "nats-server ready" in (tmp_path / "nats.log").read_text(), what="claw nats")
        assert serving
        pids += [p.pid for p in psutil.Process(pids[0]).children()]
        assert len(pids) == 4 and not any(gone(pid) for pid in pids)
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        wait_until(lambda: all(gone(pid) for pid in pids), timeout_s=30, what="the owner's children to exit")
    finally:
        owner.kill()
        owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
        for pid in pids:
            if not gone(pid):
                psutil.Process(pid).kill()


def test_output_whose_reader_went_away_fails_no_write(tmp_path: Path) -> None:
    """`claw up | tee log` after Ctrl-C ended tee: prints and log lines must not raise."""
    script = textwrap.dedent(
        """
        import sys
        from cli.runner import protect_output
        protect_output()
        for _ in range(2000):
            print("x" * 100)
            sys.stderr.write("e" * 100 + "\\n")
        sys.stdout.flush()
        open(sys.argv[1], "w").write("reached the end")
        """
    )
    done = tmp_path / "done"
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(done)],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()
    child.stderr.close()
    assert child.wait(30) == 0
    assert done.read_text() == "reached the end"


async def test_every_nats_server_a_launcher_started_is_stopped(tmp_path: Path) -> None:
    """A benchmark starts two servers (A and B) on one launcher: stopping it stops both, not the last."""
    launcher = Launcher(log_dir=tmp_path / "logs")
    try:
        first = await launcher.start_nats(NatsServerOptions(store_dir=tmp_path / "a", port=0, http_port=0))
        second = await launcher.start_nats(NatsServerOptions(store_dir=tmp_path / "b", port=0, http_port=0))
        assert first.alive and second.alive
    finally:
        await launcher.stop_all_async()
    assert not first.alive and not second.alive
