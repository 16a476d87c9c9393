"""The quant skills' functions (examples/skills/quant/): deterministic prices, features and the
crossover computed by hand, orders and paper fills, and every skill's example input accepted by its
schema, with the program's output (for the command skills) accepted by its output schema."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from common.skills import load_manifest, validate_input, validate_output
from tests.skill_modules import SKILLS, example_input, load_skill_module, run_command_skill

fetch = load_skill_module("quant/fetch_market_data", "fetch")
features = load_skill_module("quant/compute_features", "features")
strategy = load_skill_module("quant/run_strategy", "strategy")
orders = load_skill_module("quant/propose_orders", "orders")
fills = load_skill_module("quant/record_fills", "fills")
execution = load_skill_module("quant/execution_report", "execution")

QUANT = sorted(p.parent.name for p in (SKILLS / "quant").glob("*/skill.yaml"))
COMMANDS = {
    "fetch_market_data": "fetch.py",
    "compute_features": "features.py",
    "run_strategy": "strategy.py",
    "backtest": "backtest.py",
    "propose_orders": "orders.py",
    "record_fills": "fills.py",
}


# --- fetch_market_data ------------------------------------------------------------------------------


def test_synthetic_prices_are_the_same_for_the_same_seed_and_differ_for_another() -> None:
    first = fetch.fetch({"seed": 7, "days": 300})
    assert fetch.fetch({"seed": 7, "days": 300}) == first
    assert fetch.fetch({"seed": 8, "days": 300})["close"] != first["close"]
    # Pinned: a change of generator (or of Python's random()) would silently change every back-test.
    assert first["close"][:5] == [100.0, 100.6644, 102.343, 101.2988, 100.8711]
    assert len(first["close"]) == len(first["dates"]) == 300 and min(first["close"]) > 0


def test_synthetic_prices_follow_the_asked_drift_and_volatility() -> None:
    closes = fetch.synthetic_closes(1, 1260, 100.0, 0.10, 0.30)
    logs = [math.log(b / a) for a, b in itertools.pairwise(closes)]
    # sigma_daily = 0.3 / sqrt(252) = 0.0189; 1,259 draws put the sample within a few percent of it.
    assert statistics.stdev(logs) * math.sqrt(252) == pytest.approx(0.30, rel=0.06)


def test_zero_volatility_gives_the_deterministic_drift_path() -> None:
    closes = fetch.synthetic_closes(3, 3, 100.0, 0.252, 0.0)  # 0.1 % a day
    assert closes == [100.0, round(100 * math.exp(0.001), 4), round(100 * math.exp(0.002), 4)]


def test_business_days_skip_weekends() -> None:
    import datetime

    friday = datetime.date(2024, 1, 5)
    assert fetch.business_days(friday, 3) == ["2024-01-05", "2024-01-08", "2024-01-09"]


def test_the_shipped_csv_and_csv_text_are_read_in_order_skipping_comments() -> None:
    shipped = fetch.fetch({"source": "csv", "symbol": "SAMPLE"})
    assert shipped["file"] == "sample_prices.csv" and len(shipped["dates"]) == 120
    assert shipped["dates"] == sorted(shipped["dates"]) and shipped["close"][0] == 48.0
    text = "# made up\nDate, Volume, Close\n2024-01-02,5,10.5\n\n2024-01-03,6,11\n"
    assert fetch.fetch({"source": "csv", "csv_text": text}) | {"symbol": "x"} == {
        "symbol": "x",
        "source": "csv",
        "dates": ["2024-01-02", "2024-01-03"],
        "close": [10.5, 11.0],
        "file": "csv_text",
    }


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"source": "csv", "csv_text": "day,price\n"}, "must name a 'date' and a 'close' column"),
        ({"source": "csv", "csv_text": "date,close\n2024-01-02,x\n"}, "line 2: expected an ISO date and a number"),
        ({"source": "csv", "csv_text": "date,close\n2024-01-02,-1\n"}, "line 2: the close must be a positive number"),
        ({"source": "csv", "csv_text": "date,close\n2024-01-03,1\n2024-01-02,1\n"}, "line 3: 2024-01-02 does not come"),
        ({"source": "csv", "file": "../../../etc/passwd.csv"}, "must name a CSV file shipped with the skill"),
        ({"days": 0}, "'days' must be between 1 and 1260"),
    ],
)
def test_bad_requests_are_refused_naming_the_problem(request_: dict[str, Any], message: str) -> None:
    with pytest.raises(fetch.InputError, match=message):
        fetch.fetch(request_)


# --- compute_features and run_strategy --------------------------------------------------------------


def test_features_by_hand() -> None:
    prices = {"symbol": "S", "dates": ["a", "b", "c", "d"], "close": [100.0, 110.0, 99.0, 108.9]}
    result = features.compute({"prices": prices, "fast_window": 2, "slow_window": 3, "vol_window": 2})
    assert result["returns"][0] is None and result["returns"][1:] == pytest.approx([0.1, -0.1, 0.1])
    assert result["sma_fast"] == [None, 105.0, 104.5, pytest.approx(103.95)]
    assert result["sma_slow"] == [None, None, 103.0, pytest.approx(105.9666667)]
    # Day 2: stdev(0.1, -0.1) = sqrt(0.02) = 0.141421..., annualised * sqrt(252).
    assert result["volatility"][:2] == [None, None]
    assert result["volatility"][2:] == pytest.approx([math.sqrt(0.02 * 252)] * 2)


def test_features_refuse_windows_in_the_wrong_order() -> None:
    prices = {"dates": ["a"], "close": [1.0]}
    with pytest.raises(features.InputError, match=r"fast_window \(5\) must be at least 1 and smaller"):
        features.compute({"prices": prices, "fast_window": 5, "slow_window": 5})


def test_the_crossover_is_long_while_fast_is_above_slow_and_keeps_the_position_on_a_tie() -> None:
    fast = [None, 1.0, 3.0, 2.0, 2.0, 1.0]
    slow = [None, 2.0, 2.0, 2.0, 1.0, 2.0]
    assert strategy.crossover_positions(fast, slow, allow_short=False) == [0, 0, 1, 1, 1, 0]
    assert strategy.crossover_positions(fast, slow, allow_short=True) == [0, -1, 1, 1, 1, -1]


def test_signals_mark_each_change_of_position() -> None:
    dates, close = ["a", "b", "c", "d"], [1.0, 2.0, 3.0, 4.0]
    assert strategy.signals(dates, close, [0, 1, -1, -1]) == [
        {"date": "b", "action": "buy", "from": 0, "to": 1, "price": 2.0},
        {"date": "c", "action": "sell", "from": 1, "to": -1, "price": 3.0},
    ]


def test_buy_and_hold_is_long_from_the_first_day() -> None:
    result = strategy.run({"features": {"dates": ["a", "b"], "close": [1.0, 2.0]}, "strategy": "buy_and_hold"})
    assert result["position"] == [1, 1] and result["signals"][0]["date"] == "a"


# --- propose_orders, record_fills, execution_report -------------------------------------------------


def report_with(position: int, price: float = 50.0) -> dict[str, Any]:
    return {"target": {"symbol": "S", "date": "2024-05-01", "price": price, "position": position}}


def test_orders_take_the_portfolio_to_the_target_in_whole_lots() -> None:
    # Worth 1000 + 4 * 50 = 1200; long: 1200 / 50 = 24 wanted, 4 held -> buy 20.
    proposal = orders.propose({"report": report_with(1), "portfolio": {"cash": 1000, "positions": {"S": 4}}})
    [order] = proposal["orders"]
    assert (order["side"], order["quantity"], order["estimated_notional"]) == ("buy", 20.0, 1000.0)
    assert proposal["target"]["quantity"] == 24.0 and proposal["status"] == "proposed"
    # Lots of 7: 24 / 7 -> 3 lots = 21 wanted -> buy 17. Flat: sell the 4 held. Short: -24 -> sell 28.
    lots = orders.propose({"report": report_with(1), "portfolio": {"cash": 1000, "positions": {"S": 4}}, "lot_size": 7})
    assert lots["orders"][0]["quantity"] == 17.0
    flat = orders.propose({"report": report_with(0), "portfolio": {"cash": 1000, "positions": {"S": 4}}})
    assert (flat["orders"][0]["side"], flat["orders"][0]["quantity"]) == ("sell", 4.0)
    short = orders.propose({"report": report_with(-1), "portfolio": {"cash": 1000, "positions": {"S": 4}}})
    assert (short["orders"][0]["side"], short["orders"][0]["quantity"]) == ("sell", 28.0)


def test_order_ids_are_stable_and_an_order_at_the_target_is_not_proposed() -> None:
    request = {"report": report_with(1), "portfolio": {"cash": 1000}}
    assert orders.propose(request)["orders"][0]["order_id"] == orders.propose(request)["orders"][0]["order_id"]
    at_target = orders.propose({"report": report_with(1), "portfolio": {"cash": 0, "positions": {"S": 10}}})
    assert at_target["orders"] == [] and at_target["notes"] == ["already at the target: 10 S held"]


def test_max_order_value_caps_the_order() -> None:
    capped = orders.propose({"report": report_with(1), "portfolio": {"cash": 1000}, "max_order_value": 330})
    assert capped["orders"][0]["quantity"] == 6.0  # 330 / 50 = 6.6 -> 6
    assert capped["notes"] == ["capped by max_order_value 330.00: 20 wanted, 6 proposed"]


def test_without_a_portfolio_the_backtest_capital_is_the_cash() -> None:
    report = {**report_with(1), "metrics": {"initial_capital": 500}}
    assert orders.propose({"report": report})["orders"][0]["quantity"] == 10.0


def test_paper_fills_by_hand() -> None:
    proposal = orders.propose({"report": report_with(1), "portfolio": {"cash": 1000, "positions": {"S": 4}}})
    # Buy 20 at 50 * (1 + 0.001) = 50.05: notional 1001, fee 2 bps = 0.2002, slippage 20 * 0.05 = 1.
    # Cash 1000 - 1001 - 0.2002 = -1.2002; 24 S held.
    result = fills.record({"proposal": proposal, "slippage_bps": 10, "fee_bps": 2})
    [fill] = result["fills"]
    assert (fill["price"], fill["notional"], fill["fee"], fill["slippage_cost"]) == pytest.approx(
        (50.05, 1001.0, 0.2002, 1.0)
    )
    assert fill["fill_id"] == "fill-" + proposal["orders"][0]["order_id"][4:]
    assert result["portfolio_after"] == {"cash": pytest.approx(-1.2002), "positions": {"S": 24.0}}
    assert result["unfilled"] == [] and result["totals"]["fills"] == 1


def test_a_partial_fill_lists_what_was_not_filled_and_a_sale_receives_cash() -> None:
    proposal = orders.propose({"report": report_with(0), "portfolio": {"cash": 0, "positions": {"S": 10}}})
    result = fills.record({"proposal": proposal, "fill_ratio": 0.5, "slippage_bps": 100})
    # Sell 5 of 10 at 50 * 0.99 = 49.5: cash 247.5, 5 S left; 5 unfilled.
    assert result["portfolio_after"] == {"cash": pytest.approx(247.5), "positions": {"S": 5.0}}
    assert result["unfilled"] == [{"order_id": proposal["orders"][0]["order_id"], "quantity": 5.0}]


def test_the_execution_report_lists_fills_and_portfolios() -> None:
    proposal = orders.propose({"report": report_with(1), "portfolio": {"cash": 1000}})
    text = execution.markdown(fills.record({"proposal": proposal}), "Execution")
    assert text.startswith("# Execution\n\nMode: paper (no order was sent to a venue). As of 2024-05-01.")
    assert "| buy S | 20 | 50.00 | 1,000.00 | 0.00 |" in text
    assert text.endswith("## Portfolio after\n\n- cash: 0.00\n- S: 20\n")
    empty = execution.markdown(fills.record({"proposal": {**proposal, "orders": []}}), "Execution")
    assert "Nothing was filled: there were no orders" in empty


# --- every skill's example ----------------------------------------------------------------------------


@pytest.mark.parametrize("folder", QUANT)
def test_each_example_input_is_accepted_by_its_skill_schema(folder: str) -> None:
    manifest = load_manifest(SKILLS / "quant" / folder)
    assert manifest.name == f"quant.{folder}"
    validate_input(manifest, example_input(f"quant/{folder}"))


@pytest.mark.parametrize("folder", sorted(COMMANDS))
def test_each_command_skill_program_answers_its_example_within_its_output_schema(folder: str) -> None:
    manifest = load_manifest(SKILLS / "quant" / folder)
    assert manifest.runtime.command == ["python3", COMMANDS[folder]]
    done = run_command_skill(f"quant/{folder}", COMMANDS[folder], example_input(f"quant/{folder}"))
    assert done.returncode == 0, done.stderr
    validate_output(manifest, json.loads(done.stdout))


def test_the_quant_folders_hold_only_what_the_skills_need() -> None:
    """Each folder installs on its own: no module of one skill may import another's."""
    for folder in QUANT:
        for module in (SKILLS / "quant" / folder).glob("*.py"):
            source = Path(module).read_text()
            assert "sys.path" not in source and "from examples" not in source, module
