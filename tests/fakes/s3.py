"""A real S3-protocol server for tests: moto's standalone server, in a child process on a free port."""

from __future__ import annotations

import select
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ACCESS_KEY_ENV = "CLAW_S3_ACCESS_KEY"
SECRET_KEY_ENV = "CLAW_S3_SECRET_KEY"
CREDENTIALS = {ACCESS_KEY_ENV: "test-access", SECRET_KEY_ENV: "test-secret"}

# Runs moto's S3 server on a free loopback port, prints the port, and serves until its stdin closes
# (the fixture closes it; if pytest dies, the pipe closes with it and the server goes too). Request
# lines are not logged: its stderr goes to a file, but a quiet server is easier to read on failure.
_MOTO_SERVER = """
import logging
import sys
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.WARNING)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


@contextmanager
def moto_server(log_dir: Path) -> Iterator[str]:
    """`host:port` of a real S3-protocol server (moto); stopped on exit, also when a test fails."""
    # stderr to a file, not a pipe: a pipe nobody reads fills up and then blocks the server.
    log_path = log_dir / "server.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", _MOTO_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file
        )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            raise RuntimeError(f"moto server did not start: {line!r}\n{log_path.read_text(errors='replace')}")
        yield f"127.0.0.1:{int(line)}"
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Close its stdin (it stops itself), kill it if it does not within 10 s."""
    if proc.stdin and not proc.stdin.closed:
        proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout:
        proc.stdout.close()
