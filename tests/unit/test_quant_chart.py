"""quant.backtest_report's PNG writer and chart, and its Markdown and HTML reports.

The PNG is checked the way a decoder reads it: signature, chunks with their CRCs, IHDR, the IDAT
stream inflated with zlib into rows of the right length, each with filter 0; then the pixels are
looked at. Pillow, when installed (the dev extra), opens it as an independent decoder.
"""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import pytest

from tests.skill_modules import load_skill_module

report = load_skill_module("quant/backtest_report", "report")
bt = load_skill_module("quant/backtest", "backtest")


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, data) of each chunk; asserts the signature, each length and each CRC."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    found, at = [], 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, data = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", png[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF, f"bad CRC in {kind!r}"
        found.append((kind, data))
        at += 12 + length
    assert at == len(png), "trailing bytes after the last chunk"
    return found


def decode(png: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the RGB rows of an 8-bit truecolour PNG written with filter 0."""
    found = chunks(png)
    assert next(k for k, _ in found) == b"IHDR" and found[-1] == (b"IEND", b"")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", found[0][1])
    assert (depth, colour, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(d for k, d in found if k == b"IDAT"))
    stride = width * 3 + 1
    assert len(raw) == height * stride
    rows = [raw[y * stride : (y + 1) * stride] for y in range(height)]
    assert all(row[0] == 0 for row in rows)
    return width, height, [row[1:] for row in rows]


def pixel(rows: list[bytes], x: int, y: int) -> tuple[int, ...]:
    return tuple(rows[y][x * 3 : x * 3 + 3])


def test_encode_png_round_trips_the_pixels() -> None:
    canvas = report.Canvas(3, 2)
    canvas.set(0, 0, (255, 0, 0))
    canvas.set(2, 1, (0, 0, 255))
    width, height, rows = decode(canvas.png())
    assert (width, height) == (3, 2)
    assert pixel(rows, 0, 0) == (255, 0, 0) and pixel(rows, 2, 1) == (0, 0, 255) and pixel(rows, 1, 0) == (255,) * 3


def test_encode_png_refuses_a_buffer_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="2x2 RGB needs 12 bytes, got 3"):
        report.encode_png(2, 2, b"abc")


def hand_backtest(**options: Any) -> dict[str, Any]:
    signals = {
        "symbol": "HAND",
        "dates": ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05", "2024-01-08", "2024-01-09"],
        "close": [100, 110, 99, 108.9, 100, 105],
        "position": [1, 1, 1, 0, 0, 0],
    }
    return bt.backtest({"signals": signals, "initial_capital": 1000, **options})  # type: ignore[no-any-return]


def test_the_equity_chart_is_a_valid_png_with_the_curve_and_the_trade_markers_drawn() -> None:
    width, height, rows = decode(report.equity_chart(hand_backtest()))
    assert (width, height) == (report.WIDTH, report.HEIGHT)
    colours = {pixel(rows, x, y) for y in range(height) for x in range(width)}
    assert {report.EQUITY, report.BUY, report.SELL, report.DRAWDOWN, report.CAPITAL} <= colours


@pytest.mark.parametrize(
    "signals",
    [
        {"dates": ["2024-01-02"], "close": [100], "position": [0]},  # a single day
        {"dates": ["2024-01-02", "2024-01-03", "2024-01-04"], "close": [5, 5, 5], "position": [1, 1, 1]},  # flat
    ],
)
def test_degenerate_curves_still_make_a_valid_chart(signals: dict[str, Any]) -> None:
    width, height, _ = decode(report.equity_chart(bt.backtest({"signals": signals})))
    assert (width, height) == (report.WIDTH, report.HEIGHT)


def test_pillow_opens_the_chart_when_it_is_installed() -> None:
    image_module = pytest.importorskip("PIL.Image", reason="Pillow is in the dev extra; not installed here")
    import io

    with image_module.open(io.BytesIO(report.equity_chart(hand_backtest()))) as image:
        image.load()  # decodes every pixel, checking the zlib stream and the CRCs
        assert (image.format, image.size, image.mode) == ("PNG", (report.WIDTH, report.HEIGHT), "RGB")
        assert image.getpixel((0, 0)) == report.WHITE


def test_the_markdown_report_gives_the_figures_the_trades_and_the_chart_by_name() -> None:
    backtest = hand_backtest()
    text = report.markdown_report(backtest, report.title_of(backtest, None))
    assert text.startswith("# Back-test: HAND\n\n| figure | value |")
    for line in (
        "| Total return | +8.90% |",
        "| Maximum drawdown | 10.00% (2024-01-03 to 2024-01-04) |",
        "| Sharpe ratio | 3.79 |",
        "![Equity curve and drawdown](equity_curve.png)",
        "| 1 | long | 2024-01-02 | 100.00 | 2024-01-05 | 108.90 | 10.0000 | 89.00 | +8.90% |",
        "At the close of 2024-01-09 the strategy is flat HAND (close 105.00).",
    ):
        assert line in text


def test_an_undefined_sharpe_is_reported_with_its_reason() -> None:
    flat = bt.backtest({"signals": {"dates": ["a", "b", "c"], "close": [5, 5, 5], "position": [0, 0, 0]}})
    rows = dict(report.summary_rows(flat))
    assert rows["Sharpe ratio"].startswith("n/a (the daily returns do not vary")
    assert "No trades: the strategy never held a position." in report.markdown_report(flat, "t")
    assert report.one_line(flat) == "SYN: total return +0.00%, Sharpe undefined, max drawdown 0.00%, 0 trade(s)"


def test_the_html_report_embeds_the_chart_and_escapes_text() -> None:
    backtest = hand_backtest()
    chart = report.equity_chart(backtest)
    page = report.html_report(backtest, "A <b>title</b>", chart)
    assert "<title>A &lt;b&gt;title&lt;/b&gt;</title>" in page
    embedded = page.split('src="data:image/png;base64,', 1)[1].split('"', 1)[0]
    assert base64.b64decode(embedded) == chart


def test_the_target_is_the_last_close_and_position() -> None:
    assert report.target_of(hand_backtest()) == {"symbol": "HAND", "date": "2024-01-09", "price": 105.0, "position": 0}
