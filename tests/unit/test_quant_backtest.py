"""quant.backtest's numbers against cases computed by hand, and its edge cases: no trades, constant
prices, a single day, a short, a ruined account, bad input."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from tests.skill_modules import load_skill_module, run_command_skill

bt = load_skill_module("quant/backtest", "backtest")

DATES = ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05", "2024-01-08", "2024-01-09"]
# The hand-computed case: long 1000 of capital from the first close to the fourth, then flat.
#
#   day  close   position  holding            equity   daily return          running peak  drawdown
#   0    100.0   1         buy 1000/100 = 10  1000     -                     1000          0
#   1    110.0   1         10                 1100     1100/1000 - 1 = +0.1  1100          0
#   2     99.0   1         10                  990      990/1100 - 1 = -0.1  1100          110/1100 = 0.1
#   3    108.9   0         sell 10 -> cash    1089     1089/990 - 1  = +0.1  1100          11/1100 = 0.01
#   4    100.0   0         0                  1089     0                     1100          0.01
#   5    105.0   0         0                  1089     0                     1100          0.01
#
# total return       = 1089 / 1000 - 1 = 0.089
# annualised return  = 1.089 ** (252 / 5) - 1            (5 daily returns)
# max drawdown       = 0.1, from the peak on day 1 to the trough on day 2
# mean daily return  = (0.1 - 0.1 + 0.1 + 0 + 0) / 5 = 0.02
# deviations         = 0.08, -0.12, 0.08, -0.02, -0.02; squares 0.0064 + 0.0144 + 0.0064 + 0.0004 + 0.0004 = 0.028
# sample variance    = 0.028 / 4 = 0.007; standard deviation = sqrt(0.007) = 0.0836660...
# Sharpe             = 0.02 / sqrt(0.007) * sqrt(252) = sqrt(0.0004 * 252 / 0.007) = sqrt(14.4) = 3.7947331...
# volatility         = sqrt(0.007) * sqrt(252) = sqrt(1.764) = 1.3281566...
# the one trade      = long 10 from 100 to 108.9: P&L 89, return 0.089, held 3 days
HAND = {"symbol": "HAND", "dates": DATES, "close": [100, 110, 99, 108.9, 100, 105], "position": [1, 1, 1, 0, 0, 0]}


def run(signals: dict[str, Any], **options: Any) -> dict[str, Any]:
    return bt.backtest({"signals": signals, **options})  # type: ignore[no-any-return]


def test_the_hand_computed_case() -> None:
    result = run(HAND, initial_capital=1000)
    assert result["equity"] == pytest.approx([1000, 1100, 990, 1089, 1089, 1089])
    assert result["daily_returns"][0] is None
    assert result["daily_returns"][1:] == pytest.approx([0.1, -0.1, 0.1, 0.0, 0.0])
    assert result["drawdown"] == pytest.approx([0, 0, 0.1, 0.01, 0.01, 0.01])
    m = result["metrics"]
    assert m["total_return"] == pytest.approx(0.089)
    assert m["annualised_return"] == pytest.approx(1.089 ** (252 / 5) - 1)
    assert m["max_drawdown"] == pytest.approx(0.1)
    assert (m["max_drawdown_peak_date"], m["max_drawdown_trough_date"]) == (DATES[1], DATES[2])
    assert m["sharpe"] == pytest.approx(math.sqrt(14.4))
    assert m["volatility"] == pytest.approx(math.sqrt(1.764))
    assert (m["days"], m["return_periods"], m["trades"], m["closed_trades"], m["win_rate"]) == (6, 5, 1, 1, 1.0)
    assert m["notes"] == {}
    [trade] = result["trades"]
    assert trade["side"] == "long" and (trade["entry_date"], trade["exit_date"]) == (DATES[0], DATES[3])
    assert (trade["entry_price"], trade["exit_price"], trade["quantity"]) == pytest.approx((100, 108.9, 10))
    assert (trade["pnl"], trade["return"]) == pytest.approx((89, 0.089))
    assert (trade["bars_held"], trade["open"]) == (3, False)
    final = result["final"]
    assert (final["date"], final["close"], final["position"], final["quantity"]) == (DATES[5], 105.0, 0, 0.0)
    assert (final["cash"], final["equity"]) == pytest.approx((1089, 1089))


def test_fees_are_charged_on_each_fill() -> None:
    # 10 bps: the buy of 10 at 100 pays 1000 * 0.001 = 1, so day 0 ends at 1000 - 1 = 999; days 1 and 2
    # move with the 10 held (1099, 989); the sale of 10 at 108.9 pays 1.089: 1088 - 1.089 = 1086.911.
    # Trade P&L = 89 - 1 - 1.089 = 86.911; total return 0.086911.
    result = run(HAND, initial_capital=1000, fee_bps=10)
    assert result["equity"] == pytest.approx([999, 1099, 989, 1086.911, 1086.911, 1086.911])
    assert result["metrics"]["total_return"] == pytest.approx(0.086911)
    assert result["metrics"]["fees_paid"] == pytest.approx(2.089)
    assert result["trades"][0]["pnl"] == pytest.approx(86.911)
    # The first return is measured from day 0's equity (after its fee): 1099 / 999 - 1.
    assert result["daily_returns"][1] == pytest.approx(1099 / 999 - 1)


def test_slippage_moves_each_fill_against_the_trader() -> None:
    # 50 bps: 10 bought at 100.5 (cash -5, equity 995), sold at 108.9 * 0.995 = 108.3555 (cash
    # -5 + 1083.555 = 1078.555). P&L = (108.3555 - 100.5) * 10 = 78.555; slippage cost 5 + 5.445 = 10.445.
    result = run(HAND, initial_capital=1000, slippage_bps=50)
    assert result["equity"] == pytest.approx([995, 1095, 985, 1078.555, 1078.555, 1078.555])
    trade = result["trades"][0]
    assert (trade["entry_price"], trade["exit_price"], trade["pnl"]) == pytest.approx((100.5, 108.3555, 78.555))
    assert trade["return"] == pytest.approx(78.555 / 1005)
    assert result["metrics"]["slippage_cost"] == pytest.approx(10.445)


def test_a_short_gains_when_the_price_falls() -> None:
    # Short 1000 / 100 = 10 on day 0 (cash 2000), price 90 on day 1: equity 2000 - 900 = 1100; covered
    # on day 2 at 95: equity 2000 - 950 = 1050.
    signals = {"dates": DATES[:3], "close": [100, 90, 95], "position": [-1, -1, 0]}
    result = run(signals, initial_capital=1000)
    assert result["equity"] == pytest.approx([1000, 1100, 1050])
    [trade] = result["trades"]
    assert trade["side"] == "short" and trade["pnl"] == pytest.approx(50) and trade["return"] == pytest.approx(0.05)


def test_a_flip_closes_the_trade_and_opens_the_other_side_on_the_same_close() -> None:
    # Long 10 at 100; at 110 the long is sold (equity 1100) and 1100 / 110 = 10 sold short; at 99 the
    # short has made 110: equity 1210.
    signals = {"dates": DATES[:3], "close": [100, 110, 99], "position": [1, -1, -1]}
    result = run(signals, initial_capital=1000)
    assert result["equity"] == pytest.approx([1000, 1100, 1210])
    long, short = result["trades"]
    assert (long["side"], long["exit_date"], long["pnl"]) == ("long", DATES[1], pytest.approx(100))
    assert (short["side"], short["open"], short["exit_date"], short["marked_price"]) == ("short", True, None, 99)
    assert short["pnl"] == pytest.approx(110) and result["metrics"]["closed_trades"] == 1


def test_an_open_trade_is_listed_marked_at_the_last_close() -> None:
    signals = {"dates": DATES[:3], "close": [100, 100, 120], "position": [0, 1, 1]}
    result = run(signals, initial_capital=1000)
    [trade] = result["trades"]
    assert trade["open"] and trade["exit_price"] is None and trade["pnl"] == pytest.approx(200)
    assert result["metrics"]["win_rate"] is None and result["metrics"]["notes"]["win_rate"] == "no closed trades"


def test_no_trades_leaves_equity_flat_and_sharpe_undefined_with_a_reason() -> None:
    signals = {"dates": DATES, "close": [100, 110, 99, 108.9, 100, 105], "position": [0] * 6}
    result = run(signals, initial_capital=1000)
    assert result["equity"] == [1000.0] * 6 and result["trades"] == []
    m = result["metrics"]
    assert (m["total_return"], m["annualised_return"], m["max_drawdown"], m["volatility"]) == (0.0, 0.0, 0.0, 0.0)
    assert m["sharpe"] is None and "do not vary" in m["notes"]["sharpe"]
    assert m["max_drawdown_peak_date"] is None


def test_constant_prices_give_zero_returns_and_an_undefined_sharpe() -> None:
    signals = {"dates": DATES, "close": [50.0] * 6, "position": [1] * 6}
    result = run(signals, initial_capital=1000)
    assert result["daily_returns"][1:] == [0.0] * 5
    m = result["metrics"]
    assert m["total_return"] == 0.0 and m["max_drawdown"] == 0.0
    assert m["sharpe"] is None and m["notes"]["sharpe"].startswith("the daily returns do not vary")
    assert result["trades"][0]["open"] and result["trades"][0]["pnl"] == 0.0


def test_a_single_day_has_no_returns_and_says_why() -> None:
    result = run({"dates": DATES[:1], "close": [100], "position": [1]}, initial_capital=1000, fee_bps=10)
    assert result["equity"] == pytest.approx([999])
    assert result["daily_returns"] == [None]
    m = result["metrics"]
    assert m["total_return"] == pytest.approx(-0.001)
    assert m["annualised_return"] is None and "at least one daily return" in m["notes"]["annualised_return"]
    assert m["sharpe"] is None
    assert m["notes"]["sharpe"] == "needs at least 2 daily returns to measure their variation, there are 0"
    assert m["volatility"] is None
    # The fee on day 0 is a fall from the initial capital: it counts as drawdown.
    assert m["max_drawdown"] == pytest.approx(0.001)


def test_two_days_give_one_return_annualised_but_no_sharpe() -> None:
    result = run({"dates": DATES[:2], "close": [100, 101], "position": [1, 1]}, initial_capital=1000)
    m = result["metrics"]
    assert m["total_return"] == pytest.approx(0.01)
    assert m["annualised_return"] == pytest.approx(1.01**252 - 1)
    assert m["sharpe"] is None and "there are 1" in m["notes"]["sharpe"]


def test_the_risk_free_rate_is_taken_from_the_mean_daily_return() -> None:
    # (0.02 - 0.0252 / 252) / sqrt(0.007) * sqrt(252) = 0.0199 / sqrt(0.007) * sqrt(252)
    result = run(HAND, initial_capital=1000, risk_free_rate=0.0252)
    assert result["metrics"]["sharpe"] == pytest.approx(0.0199 / math.sqrt(0.007) * math.sqrt(252))


def test_a_short_that_loses_everything_stops_the_backtest_on_that_day() -> None:
    # Short 10 at 100 with 1000: at 210 equity is 2000 - 2100 = -100, the account is ruined.
    signals = {"dates": DATES[:4], "close": [100, 150, 210, 90], "position": [-1, -1, -1, -1]}
    result = run(signals, initial_capital=1000)
    assert result["ruined_on"] == DATES[2] and len(result["equity"]) == 3
    assert result["equity"][-1] == pytest.approx(-100)
    m = result["metrics"]
    assert m["annualised_return"] is None and "fell to zero" in m["notes"]["annualised_return"]
    assert m["max_drawdown"] == pytest.approx(1.1)


@pytest.mark.parametrize(
    ("signals", "message"),
    [
        ({"dates": DATES[:2], "close": [100], "position": [0, 0]}, "2 dates, 1 closes and 2 positions differ"),
        ({"dates": DATES[:2], "close": [100, 0], "position": [0, 0]}, "every close must be a positive number"),
        ({"dates": DATES[:2], "close": [100, 101], "position": [0, 2]}, "every position must be -1, 0 or 1"),
        ({"dates": [], "close": [], "position": []}, "no days to replay"),
    ],
)
def test_inconsistent_signals_are_refused_with_the_reason(signals: dict[str, Any], message: str) -> None:
    with pytest.raises(bt.InputError, match=message):
        run(signals)


def test_the_program_prints_the_result_and_exits_2_with_one_line_on_a_bad_request() -> None:
    ok = run_command_skill("quant/backtest", "backtest.py", {"signals": HAND, "initial_capital": 1000})
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["metrics"]["sharpe"] == pytest.approx(math.sqrt(14.4))
    bad = run_command_skill("quant/backtest", "backtest.py", {"signals": {**HAND, "position": [1]}})
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == "quant.backtest: signals: 6 dates, 6 closes and 1 positions differ\n"
