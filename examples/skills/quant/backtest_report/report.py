"""quant.backtest_report: a back-test (quant.backtest's result, in `backtest`) as a report for people:
a Markdown (or HTML) page and an equity-curve PNG, both stored as artifacts of the task.

A Python runtime, because artifacts are stored through the worker (`ctx.put_artifact`). The PNG is
drawn here in pure Python and written with zlib (a PNG is a signature, an IHDR, zlib-compressed
scanlines in IDAT and an IEND, each chunk with a CRC): an 800x420 chart needs no plotting library.
"""

from __future__ import annotations

import asyncio
import base64
import html
import itertools
import math
import struct
import zlib
from collections.abc import Callable, Iterable
from typing import Any

SKILL = "quant.backtest_report"
CHART_NAME = "equity_curve.png"
REPORT_FILES = {"markdown": ("backtest_report.md", "text/markdown"), "html": ("backtest_report.html", "text/html")}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
GRID: Color = (228, 228, 228)
FRAME: Color = (160, 160, 160)
TEXT: Color = (60, 60, 60)
EQUITY: Color = (31, 119, 180)
CAPITAL: Color = (150, 150, 150)
BUY: Color = (44, 160, 44)
SELL: Color = (214, 39, 40)
DRAWDOWN: Color = (240, 150, 150)

# A 3x5 pixel font for the axis labels: each glyph is five rows of three bits.
GLYPHS = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "010", "010", "010"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
    ".": ("000", "000", "000", "000", "010"),
    ",": ("000", "000", "000", "010", "100"),
    "-": ("000", "000", "111", "000", "000"),
    "+": ("000", "010", "111", "010", "000"),
    "%": ("101", "001", "010", "100", "101"),
    " ": ("000", "000", "000", "000", "000"),
}


# --- PNG ------------------------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, and the CRC-32 of type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(width: int, height: int, rgb: bytes | bytearray) -> bytes:
    """An 8-bit RGB PNG of `rgb` (rows top to bottom, 3 bytes a pixel), every row with filter 0."""
    if len(rgb) != width * height * 3:
        raise ValueError(f"{width}x{height} RGB needs {width * height * 3} bytes, got {len(rgb)}")
    stride = width * 3
    raw = b"".join(b"\x00" + bytes(rgb[y * stride : (y + 1) * stride]) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, truecolour, no interlace
    return (
        PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b"")
    )


class Canvas:
    """An RGB raster with the few drawing operations a line chart needs."""

    def __init__(self, width: int, height: int, background: Color = WHITE) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def set(self, x: int, y: int, color: Color) -> None:
        """Colour one pixel (outside the canvas: ignored)."""
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.pixels[i : i + 3] = bytes(color)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        """Fill the rectangle with corners (x0, y0) and (x1, y1), both included."""
        for y in range(max(0, min(y0, y1)), min(self.height, max(y0, y1) + 1)):
            for x in range(max(0, min(x0, x1)), min(self.width, max(x0, x1) + 1)):
                self.set(x, y, color)

    def line(self, x0: int, y0: int, x1: int, y1: int, color: Color, width: int = 1, dash: int = 0) -> None:
        """A straight line (Bresenham), `width` pixels thick; dashed every `dash` pixels if given."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err, step = dx + dy, 0
        while True:
            if not dash or (step // dash) % 2 == 0:
                self.rect(x0, y0, x0 + width - 1, y0 + width - 1, color)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy
            step += 1

    def triangle(self, x: int, y: int, size: int, color: Color, up: bool) -> None:
        """A filled marker triangle pointing up (a buy) or down (a sell) with its tip at (x, y)."""
        for row in range(size):
            half = row // 2
            yy = y + row if up else y - row
            self.rect(x - half, yy, x + half, yy, color)

    def text(self, x: int, y: int, text: str, color: Color = TEXT, scale: int = 2) -> None:
        """`text` in the 3x5 font with its top-left corner at (x, y); unknown characters are blanks."""
        for n, char in enumerate(text):
            for row, bits in enumerate(GLYPHS.get(char, GLYPHS[" "])):
                for col, bit in enumerate(bits):
                    if bit == "1":
                        left, top = x + (n * 4 + col) * scale, y + row * scale
                        self.rect(left, top, left + scale - 1, top + scale - 1, color)

    def png(self) -> bytes:
        """The canvas as PNG bytes."""
        return encode_png(self.width, self.height, self.pixels)


# --- the chart ------------------------------------------------------------------------------------

WIDTH, HEIGHT = 800, 420
LEFT, RIGHT, TOP = 96, 16, 16
EQUITY_BOTTOM, DD_TOP, DD_BOTTOM = 290, 312, 386


def equity_chart(backtest: dict[str, Any]) -> bytes:
    """The equity curve above its drawdown, with the initial capital dashed and the trades marked."""
    equity: list[float] = backtest["equity"]
    capital = float(backtest["parameters"]["initial_capital"])
    canvas = Canvas(WIDTH, HEIGHT)
    low, high = _padded_range([*equity, capital])
    x_of = _x_scale(len(equity))

    def y_of(value: float) -> int:
        return round(EQUITY_BOTTOM - (value - low) / (high - low) * (EQUITY_BOTTOM - TOP))

    for value in _ticks(low, high):
        canvas.line(LEFT, y_of(value), WIDTH - RIGHT, y_of(value), GRID)
        label = _money(value)
        canvas.text(LEFT - 8 - len(label) * 8, y_of(value) - 5, label)
    canvas.line(LEFT, y_of(capital), WIDTH - RIGHT, y_of(capital), CAPITAL, dash=6)
    points = [(x_of(t), y_of(v)) for t, v in enumerate(equity)]
    for (xa, ya), (xb, yb) in itertools.pairwise(points):
        canvas.line(xa, ya, xb, yb, EQUITY, width=2)
    if len(points) == 1:
        canvas.rect(points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2, EQUITY)
    _mark_trades(canvas, backtest, points)
    _drawdown_panel(canvas, backtest["drawdown"], x_of)
    _frame(canvas, LEFT, TOP, WIDTH - RIGHT, EQUITY_BOTTOM)
    dates = backtest["dates"]
    canvas.text(LEFT, DD_BOTTOM + 10, dates[0])
    canvas.text(WIDTH - RIGHT - len(dates[-1]) * 8, DD_BOTTOM + 10, dates[-1])
    return canvas.png()


def _mark_trades(canvas: Canvas, backtest: dict[str, Any], points: list[tuple[int, int]]) -> None:
    index = {date: t for t, date in enumerate(backtest["dates"])}
    for trade in backtest["trades"]:
        entry = index.get(trade["entry_date"])
        if entry is not None:
            x, y = points[entry]
            canvas.triangle(x, y + 4, 9, BUY if trade["side"] == "long" else SELL, up=True)
        exit_at = index.get(trade["exit_date"]) if trade.get("exit_date") else None
        if exit_at is not None:
            x, y = points[exit_at]
            canvas.triangle(x, y - 4, 9, SELL if trade["side"] == "long" else BUY, up=False)


def _drawdown_panel(canvas: Canvas, drawdown: list[float], x_of: Callable[[int], int]) -> None:
    deepest = max(drawdown, default=0.0)
    scale = deepest if deepest > 0 else 1.0
    for t, depth in enumerate(drawdown):
        if depth > 0:
            x0 = x_of(t)
            x1 = max(x0, x_of(t + 1) - 1) if t + 1 < len(drawdown) else x0  # a bar as wide as the day
            canvas.rect(x0, DD_TOP, x1, DD_TOP + round(depth / scale * (DD_BOTTOM - DD_TOP)), DRAWDOWN)
    _frame(canvas, LEFT, DD_TOP, WIDTH - RIGHT, DD_BOTTOM)
    canvas.text(LEFT - 8 - 2 * 8, DD_TOP - 2, "0%")
    label = f"-{deepest * 100:.1f}%"
    canvas.text(LEFT - 8 - len(label) * 8, DD_BOTTOM - 10, label)


def _frame(canvas: Canvas, x0: int, y0: int, x1: int, y1: int) -> None:
    for xa, ya, xb, yb in ((x0, y0, x1, y0), (x0, y1, x1, y1), (x0, y0, x0, y1), (x1, y0, x1, y1)):
        canvas.line(xa, ya, xb, yb, FRAME)


def _x_scale(count: int) -> Callable[[int], int]:
    span = WIDTH - RIGHT - LEFT - 8

    def x_of(t: int) -> int:
        return LEFT + 4 + (round(t / (count - 1) * span) if count > 1 else span // 2)

    return x_of


def _padded_range(values: Iterable[float]) -> tuple[float, float]:
    """The values' range with 5 % room on each side (1 % of the level when they are all equal)."""
    values = list(values)
    low, high = min(values), max(values)
    pad = (high - low) * 0.05 or abs(high) * 0.01 or 1.0
    return low - pad, high + pad


def _ticks(low: float, high: float) -> list[float]:
    """Round values between low and high for grid lines: steps of 1, 2 or 5 times a power of ten."""
    raw = (high - low) / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) // step) + 1)]


def _money(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


# --- the report -----------------------------------------------------------------------------------


def pct(value: float | None, signed: bool = True) -> str:
    """A fraction as a percentage with two decimals, or 'n/a'."""
    return "n/a" if value is None else (f"{value * 100:+.2f}%" if signed else f"{value * 100:.2f}%")


def number(value: float | None, decimals: int = 2) -> str:
    """A number with thousands separators, or 'n/a'."""
    return "n/a" if value is None else f"{value:,.{decimals}f}"


def summary_rows(backtest: dict[str, Any]) -> list[tuple[str, str]]:
    """The key figures as (label, value) rows; an undefined figure gives its reason."""
    m = backtest["metrics"]
    notes = m.get("notes", {})

    def why(key: str, text: str) -> str:
        return f"n/a ({notes[key]})" if key in notes and text == "n/a" else text

    drawdown = pct(m["max_drawdown"], signed=False)
    if m.get("max_drawdown_peak_date"):
        drawdown += f" ({m['max_drawdown_peak_date']} to {m['max_drawdown_trough_date']})"
    return [
        ("Period", f"{backtest['dates'][0]} to {backtest['dates'][-1]} ({m['days']} days)"),
        ("Initial capital", number(m["initial_capital"])),
        ("Final equity", number(m["final_equity"])),
        ("Total return", pct(m["total_return"])),
        ("Annualised return", why("annualised_return", pct(m["annualised_return"]))),
        ("Maximum drawdown", drawdown),
        ("Volatility (annualised)", why("volatility", pct(m["volatility"], signed=False))),
        ("Sharpe ratio", why("sharpe", number(m["sharpe"]))),
        ("Trades", f"{m['trades']} ({m['closed_trades']} closed)"),
        ("Win rate", why("win_rate", pct(m["win_rate"], signed=False))),
        ("Fees paid", number(m["fees_paid"])),
        ("Slippage cost", number(m["slippage_cost"])),
    ]


def trade_rows(backtest: dict[str, Any]) -> list[list[str]]:
    """One row per trade: number, side, entry, exit (or 'open'), quantity, P&L and return."""
    rows = []
    for n, t in enumerate(backtest["trades"], start=1):
        exit_text = f"open (marked at {number(t['marked_price'])})" if t["open"] else t["exit_date"]
        exit_price = "" if t["open"] else number(t["exit_price"])
        rows.append([
            str(n), t["side"], t["entry_date"], number(t["entry_price"]), exit_text, exit_price,
            number(t["quantity"], 4), number(t["pnl"]), pct(t["return"]),
        ])  # fmt: skip
    return rows


NO_TRADES = "No trades: the strategy never held a position."
TRADE_HEADER = ["#", "side", "entry", "entry price", "exit", "exit price", "quantity", "P&L", "return"]


def target_of(backtest: dict[str, Any]) -> dict[str, Any]:
    """What the strategy holds at the last close: the input of quant.propose_orders."""
    final = backtest["final"]
    return {
        "symbol": backtest.get("symbol", "SYN"),
        "date": final["date"],
        "price": final["close"],
        "position": final["position"],
    }


def title_of(backtest: dict[str, Any], title: str | None) -> str:
    """The report's title: the given one, or the symbol and the strategy."""
    if title:
        return title
    strategy = backtest.get("strategy") or {}
    windows = strategy.get("windows") or {}
    name = strategy.get("name")
    if name == "ma_crossover" and windows:
        name += f" {windows.get('fast')}/{windows.get('slow')}"
    return f"Back-test: {backtest.get('symbol', 'SYN')}" + (f", {name}" if name else "")


def markdown_report(backtest: dict[str, Any], title: str, chart_name: str = CHART_NAME) -> str:
    """The report as Markdown; the chart is referenced by its artifact name (download both together)."""
    lines = [f"# {title}", "", "| figure | value |", "| --- | --- |"]
    lines += [f"| {label} | {value} |" for label, value in summary_rows(backtest)]
    lines += ["", f"![Equity curve and drawdown]({chart_name})", "", "## Trades", ""]
    if backtest["trades"]:
        lines += ["| " + " | ".join(TRADE_HEADER) + " |", "|" + " --- |" * len(TRADE_HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in trade_rows(backtest)]
    else:
        lines.append(NO_TRADES)
    lines += ["", "## At the last close", "", _target_sentence(backtest), "", "## Parameters", ""]
    lines += [f"- {key}: {value}" for key, value in backtest["parameters"].items()]
    if backtest.get("ruined_on"):
        lines += ["", f"**The account was ruined on {backtest['ruined_on']}**: equity fell to zero or below."]
    return "\n".join(lines) + "\n"


def html_report(backtest: dict[str, Any], title: str, chart: bytes) -> str:
    """The report as one self-contained HTML page (the chart embedded as a data: URI)."""
    e = html.escape
    figures = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in summary_rows(backtest))
    trades = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in trade_rows(backtest))
    header = "".join(f"<th>{e(c)}</th>" for c in TRADE_HEADER)
    image = base64.b64encode(chart).decode()
    table = f"<table><tr>{header}</tr>{trades}</table>" if trades else f"<p>{NO_TRADES}</p>"
    parameters = "".join(f"<li>{e(str(k))}: {e(str(v))}</li>" for k, v in backtest["parameters"].items())
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{e(title)}</title></head><body>'
        f"<h1>{e(title)}</h1><table>{figures}</table>"
        f'<p><img alt="Equity curve and drawdown" src="data:image/png;base64,{image}"></p>'
        f"<h2>Trades</h2>"
        f"{table}<h2>At the last close</h2><p>{e(_target_sentence(backtest))}</p>"
        f"<h2>Parameters</h2><ul>{parameters}</ul></body></html>\n"
    )


def _target_sentence(backtest: dict[str, Any]) -> str:
    target = target_of(backtest)
    held = {1: "long", 0: "flat", -1: "short"}[target["position"]]
    close = number(target["price"])
    return f"At the close of {target['date']} the strategy is {held} {target['symbol']} (close {close})."


def one_line(backtest: dict[str, Any]) -> str:
    """The back-test in one line, for a task list or a notification."""
    m = backtest["metrics"]
    sharpe = "undefined" if m["sharpe"] is None else f"{m['sharpe']:.2f}"
    return (
        f"{backtest.get('symbol', 'SYN')}: total return {pct(m['total_return'])}, Sharpe {sharpe}, "
        f"max drawdown {pct(m['max_drawdown'], signed=False)}, {m['trades']} trade(s)"
    )


def render(backtest: dict[str, Any], title: str | None, fmt: str) -> tuple[bytes, str, str]:
    """The chart, the report's text and its title (CPU work: run it in a thread)."""
    chart = equity_chart(backtest)
    full_title = title_of(backtest, title)
    text = html_report(backtest, full_title, chart) if fmt == "html" else markdown_report(backtest, full_title)
    return chart, text, full_title


async def report(ctx: Any, input: dict[str, Any]) -> dict[str, Any]:
    """Store the report and the chart as artifacts; return where they are and the key figures."""
    backtest = input["backtest"]
    fmt = input.get("format", "markdown")
    _check(backtest)
    chart, text, title = await asyncio.to_thread(render, backtest, input.get("title"), fmt)
    name, content_type = REPORT_FILES[fmt]
    chart_ref = await ctx.put_artifact(CHART_NAME, chart, "image/png")
    report_ref = await ctx.put_artifact(name, text, content_type)
    ctx.log(f"stored {name} ({report_ref.size} bytes) and {CHART_NAME} ({chart_ref.size} bytes)")
    return {
        "title": title,
        "summary": one_line(backtest),
        "report": _ref(report_ref),
        "chart": _ref(chart_ref),
        "metrics": backtest["metrics"],
        "target": target_of(backtest),
    }


def _ref(ref: Any) -> dict[str, Any]:
    return {"name": ref.name, "sha256": ref.sha256, "size": ref.size, "content_type": ref.content_type}


def _check(backtest: dict[str, Any]) -> None:
    from common import InvalidInputError  # the worker's error classes (this module runs in the worker)

    n = len(backtest["dates"])
    for key in ("equity", "drawdown", "close", "position"):
        if len(backtest[key]) != n:
            raise InvalidInputError(f"{SKILL}: backtest.{key} has {len(backtest[key])} values for {n} dates")
