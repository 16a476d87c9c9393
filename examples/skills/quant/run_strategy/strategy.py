"""quant.run_strategy: turns features (quant.compute_features' result, in `features`) into a daily
target position and the signals where it changes.

`ma_crossover`: long (1) while the fast moving average is above the slow one, flat (0) otherwise, or
short (-1) when `allow_short` and the fast one is below; on a day the two are equal the position is
kept. Flat while either average is still unknown. `buy_and_hold`: long from the first day.

The position of day t is decided from that day's close and held over the next day (quant.backtest
applies it to the return of day t+1), so no day's position looks at a later price.
"""

from __future__ import annotations

import json
import sys
from typing import Any

SKILL = "quant.run_strategy"
STRATEGIES = ("ma_crossover", "buy_and_hold")


class InputError(ValueError):
    """The request cannot be served; the message says why."""


def crossover_positions(fast: list[float | None], slow: list[float | None], allow_short: bool) -> list[int]:
    """The target position of each day from the two moving averages."""
    positions: list[int] = []
    held = 0
    for f, s in zip(fast, slow, strict=True):
        if f is None or s is None:
            held = 0
        elif f > s:
            held = 1
        elif f < s:
            held = -1 if allow_short else 0
        positions.append(held)
    return positions


def signals(dates: list[str], close: list[float], positions: list[int]) -> list[dict[str, Any]]:
    """One signal per change of position (from flat before the first day): buy when it rises."""
    out = []
    previous = 0
    for date, price, position in zip(dates, close, positions, strict=True):
        if position != previous:
            action = "buy" if position > previous else "sell"
            out.append({"date": date, "action": action, "from": previous, "to": position, "price": price})
            previous = position
    return out


def run(request: dict[str, Any]) -> dict[str, Any]:
    """The skill's whole result: the series, the daily target position and its signals."""
    features = request["features"]
    name = request.get("strategy", "ma_crossover")
    allow_short = bool(request.get("allow_short", False))
    dates, close = list(features["dates"]), [float(c) for c in features["close"]]
    if name == "ma_crossover":
        fast, slow = features.get("sma_fast"), features.get("sma_slow")
        if fast is None or slow is None:
            raise InputError("ma_crossover needs the features 'sma_fast' and 'sma_slow' (quant.compute_features)")
        if not len(dates) == len(close) == len(fast) == len(slow):
            raise InputError("features: dates, close, sma_fast and sma_slow must be equally long")
        positions = crossover_positions(fast, slow, allow_short)
    elif name == "buy_and_hold":
        if len(dates) != len(close):
            raise InputError("features: dates and close must be equally long")
        positions = [1] * len(close)
    else:
        raise InputError(f"'strategy' must be one of {', '.join(STRATEGIES)}, not {name!r}")
    return {
        "symbol": features.get("symbol", "SYN"),
        "dates": dates,
        "close": close,
        "position": positions,
        "signals": signals(dates, close, positions),
        "strategy": {"name": name, "allow_short": allow_short, "windows": features.get("windows", {})},
    }


def main() -> int:
    """The command: request on stdin, positions and signals on stdout; exit 2 on a bad request."""
    try:
        result = run(json.load(sys.stdin))
    except (InputError, ValueError, TypeError, KeyError) as exc:
        print(f"{SKILL}: {exc}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, allow_nan=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
