"""quant.propose_orders: the orders that would take a portfolio to the strategy's target position.

It only proposes: nothing leaves the cluster, and no order exists until a person approves this task
(its risk is `funds`, so the guard holds it) and quant.record_fills records the fills.

Input: `report` (quant.backtest_report's result; its `target` says the symbol, the last close and
the position -1, 0 or 1), `portfolio` (`{cash, positions: {symbol: quantity}}`; by default the
back-test's initial capital in cash and nothing held), `lot_size` and `max_order_value`.

The target quantity is position * (cash + held * close) / close, rounded toward zero to whole lots;
the order is the difference from what is held, at most `max_order_value` of notional. Order ids
derive from the order's content, so the same proposal always carries the same ids.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from typing import Any

SKILL = "quant.propose_orders"


class InputError(ValueError):
    """The request cannot be served; the message says why."""


def target_quantity(position: int, cash: float, held: float, price: float, lot_size: float) -> float:
    """How much to hold: `position` times the portfolio's value in the symbol, in whole lots toward zero."""
    value = cash + held * price
    if value <= 0:
        raise InputError(f"the portfolio is worth {value:.2f}: nothing to invest")
    lots = math.floor(abs(position) * value / price / lot_size)
    return math.copysign(lots * lot_size, position) if position else 0.0


def order_id(as_of: str, symbol: str, side: str, quantity: float) -> str:
    """A stable id from the order's content (a retried or re-run proposal keeps its ids)."""
    digest = hashlib.sha256(f"{as_of}|{symbol}|{side}|{quantity:.8f}".encode()).hexdigest()
    return f"ord-{digest[:16]}"


def propose(request: dict[str, Any]) -> dict[str, Any]:
    """The skill's whole result: the target, the portfolio, the orders and why."""
    report = request["report"]
    target = report["target"]
    symbol, price, position, as_of = target["symbol"], float(target["price"]), int(target["position"]), target["date"]
    default_cash = float(report.get("metrics", {}).get("initial_capital", 0.0))
    portfolio = request.get("portfolio") or {"cash": default_cash, "positions": {}}
    cash = float(portfolio.get("cash", 0.0))
    positions = {k: float(v) for k, v in (portfolio.get("positions") or {}).items()}
    lot_size = float(request.get("lot_size", 1))
    if price <= 0 or lot_size <= 0 or position not in (-1, 0, 1):
        raise InputError("the target needs a positive price and a position of -1, 0 or 1; lot_size must be positive")
    held = positions.get(symbol, 0.0)
    wanted = target_quantity(position, cash, held, price, lot_size)
    delta = wanted - held
    notes: list[str] = []
    cap = request.get("max_order_value")
    if cap is not None and abs(delta) * price > float(cap):
        capped = math.floor(float(cap) / price / lot_size) * lot_size
        notes.append(f"capped by max_order_value {float(cap):,.2f}: {abs(delta):g} wanted, {capped:g} proposed")
        delta = math.copysign(capped, delta)
    orders = []
    if delta:
        side = "buy" if delta > 0 else "sell"
        orders.append({
            "order_id": order_id(as_of, symbol, side, abs(delta)),
            "symbol": symbol,
            "side": side,
            "quantity": abs(delta),
            "order_type": "market",
            "reference_price": price,
            "estimated_notional": abs(delta) * price,
            "as_of": as_of,
            "reason": f"target {wanted:g} {symbol} (position {position:+d}), {held:g} held",
        })  # fmt: skip
    elif wanted == held:
        notes.append(f"already at the target: {held:g} {symbol} held")
    return {
        "status": "proposed",
        "as_of": as_of,
        "symbol": symbol,
        "target": {**target, "quantity": wanted},
        "portfolio": {"cash": cash, "positions": positions},
        "orders": orders,
        "notes": notes,
        "report": {key: report[key] for key in ("title", "summary", "report", "chart") if key in report},
    }


def main() -> int:
    """The command: request on stdin, the proposal on stdout; exit 2 with a reason on a bad request."""
    try:
        result = propose(json.load(sys.stdin))
    except (InputError, ValueError, TypeError, KeyError) as exc:
        print(f"{SKILL}: {exc}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, allow_nan=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
