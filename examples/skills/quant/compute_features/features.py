"""quant.compute_features: daily returns, a fast and a slow simple moving average and the rolling
annualised volatility of a price series (quant.fetch_market_data's result, in `prices`).

Reads `{prices, fast_window?, slow_window?, vol_window?}` as JSON on stdin, prints the series with
its features on stdout. A value that needs more history than there is (the first day's return, a
moving average before its window is full) is null, so every list is as long as `dates`.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from typing import Any

SKILL = "quant.compute_features"
TRADING_DAYS_PER_YEAR = 252


class InputError(ValueError):
    """The request cannot be served; the message says why."""


def simple_returns(close: list[float]) -> list[float | None]:
    """r_t = close_t / close_{t-1} - 1; None on the first day."""
    return [None] + [close[t] / close[t - 1] - 1.0 for t in range(1, len(close))]


def moving_average(values: list[float], window: int) -> list[float | None]:
    """The mean of the last `window` values at each day; None until `window` values exist."""
    return [math.fsum(values[t - window + 1 : t + 1]) / window if t >= window - 1 else None for t in range(len(values))]


def rolling_volatility(returns: list[float | None], window: int) -> list[float | None]:
    """The sample standard deviation of the last `window` returns, annualised by sqrt(252); None
    until `window` returns exist (day `window`, since the first day has none)."""
    out: list[float | None] = []
    for t in range(len(returns)):
        recent = returns[t - window + 1 : t + 1] if t >= window else []
        known = [r for r in recent if r is not None]
        out.append(statistics.stdev(known) * math.sqrt(TRADING_DAYS_PER_YEAR) if len(known) == window else None)
    return out


def compute(request: dict[str, Any]) -> dict[str, Any]:
    """The skill's whole result: the series, its features and the windows used."""
    prices = request["prices"]
    dates, close = list(prices["dates"]), [float(c) for c in prices["close"]]
    fast = int(request.get("fast_window", 10))
    slow = int(request.get("slow_window", 30))
    vol = int(request.get("vol_window", 20))
    if len(dates) != len(close):
        raise InputError(f"prices has {len(dates)} dates but {len(close)} closes")
    if not 1 <= fast < slow:
        raise InputError(f"fast_window ({fast}) must be at least 1 and smaller than slow_window ({slow})")
    if vol < 2:
        raise InputError(f"vol_window must be at least 2 (a standard deviation needs two returns), not {vol}")
    if any(not math.isfinite(c) or c <= 0 for c in close):
        raise InputError("every close must be a positive number")
    returns = simple_returns(close)
    return {
        "symbol": prices.get("symbol", "SYN"),
        "dates": dates,
        "close": close,
        "returns": returns,
        "sma_fast": moving_average(close, fast),
        "sma_slow": moving_average(close, slow),
        "volatility": rolling_volatility(returns, vol),
        "windows": {"fast": fast, "slow": slow, "volatility": vol},
    }


def main() -> int:
    """The command: request on stdin, features on stdout; exit 2 with a reason on a bad request."""
    try:
        result = compute(json.load(sys.stdin))
    except (InputError, ValueError, TypeError, KeyError) as exc:
        print(f"{SKILL}: {exc}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, allow_nan=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
