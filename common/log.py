"""Structured logging with structlog, configured once per process by the CLI.

Lines are JSON (one object per line) unless they go to a terminal, where they are pretty-printed.
Context bound with `structlog.contextvars` (`node_id` for a process, `task_id` and `trace_id`
around a task) is merged into every line. Library code only calls `get_logger`; it never configures.

Tracebacks never show local variables: structlog's defaults (`dict_tracebacks`, rich console
tracebacks) print each frame's locals, and those hold raw request bytes, task inputs and
credentials (a secret at the start of a request reached the log that way).
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any, TextIO, cast

import msgspec
import structlog
from opentelemetry import trace
from structlog.tracebacks import ExceptionDictTransformer

from common.config import LogSettings

_json_encoder = msgspec.json.Encoder(enc_hook=str)


def _serialize(obj: Any, **_: Any) -> str:
    return _json_encoder.encode(obj).decode()


def configure_logging(settings: LogSettings, *, process: str, stream: IO[str] | None = None) -> None:
    """Route structlog and stdlib logging to one renderer, stamping each line with `process`."""
    out: IO[str] = stream or sys.stderr
    if settings.file:
        out = open(settings.file, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    use_json = settings.format == "json" or (settings.format == "auto" and not out.isatty())
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_context,
        structlog.processors.add_log_level,
        timestamper,
    ]
    renderer: structlog.typing.Processor
    if use_json:
        shared.append(structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)))
        renderer = structlog.processors.JSONRenderer(serializer=_serialize)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty(), exception_formatter=_console_tracebacks())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=cast(TextIO, out)),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(process=process)
    # Libraries (nats-py, aiosqlite) log through the stdlib: send them through the same renderer.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(level, logging.WARNING))


def _console_tracebacks() -> structlog.typing.ExceptionRenderer:
    """Rich tracebacks when rich is installed (structlog's default), but without locals."""
    try:
        import rich  # noqa: F401 - only whether it is there
    except ImportError:
        return structlog.dev.plain_traceback
    return structlog.dev.RichTracebackFormatter(show_locals=False)


def add_trace_context(logger: Any, method: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """Join log lines to traces: the current span's `trace_id` and `span_id`, when there is one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", f"{context.trace_id:032x}")
        event.setdefault("span_id", f"{context.span_id:016x}")
    return event


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A logger for library code; `name` becomes the `component` field of its lines."""
    logger = structlog.get_logger() if name is None else structlog.get_logger(component=name)
    return cast(structlog.stdlib.BoundLogger, logger)
