"""quant.fetch_market_data: daily closing prices of one symbol, with no network.

Synthetic (the default): a geometric random walk from a seed, the same series for the same request
on any machine. Or CSV: a file shipped in this folder (`sample_prices.csv`) or CSV text in the input.
Reads the request as JSON on stdin, prints `{symbol, source, dates, close, ...}` as JSON on stdout;
a request it cannot serve exits 2 with one line on stderr (the task fails, it is not retried).
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import random
import re
import sys
from pathlib import Path
from typing import Any

SKILL = "quant.fetch_market_data"
FOLDER = Path(__file__).resolve().parent
TRADING_DAYS_PER_YEAR = 252
MAX_DAYS = 1260  # five years of days: the series and its features stay well inside one task message
FILE_NAME = re.compile(r"[A-Za-z0-9_.-]+\.csv")


class InputError(ValueError):
    """The request cannot be served; the message says why."""


def business_days(start: datetime.date, count: int) -> list[str]:
    """`count` ISO dates from `start` on, Mondays to Fridays (no holiday calendar)."""
    days: list[str] = []
    day = start
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day.isoformat())
        day += datetime.timedelta(days=1)
    return days


def standard_normals(seed: int, count: int) -> list[float]:
    """`count` N(0, 1) draws from `seed`, by Box-Muller on `random.Random(seed).random()`.

    `random()` is the one method whose sequence Python promises to keep across versions for an int
    seed (`gauss` and `normalvariate` carry no such promise), so the series never changes under us.
    """
    rng = random.Random(seed)
    draws = []
    for _ in range(count):
        u1 = 1.0 - rng.random()  # in (0, 1]: log(u1) is finite
        u2 = rng.random()
        draws.append(math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2))
    return draws


def synthetic_closes(
    seed: int, days: int, start_price: float, annual_drift: float, annual_volatility: float
) -> list[float]:
    """A geometric random walk: P_0 = start_price, P_t = P_{t-1} * exp(mu - sigma^2 / 2 + sigma * z_t)
    with mu and sigma the daily drift and volatility (annual / 252 and annual / sqrt(252)).

    Prices are rounded to 4 decimals (as quoted), and never below 0.0001.
    """
    mu = annual_drift / TRADING_DAYS_PER_YEAR
    sigma = annual_volatility / math.sqrt(TRADING_DAYS_PER_YEAR)
    price = start_price
    closes = [round(price, 4)]
    for z in standard_normals(seed, days - 1):
        price *= math.exp(mu - sigma * sigma / 2.0 + sigma * z)
        closes.append(max(round(price, 4), 0.0001))
    return closes


def parse_csv(text: str, source: str) -> tuple[list[str], list[float]]:
    """Dates and closes from CSV text with a header naming `date` and `close` (other columns are
    ignored); dates must be ISO (YYYY-MM-DD) and strictly increasing, closes positive numbers.
    Lines starting with `#` are comments."""
    lines = [line if not line.lstrip().startswith("#") else "" for line in text.splitlines()]
    reader = csv.reader(io.StringIO("\n".join(lines)))
    header: list[str] = []
    while not any(header):  # the first line that is not blank or a comment
        row = next(reader, None)
        if row is None:
            break
        header = [name.strip().lower() for name in row]
    if "date" not in header or "close" not in header:
        raise InputError(f"{source}: the header must name a 'date' and a 'close' column, it has {header}")
    date_col, close_col = header.index("date"), header.index("close")
    dates: list[str] = []
    closes: list[float] = []
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        try:
            day = datetime.date.fromisoformat(row[date_col].strip())
            close = float(row[close_col])
        except (IndexError, ValueError):
            raise InputError(f"{source}, line {line}: expected an ISO date and a number, got {row}") from None
        if not math.isfinite(close) or close <= 0:
            raise InputError(f"{source}, line {line}: the close must be a positive number, got {close}")
        if dates and day.isoformat() <= dates[-1]:
            raise InputError(f"{source}, line {line}: {day} does not come after {dates[-1]}")
        dates.append(day.isoformat())
        closes.append(close)
    if not dates:
        raise InputError(f"{source}: no rows of prices")
    return dates, closes


def fetch(request: dict[str, Any]) -> dict[str, Any]:
    """The price series the request asks for (the skill's whole result)."""
    source = request.get("source", "synthetic")
    symbol = request.get("symbol", "SYN")
    if source == "synthetic":
        return _synthetic(request, symbol)
    if source == "csv":
        return _from_csv(request, symbol)
    raise InputError(f"'source' must be 'synthetic' or 'csv', not {source!r}")


def _synthetic(request: dict[str, Any], symbol: str) -> dict[str, Any]:
    seed = int(request.get("seed", 42))
    days = int(request.get("days", 250))
    start_price = float(request.get("start_price", 100.0))
    drift = float(request.get("annual_drift", 0.05))
    volatility = float(request.get("annual_volatility", 0.2))
    if not 1 <= days <= MAX_DAYS:
        raise InputError(f"'days' must be between 1 and {MAX_DAYS}, not {days}")
    if start_price <= 0 or volatility < 0:
        raise InputError("'start_price' must be positive and 'annual_volatility' not negative")
    start = datetime.date.fromisoformat(request.get("start_date", "2024-01-02"))
    return {
        "symbol": symbol,
        "source": "synthetic",
        "dates": business_days(start, days),
        "close": synthetic_closes(seed, days, start_price, drift, volatility),
        "generator": {
            "model": "geometric random walk",
            "seed": seed,
            "start_price": start_price,
            "annual_drift": drift,
            "annual_volatility": volatility,
        },
    }


def _from_csv(request: dict[str, Any], symbol: str) -> dict[str, Any]:
    if "csv_text" in request:
        text, where = request["csv_text"], "csv_text"
    else:
        name = request.get("file", "sample_prices.csv")
        if not FILE_NAME.fullmatch(name) or not (FOLDER / name).is_file():
            shipped = sorted(p.name for p in FOLDER.glob("*.csv"))
            raise InputError(f"'file' must name a CSV file shipped with the skill ({', '.join(shipped)}), not {name!r}")
        text, where = (FOLDER / name).read_text(encoding="utf-8"), name
    dates, closes = parse_csv(text, where)
    if len(dates) > MAX_DAYS:
        dates, closes = dates[-MAX_DAYS:], closes[-MAX_DAYS:]
    return {"symbol": symbol, "source": "csv", "dates": dates, "close": closes, "file": where}


def main() -> int:
    """The command: request on stdin, series on stdout; exit 2 with a reason on a bad request."""
    try:
        result = fetch(json.load(sys.stdin))
    except (InputError, ValueError, TypeError) as exc:
        print(f"{SKILL}: {exc}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, allow_nan=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
