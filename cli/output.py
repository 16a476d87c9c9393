"""How the CLI prints: aligned tables and key-value blocks for people, JSON for programs."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec


def emit_json(value: Any) -> None:
    """Print `value` (Structs, lists, dicts) as indented JSON on stdout."""
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")
    sys.stdout.flush()


def emit_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, empty: str = "(none)") -> None:
    """Print rows under headers, columns padded to their widest cell."""
    if not rows:
        print(empty)
        return
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def emit_fields(pairs: Sequence[tuple[str, object]]) -> None:
    """Print `label  value` lines with the labels aligned."""
    width = max(len(label) for label, _ in pairs)
    for label, value in pairs:
        print(f"{label.ljust(width)}  {'-' if value is None else value}")


def fmt_time(epoch: float | None) -> str:
    """Local wall time with milliseconds, or '-'."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def fmt_ago(epoch: float | None, *, now: float | None = None) -> str:
    """'3.2s ago', '4m ago', ..."""
    if epoch is None:
        return "-"
    delta = max((now or time.time()) - epoch, 0.0)
    if delta < 60:
        return f"{delta:.1f}s ago"
    if delta < 3600:
        return f"{delta / 60:.0f}m ago"
    if delta < 86400:
        return f"{delta / 3600:.1f}h ago"
    return f"{delta / 86400:.1f}d ago"


def fmt_duration(seconds: float | None) -> str:
    """'850 ms', '12.3 s', '4m05s', or '-'."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def fmt_span(seconds: float) -> str:
    """A window as given on the command line: '15m', '1h', '7d', '90s'."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def fmt_percent(rate: float | None) -> str:
    """'87.5 %', or '-'."""
    return "-" if rate is None else f"{rate * 100:.1f} %"


def fmt_bytes(n: int) -> str:
    """'1.2 MiB' style."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def shorten(text: str, limit: int = 120) -> str:
    """One line of at most `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
