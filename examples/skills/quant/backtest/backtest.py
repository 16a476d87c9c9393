"""quant.backtest: replays daily target positions (quant.run_strategy's result, in `signals`) over
the closes and measures the result: the equity curve, total and annualised return, maximum
drawdown, Sharpe ratio, and the list of trades, with fees and slippage.

The model, in full (docs/Quant_Tools.md has a worked example):
- The position of day t (-1, 0 or 1) is traded at day t's close and held until the next change.
  Before the first day the account is flat with `initial_capital` in cash.
- A change of position closes what is held (if anything), then opens the new side with a quantity
  of `position * equity / close`, fractional. Equity is cash plus quantity times close.
- Each fill is at the close moved against the trader by `slippage_bps` (buys higher, sells lower),
  and pays `fee_bps` of its notional in fees.
- Daily returns are equity_t / equity_{t-1} - 1 from the second day on; total return is
  final equity / initial capital - 1; annualised return is (1 + total)^(periods_per_year / N) - 1
  with N the number of daily returns; maximum drawdown is the largest fall from a running peak
  (the initial capital counts as the first peak), as a fraction of that peak; volatility is the
  sample standard deviation of the daily returns times sqrt(periods_per_year); Sharpe is the mean
  daily excess return (over risk_free_rate / periods_per_year) over that standard deviation, times
  sqrt(periods_per_year). A metric that is undefined is null, and `metrics.notes` says why.
- If equity falls to zero or below (a short can lose more than the capital), the back-test stops on
  that day: the account is ruined and later days are not replayed.

Reads JSON on stdin, prints the result as JSON on stdout; a bad request exits 2 with one line on
stderr.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

SKILL = "quant.backtest"
BPS = 10_000.0
# Below this a standard deviation of daily returns is rounding noise, not variation.
FLAT_STDEV = 1e-12


class InputError(ValueError):
    """The request cannot be served; the message says why."""


@dataclass(frozen=True, slots=True)
class Costs:
    """Trading costs, in basis points of a fill's notional."""

    fee_bps: float = 0.0
    slippage_bps: float = 0.0


@dataclass(slots=True)
class _Account:
    """What the replay holds between days."""

    cash: float
    quantity: float = 0.0
    side: int = 0
    fees: float = 0.0
    slippage: float = 0.0
    trades: list[dict[str, Any]] = field(default_factory=list)
    open_trade: dict[str, Any] | None = None


def replay(
    dates: list[str], close: list[float], position: list[int], initial_capital: float, costs: Costs
) -> tuple[list[float], _Account]:
    """The equity at each day's close after its trades, and the account at the end (it stops early,
    with a shorter curve, on the day equity is no longer positive)."""
    account = _Account(cash=initial_capital)
    equity: list[float] = []
    for t, (date, price, target) in enumerate(zip(dates, close, position, strict=True)):
        if target != account.side:
            if account.side != 0:
                _fill(account, t, date, price, -account.quantity, costs)
            if target != 0:
                _fill(account, t, date, price, target * (account.cash + account.quantity * price) / price, costs)
            account.side = target
        equity.append(account.cash + account.quantity * price)
        if equity[-1] <= 0:
            break
    return equity, account


def _fill(account: _Account, t: int, date: str, price: float, delta: float, costs: Costs) -> None:
    """Buy (delta > 0) or sell `delta` at `price` with slippage and fees; open or close a trade."""
    direction = 1.0 if delta > 0 else -1.0
    fill = price * (1.0 + direction * costs.slippage_bps / BPS)
    fee = abs(delta) * fill * costs.fee_bps / BPS
    account.cash -= delta * fill + fee
    account.quantity += delta
    account.fees += fee
    account.slippage += abs(delta) * abs(fill - price)
    trade = account.open_trade
    if trade is None:
        account.open_trade = {
            "side": "long" if delta > 0 else "short",
            "entry_date": date,
            "entry_index": t,
            "entry_price": fill,
            "quantity": abs(delta),
            "fees": fee,
        }
        return
    trade["fees"] += fee
    _settle(trade, date, t, fill, open_at_end=False)
    account.trades.append(trade)
    account.open_trade = None


def _settle(trade: dict[str, Any], date: str, t: int, price: float, *, open_at_end: bool) -> None:
    """Fill in a trade's exit (or, for one still open at the end, its value at the last close)."""
    sign = 1.0 if trade["side"] == "long" else -1.0
    pnl = sign * (price - trade["entry_price"]) * trade["quantity"] - trade["fees"]
    trade.update(
        exit_date=None if open_at_end else date,
        exit_price=None if open_at_end else price,
        marked_price=price if open_at_end else None,
        open=open_at_end,
        bars_held=t - trade.pop("entry_index"),
        pnl=pnl,
        **{"return": pnl / (trade["entry_price"] * trade["quantity"])},
    )


def daily_returns(equity: list[float]) -> list[float]:
    """equity_t / equity_{t-1} - 1 for t >= 1."""
    return [equity[t] / equity[t - 1] - 1.0 for t in range(1, len(equity))]


def drawdowns(equity: list[float], initial_capital: float) -> list[float]:
    """The fall from the running peak at each day, as a fraction of the peak (0 at a new high)."""
    peak = initial_capital
    out = []
    for value in equity:
        peak = max(peak, value)
        out.append(1.0 - value / peak)
    return out


def max_drawdown(dates: list[str], equity: list[float], initial_capital: float) -> dict[str, Any]:
    """The largest drawdown and the dates of its peak and trough (None when there was none)."""
    peak, peak_date = initial_capital, dates[0]
    worst: dict[str, Any] = {"max_drawdown": 0.0, "peak_date": None, "trough_date": None}
    for date, value in zip(dates, equity, strict=False):
        if value > peak:
            peak, peak_date = value, date
        depth = 1.0 - value / peak
        if depth > worst["max_drawdown"]:
            worst = {"max_drawdown": depth, "peak_date": peak_date, "trough_date": date}
    return worst


def sharpe_ratio(returns: list[float], periods_per_year: int, risk_free_rate: float) -> tuple[float | None, str | None]:
    """The annualised Sharpe ratio of daily returns, or None and why it is undefined."""
    if len(returns) < 2:
        return None, f"needs at least 2 daily returns to measure their variation, there are {len(returns)}"
    stdev = statistics.stdev(returns)
    if stdev < FLAT_STDEV:
        return None, "the daily returns do not vary (standard deviation 0): the ratio is undefined"
    excess = statistics.fmean(returns) - risk_free_rate / periods_per_year
    return excess / stdev * math.sqrt(periods_per_year), None


def annualised_return(total_return: float, periods: int, periods_per_year: int) -> tuple[float | None, str | None]:
    """(1 + total)^(periods_per_year / periods) - 1, or None and why it is undefined."""
    if periods < 1:
        return None, "needs at least one daily return (two days of prices)"
    if total_return <= -1.0:
        return None, "the equity fell to zero or below"
    try:
        return (1.0 + total_return) ** (periods_per_year / periods) - 1.0, None
    except OverflowError:
        return None, f"too large to represent after only {periods} daily returns"


def metrics(
    dates: list[str], equity: list[float], account: _Account, initial_capital: float, periods_per_year: int, rf: float
) -> dict[str, Any]:
    """Every figure the back-test reports; undefined ones are None with a reason in `notes`."""
    returns = daily_returns(equity)
    total = equity[-1] / initial_capital - 1.0
    notes: dict[str, str] = {}
    annualised, why = annualised_return(total, len(returns), periods_per_year)
    if why:
        notes["annualised_return"] = why
    sharpe, why = sharpe_ratio(returns, periods_per_year, rf)
    if why:
        notes["sharpe"] = why
    volatility = statistics.stdev(returns) * math.sqrt(periods_per_year) if len(returns) >= 2 else None
    if volatility is None:
        notes["volatility"] = "needs at least 2 daily returns"
    closed = [t for t in account.trades if not t["open"]]
    win_rate = sum(t["pnl"] > 0 for t in closed) / len(closed) if closed else None
    if win_rate is None:
        notes["win_rate"] = "no closed trades"
    drawdown = max_drawdown(dates, equity, initial_capital)
    return {
        "initial_capital": initial_capital,
        "final_equity": equity[-1],
        "total_return": total,
        "annualised_return": annualised,
        "max_drawdown": drawdown["max_drawdown"],
        "max_drawdown_peak_date": drawdown["peak_date"],
        "max_drawdown_trough_date": drawdown["trough_date"],
        "volatility": volatility,
        "sharpe": sharpe,
        "days": len(equity),
        "return_periods": len(returns),
        "trades": len(account.trades) + (account.open_trade is not None),
        "closed_trades": len(closed),
        "win_rate": win_rate,
        "fees_paid": account.fees,
        "slippage_cost": account.slippage,
        "notes": notes,
    }


def backtest(request: dict[str, Any]) -> dict[str, Any]:
    """The skill's whole result."""
    signals = request["signals"]
    dates, close = list(signals["dates"]), [float(c) for c in signals["close"]]
    position = [int(p) for p in signals["position"]]
    capital = float(request.get("initial_capital", 10_000.0))
    costs = Costs(float(request.get("fee_bps", 0.0)), float(request.get("slippage_bps", 0.0)))
    periods_per_year = int(request.get("periods_per_year", 252))
    rf = float(request.get("risk_free_rate", 0.0))
    _check(dates, close, position, capital, costs, periods_per_year)
    equity, account = replay(dates, close, position, capital, costs)
    days = len(equity)
    if account.open_trade is not None:
        _settle(account.open_trade, dates[days - 1], days - 1, close[days - 1], open_at_end=True)
    result = {
        "symbol": signals.get("symbol", "SYN"),
        "dates": dates[:days],
        "close": close[:days],
        "position": position[:days],
        "equity": equity,
        "daily_returns": [None, *daily_returns(equity)],
        "drawdown": drawdowns(equity, capital),
        "trades": account.trades + ([account.open_trade] if account.open_trade else []),
        "metrics": metrics(dates, equity, account, capital, periods_per_year, rf),
        "final": {
            "date": dates[days - 1],
            "close": close[days - 1],
            "position": position[days - 1] if equity[-1] > 0 else 0,
            "quantity": account.quantity,
            "cash": account.cash,
            "equity": equity[-1],
        },
        "parameters": {
            "initial_capital": capital,
            "fee_bps": costs.fee_bps,
            "slippage_bps": costs.slippage_bps,
            "periods_per_year": periods_per_year,
            "risk_free_rate": rf,
        },
        "strategy": signals.get("strategy", {}),
    }
    if days < len(dates):
        result["ruined_on"] = dates[days - 1]
    return result


def _check(
    dates: list[str], close: list[float], position: list[int], capital: float, costs: Costs, periods_per_year: int
) -> None:
    if not dates:
        raise InputError("signals: no days to replay")
    if not len(dates) == len(close) == len(position):
        raise InputError(f"signals: {len(dates)} dates, {len(close)} closes and {len(position)} positions differ")
    if any(not math.isfinite(c) or c <= 0 for c in close):
        raise InputError("signals: every close must be a positive number")
    if any(p not in (-1, 0, 1) for p in position):
        raise InputError("signals: every position must be -1, 0 or 1")
    if capital <= 0 or costs.fee_bps < 0 or costs.slippage_bps < 0 or periods_per_year < 1:
        raise InputError("initial_capital and periods_per_year must be positive, fee_bps and slippage_bps not negative")


def main() -> int:
    """The command: request on stdin, the back-test on stdout; exit 2 with a reason on a bad request."""
    try:
        result = backtest(json.load(sys.stdin))
    except (InputError, ValueError, TypeError, KeyError) as exc:
        print(f"{SKILL}: {exc}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, allow_nan=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
