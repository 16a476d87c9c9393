"""Shared fixtures: one real nats-server per test session (on free ports), a fresh cluster prefix per
test (so streams, consumers and buckets never collide), and configs pointing at both.

Async tests run on the event loop users run: uvloop where it is installed (as `claw` does, see
`cli/runner.py`). A test marked `@BOTH_LOOPS` (tests/helpers.py) runs once on each loop, uvloop and
asyncio's own; the process tools and one end-to-end test per skill runtime do, because the two loops'
subprocess transports differ.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import structlog

from common.config import ClawConfig, load_config
from communication.nats_server import EmbeddedNatsServer, NatsServerOptions
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.s3 import moto_server
from tests.helpers import ProcessPool, assert_known_event_kinds, child_env, local_dirs

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def _loop_factories() -> dict[str, LoopFactory]:
    """The loops a test may run on, by name: uvloop (when installed) first, the default."""
    factories: dict[str, LoopFactory] = {}
    try:
        import uvloop
    except ImportError:
        pass
    else:
        factories["uvloop"] = uvloop.new_event_loop
    factories["asyncio"] = asyncio.new_event_loop
    return factories


LOOP_FACTORIES = _loop_factories()
DEFAULT_LOOP = next(iter(LOOP_FACTORIES))


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, LoopFactory]:
    """Every async test runs on the default loop; one that names loops (`BOTH_LOOPS`) gets each of them."""
    marker = item.get_closest_marker("asyncio")
    if marker is not None and "loop_factories" in marker.kwargs:
        return LOOP_FACTORIES
    return {DEFAULT_LOOP: LOOP_FACTORIES[DEFAULT_LOOP]}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--chaos-full", action="store_true", help="run the chaos test with 1,000 tasks instead of 150")
    parser.addoption(
        "--flow-full", action="store_true", help="run the flow-control limit test with 300 tasks instead of 60"
    )


@pytest.fixture
def chaos_tasks(request: pytest.FixtureRequest) -> int:
    """How many tasks the chaos test submits (--chaos-full: the full 1,000)."""
    return 1000 if request.config.getoption("--chaos-full") else 150


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNatsServer]:
    """A real nats-server with JetStream, shared by the session; tests isolate by prefix."""
    server = EmbeddedNatsServer(NatsServerOptions(store_dir=tmp_path_factory.mktemp("nats"), port=0, http_port=0))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[EmbeddedNatsServer]:
    """A nats-server of this test's own, for tests that stop or kill it."""
    server = EmbeddedNatsServer(NatsServerOptions(store_dir=tmp_path / "nats", port=0, http_port=0))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def prefix() -> str:
    """A cluster prefix unique to this test."""
    return f"t{uuid.uuid4().hex[:12]}"


def make_config(server: EmbeddedNatsServer, prefix: str, tmp_path: Path, **sections: dict[str, object]) -> ClawConfig:
    """A config for an in-process cluster: fast heartbeats, quick polls, a private database."""
    overrides: dict[str, dict[str, object]] = {
        "nats": {"url": server.client_url, "prefix": prefix, "monitor_url": server.monitor_url},
        # 10 missed beats (2 s) before a node is offline: the in-process services share one event loop on
        # a loaded 2-core machine, where 3 beats (0.6 s) of silence happen without anyone dying.
        "coordinator": {"db_path": str(tmp_path / "claw.db"), "offline_after_missed_beats": 10},
        "worker": {
            "heartbeat_interval_s": 0.2,
            "idle_poll_interval_s": 0.5,
            "shutdown_grace_s": 10.0,
            "skill_cache_dir": str(tmp_path / "skill-cache"),
        },
        "artifacts": {"local_dir": str(tmp_path / "artifacts")},
        "tools": {"sandbox_root": str(tmp_path / "sandboxes")},
    }
    for section, values in sections.items():
        overrides.setdefault(section, {}).update(values)
    return load_config(None, env={}, overrides=overrides)


@pytest.fixture
def config(nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path) -> ClawConfig:
    """The default in-process test config."""
    return make_config(nats_server, prefix, tmp_path)


@pytest.fixture
def processes(nats_server: EmbeddedNatsServer, prefix: str, tmp_path: Path) -> Iterator[ProcessPool]:
    """Starts `claw` subprocesses against the session's nats-server; all are stopped at teardown."""
    env = child_env(
        CLAW_NATS_URL=nats_server.client_url,
        CLAW_NATS_MONITOR_URL=nats_server.monitor_url,
        CLAW_NATS_PREFIX=prefix,
        CLAW_COORDINATOR_DB_PATH=str(tmp_path / "claw.db"),
        CLAW_WORKER_HEARTBEAT_INTERVAL_S="0.5",
        CLAW_WORKER_IDLE_POLL_INTERVAL_S="0.5",
        CLAW_LOG_FORMAT="json",
        **local_dirs(tmp_path),
    )
    pool = ProcessPool(env, tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()
    assert_known_event_kinds(tmp_path / "claw.db")


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A fake OpenAI-compatible API on a free loopback port (also an HTTP target), stopped after the test."""
    with FakeOpenAIServer.running() as server:
        yield server


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`host:port` of a real S3-protocol server (moto) for the session; stopped even if tests fail."""
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Library loggers must not keep a previous test's configuration (or its closed streams)."""
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
