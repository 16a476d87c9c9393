"""The one NATS connection object every process uses.

Long-running processes must survive NATS restarts: reconnect forever (nats-py otherwise gives up after
60 attempts and closes for good), ping every few seconds so a half-open connection is noticed quickly,
and log every connection event through structlog instead of nats-py's stderr tracebacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import urllib.parse
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from common.clock import SYSTEM_CLOCK
from common.config import NatsSettings, TlsSettings, redact_url
from common.errors import ConfigError, NatsUnavailableError
from common.identity import BusRole, Credentials, default_identity, read_credentials
from common.log import get_logger
from communication.subjects import Subjects

log = get_logger("communication.connection")

# What a NATS or JetStream call can raise when the server is away, slow or refuses: loops catch
# these, log them and try again; anything else is a bug and is allowed to surface.
NATS_ERRORS: tuple[type[BaseException], ...] = (nats.errors.Error, OSError, TimeoutError)


class NatsConnection:
    """A connected NATS client with its JetStream context and the cluster's subject names."""

    def __init__(
        self, nc: NatsClient, settings: NatsSettings, events: _ConnectionEvents, *, identity: str | None = None
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=settings.request_timeout_s)
        self.settings = settings
        self.subjects = Subjects(settings.prefix)
        # Who this connection is: the credentials' identity, else the OS user (unauthenticated).
        self.identity = identity or default_identity()
        self._coordinator = False
        # The bus role of the credentials (None: none, or not ours).
        self.bus_role: BusRole | None = None
        self._events = events

    @property
    def reads_events(self) -> bool:
        """Whether this connection may subscribe to task events (on an authenticated server only the
        coordinator may: events carry inputs and results; clients follow tasks through the API)."""
        return not self.auth_required or self.identity_is_coordinator

    @property
    def identity_is_coordinator(self) -> bool:
        """Whether the credentials are a coordinator's."""
        return self._coordinator

    @property
    def default_replicas(self) -> int:
        """Copies of a stream when `jetstream.replicas` is 0: 3 on a NATS cluster (its INFO names the
        cluster), 1 on a single server."""
        info = getattr(self.nc, "_server_info", None) or {}
        return 3 if info.get("cluster") else 1

    @property
    def auth_required(self) -> bool:
        """Whether the server asks every connection to authenticate (its INFO says so)."""
        info = getattr(self.nc, "_server_info", None) or {}
        return bool(info.get("auth_required"))

    @property
    def reconnects(self) -> int:
        """How many times this connection reconnected (it changes after an outage)."""
        return self._events.reconnects

    @classmethod
    async def connect(cls, settings: NatsSettings, *, name: str, retry_s: float | None = None) -> NatsConnection:
        """Connect, retrying the first connection for `retry_s` (default: the settings' value).

        Raises `NatsUnavailableError` with the URL and what to do when NATS cannot be reached.
        """
        check_urls(settings.url)  # a typo is not worth retrying (nor a traceback from nats-py)
        retry_s = settings.connect_retry_s if retry_s is None else retry_s
        deadline = SYSTEM_CLOCK.monotonic() + retry_s
        events = _ConnectionEvents()
        creds = _credentials(settings)
        identity = creds.identity if creds is not None else settings.identity or default_identity()
        while True:
            try:
                # nats-py retries a failed first connect for ever when reconnects are unlimited, so
                # the first connect gets a bounded budget (this loop retries it) and unlimited
                # reconnects are switched on once connected: nats-py reads the options on each drop.
                options = _connect_options(settings, name, events, creds, identity)
                # Bounded: nats-py's connect can hang after a failed TLS handshake (no raise, no retry).
                async with asyncio.timeout(4 * settings.connect_timeout_s + 1):
                    nc = await _connect(options | {"max_reconnect_attempts": 1, "reconnect_time_wait": 0.1})
                nc.options["max_reconnect_attempts"] = options["max_reconnect_attempts"]
                nc.options["reconnect_time_wait"] = options["reconnect_time_wait"]
                log.info("nats.connected", url=redact_url(settings.url), name=name, identity=identity)
                conn = cls(nc, settings, events, identity=identity)
                conn.bus_role = None if creds is None else creds.bus_role
                conn._coordinator = conn.bus_role == BusRole.COORDINATOR
                _warn_if_open(conn, creds)
                return conn
            except NATS_ERRORS as exc:
                # nats-py reports "no servers available"; the error behind it says more.
                # A refused login is often followed by the socket's reset: the refusal is the reason.
                cause = events.auth_error or events.last_error or exc
                if SYSTEM_CLOCK.monotonic() >= deadline:
                    raise NatsUnavailableError(_unreachable_message(settings.url, cause)) from None
                log.warning("nats.connect_retry", url=redact_url(settings.url), error=str(cause) or repr(cause))
                await asyncio.sleep(min(settings.reconnect_wait_s, max(deadline - SYSTEM_CLOCK.monotonic(), 0)))

    @property
    def is_connected(self) -> bool:
        """Whether the client is connected right now (not reconnecting, not closed)."""
        return bool(self.nc.is_connected)

    @property
    def server_version(self) -> str:
        """The version of the nats-server this client is connected to ("" if unknown)."""
        version = self.nc.connected_server_version
        try:
            return f"{version.major}.{version.minor}.{version.patch}"
        except ValueError:
            return ""

    async def close(self) -> None:
        """Flush what is buffered and close; safe to call twice and while reconnecting."""
        if self.nc.is_closed:
            return
        self._events.closing = True
        try:
            await self.nc.drain()
        except NATS_ERRORS as exc:
            # drain() raises while reconnecting (JETSTREAM.md); closing is all that is left to do.
            log.warning("nats.drain_failed", error=str(exc) or repr(exc))
            if self.nc.is_reconnecting:
                # No server will take what is buffered, and nats-py's close() writes it to the dead
                # connection's transport, which uvloop refuses with a RuntimeError (the standard loop
                # ignores it), leaving the close half done. Dropped, so the close completes.
                self.nc._pending, self.nc._pending_data_size = [], 0
            await self.nc.close()


class _ConnectionEvents:
    """nats-py's callbacks, logged; remembers the last error and whether we are closing on purpose."""

    def __init__(self) -> None:
        self.last_error: BaseException | None = None
        # The server's refusal of our credentials (or of none), kept over the errors that follow it.
        self.auth_error: BaseException | None = None
        self.closing = False
        self.reconnects = 0

    async def on_error(self, exc: Exception) -> None:
        self.last_error = exc
        if "authorization violation" in str(exc).lower() or "authentication" in str(exc).lower():
            self.auth_error = exc
        log.warning("nats.error", error=str(exc) or repr(exc), error_type=type(exc).__name__)

    async def on_disconnected(self) -> None:
        if self.closing:
            log.debug("nats.disconnected")
        else:
            log.warning("nats.disconnected")

    async def on_reconnected(self) -> None:
        self.reconnects += 1
        log.info("nats.reconnected")

    async def on_closed(self) -> None:
        log.debug("nats.closed")


NATS_SCHEMES = ("nats", "tls", "ws", "wss")


def check_urls(urls: str) -> None:
    """Raise `ConfigError` naming the first of the comma-separated server URLs that nats-py cannot use."""
    for url in urls.split(","):
        url = url.strip()
        parts = urllib.parse.urlsplit(url if "://" in url else f"nats://{url}")
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in NATS_SCHEMES or not parts.hostname or port == -1:
            raise ConfigError(
                f"NATS URL {redact_url(url)!r} is not valid: give nats://HOST:PORT, several separated by commas "
                "without spaces or other characters (--nats, CLAW_NATS_URL)"
            )


async def _connect(options: dict[str, Any]) -> NatsClient:
    """nats-py's connect, closing what a failed attempt leaves open (a refused login keeps its socket)."""
    nc = NatsClient()
    try:
        await nc.connect(**options)
    except BaseException:
        with contextlib.suppress(*NATS_ERRORS):
            await nc.close()
        raise
    return nc


def _tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """A client context that trusts `tls.ca` (else the system's authorities) and, for a server that
    verifies clients, presents `tls.cert`/`tls.key`."""
    try:
        context = ssl.create_default_context(cafile=tls.ca)
        if tls.cert:
            context.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"nats.tls: cannot load {exc.filename or 'the certificates'}: {exc.strerror or exc}"
        ) from None
    return context


def _credentials(settings: NatsSettings) -> Credentials | None:
    """The OpenClaw credentials named by the settings (None: none, or a NATS JWT creds file)."""
    if not settings.creds_file or _is_jwt_creds(settings.creds_file):
        return None
    return read_credentials(settings.creds_file)


def credentials_of(settings: NatsSettings) -> Credentials | None:
    """The OpenClaw credentials a process connects with (None: none, or a NATS JWT creds file)."""
    return _credentials(settings)


def _is_jwt_creds(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return b"BEGIN NATS USER JWT" in f.read(4096)
    except OSError:
        return False  # read_credentials says what is wrong


def _warn_if_open(conn: NatsConnection, creds: Credentials | None) -> None:
    """Say so when this process talks to a server without authentication over a network."""
    if conn.auth_required or creds is not None:
        return
    hosts = {url.rsplit("@", 1)[-1].split("//")[-1].rsplit(":", 1)[0] for url in conn.settings.url.split(",")}
    if any(h not in ("127.0.0.1", "localhost", "::1", "[::1]") and not h.startswith("127.") for h in hosts):
        log.warning(
            "nats.no_authentication",
            url=redact_url(conn.settings.url),
            hint="anyone who reaches this server owns the cluster: run it with credentials (docs/Security.md)",
        )


def _connect_options(
    settings: NatsSettings, name: str, events: _ConnectionEvents, creds: Credentials | None, identity: str
) -> dict[str, Any]:
    options: dict[str, Any] = {
        "servers": [url.strip() for url in settings.url.split(",")],
        "name": name,
        "connect_timeout": settings.connect_timeout_s,
        "reconnect_time_wait": settings.reconnect_wait_s,
        "max_reconnect_attempts": -1,
        "ping_interval": settings.ping_interval_s,
        "max_outstanding_pings": settings.max_outstanding_pings,
        "error_cb": events.on_error,
        "disconnected_cb": events.on_disconnected,
        "reconnected_cb": events.on_reconnected,
        "closed_cb": events.on_closed,
        # Replies to this identity arrive under its own prefix, which only it may subscribe to.
        "inbox_prefix": Subjects.inbox_prefix(identity),
    }
    if settings.user:
        options["user"] = settings.user
    if settings.password:
        options["password"] = settings.password
    if settings.token:
        options["token"] = settings.token
    if settings.tls is not None and (settings.tls.ca or settings.tls.cert):
        options["tls"] = _tls_context(settings.tls)
    if creds is not None:
        options["nkeys_seed_str"] = creds.seed
    elif settings.creds_file:
        options["user_credentials"] = settings.creds_file  # a NATS JWT creds file (operator mode)
    return options


def _unreachable_message(url: str, exc: BaseException) -> str:
    if "authorization violation" in str(exc).lower():
        return (
            f"NATS at {redact_url(url)} refused the connection (Authorization Violation): pass the "
            "credentials issued for you with --creds FILE (or CLAW_CREDS); `claw creds create` issues them"
        )
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
    return (
        f"cannot reach NATS at {redact_url(url)} ({reason}); start a local cluster with `claw up` "
        f"(or just NATS with `claw nats start`), or point --nats / CLAW_NATS_URL at a running server"
    )
