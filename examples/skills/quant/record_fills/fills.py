"""quant.record_fills: paper fills of proposed orders (quant.propose_orders' result, in `proposal`).

Deterministic, no venue: each order fills `fill_ratio` of its quantity at its reference price moved
against it by `slippage_bps` (buys higher, sells lower) and pays `fee_bps` of the notional; what is
not filled is listed as unfilled. The portfolio after the fills is the one before, with the cash
paid or received and the quantities changed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

SKILL = "quant.record_fills"
BPS = 10_000.0


class InputError(ValueError):
    """The request cannot be served; the message says why."""


def paper_fill(order: dict[str, Any], fill_ratio: float, fee_bps: float, slippage_bps: float) -> dict[str, Any]:
    """The fill of one order."""
    direction = 1.0 if order["side"] == "buy" else -1.0
    reference = float(order["reference_price"])
    price = reference * (1.0 + direction * slippage_bps / BPS)
    quantity = float(order["quantity"]) * fill_ratio
    notional = quantity * price
    return {
        "fill_id": "fill-" + order["order_id"].removeprefix("ord-"),
        "order_id": order["order_id"],
        "symbol": order["symbol"],
        "side": order["side"],
        "quantity": quantity,
        "price": price,
        "notional": notional,
        "fee": notional * fee_bps / BPS,
        "slippage_cost": quantity * abs(price - reference),
        "as_of": order.get("as_of"),
    }


def apply_fills(portfolio: dict[str, Any], fills: list[dict[str, Any]]) -> dict[str, Any]:
    """The portfolio after the fills: cash pays for buys and fees and receives sales."""
    cash = float(portfolio.get("cash", 0.0))
    positions = {k: float(v) for k, v in (portfolio.get("positions") or {}).items()}
    for fill in fills:
        direction = 1.0 if fill["side"] == "buy" else -1.0
        cash -= direction * fill["notional"] + fill["fee"]
        positions[fill["symbol"]] = positions.get(fill["symbol"], 0.0) + direction * fill["quantity"]
    return {"cash": cash, "positions": positions}


def record(request: dict[str, Any]) -> dict[str, Any]:
    """The skill's whole result."""
    proposal = request["proposal"]
    fill_ratio = float(request.get("fill_ratio", 1.0))
    fee_bps = float(request.get("fee_bps", 0.0))
    slippage_bps = float(request.get("slippage_bps", 0.0))
    if not 0.0 <= fill_ratio <= 1.0 or fee_bps < 0 or slippage_bps < 0:
        raise InputError("fill_ratio must be between 0 and 1, fee_bps and slippage_bps not negative")
    orders = proposal["orders"]
    fills = [paper_fill(o, fill_ratio, fee_bps, slippage_bps) for o in orders if fill_ratio > 0]
    unfilled = [
        {"order_id": o["order_id"], "quantity": float(o["quantity"]) * (1.0 - fill_ratio)}
        for o in orders
        if fill_ratio < 1.0
    ]
    before = proposal["portfolio"]
    return {
        "mode": "paper",
        "as_of": proposal.get("as_of"),
        "symbol": proposal.get("symbol"),
        "orders": orders,
        "fills": fills,
        "unfilled": unfilled,
        "portfolio_before": before,
        "portfolio_after": apply_fills(before, fills),
        "totals": {
            "orders": len(orders),
            "fills": len(fills),
            "notional": sum(f["notional"] for f in fills),
            "fees": sum(f["fee"] for f in fills),
            "slippage_cost": sum(f["slippage_cost"] for f in fills),
        },
        "parameters": {"fill_ratio": fill_ratio, "fee_bps": fee_bps, "slippage_bps": slippage_bps},
        "report": proposal.get("report", {}),
    }


def main() -> int:
    """The command: request on stdin, the fills on stdout; exit 2 with a reason on a bad request."""
    try:
        result = record(json.load(sys.stdin))
    except (InputError, ValueError, TypeError, KeyError) as exc:
        print(f"{SKILL}: {exc}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, allow_nan=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
