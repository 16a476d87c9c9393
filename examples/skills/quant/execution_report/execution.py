"""quant.execution_report: what was executed (quant.record_fills' result, in `fills`) as a Markdown
report stored as the artifact `execution_report.md`, and returned inline with the totals.

A Python runtime, because artifacts are stored through the worker (`ctx.put_artifact`).
"""

from __future__ import annotations

from typing import Any

SKILL = "quant.execution_report"
REPORT_NAME = "execution_report.md"


def money(value: float) -> str:
    """A number with thousands separators and two decimals."""
    return f"{value:,.2f}"


def portfolio_lines(portfolio: dict[str, Any]) -> list[str]:
    """The cash and each position as list items."""
    positions = portfolio.get("positions") or {}
    held = [f"- {symbol}: {quantity:g}" for symbol, quantity in sorted(positions.items()) if quantity]
    return [f"- cash: {money(float(portfolio.get('cash', 0.0)))}", *(held or ["- no positions"])]


def markdown(fills: dict[str, Any], title: str) -> str:
    """The execution report as Markdown."""
    totals = fills["totals"]
    lines = [
        f"# {title}",
        "",
        f"Mode: {fills['mode']} (no order was sent to a venue). As of {fills.get('as_of') or 'n/a'}.",
        "",
        f"{totals['fills']} fill(s) for {totals['orders']} order(s): notional {money(totals['notional'])}, "
        f"fees {money(totals['fees'])}, slippage {money(totals['slippage_cost'])}.",
        "",
        "## Fills",
        "",
    ]
    if fills["fills"]:
        lines += ["| fill | order | side | quantity | price | notional | fee |", "|" + " --- |" * 7]
        lines += [
            f"| {f['fill_id']} | {f['order_id']} | {f['side']} {f['symbol']} | {f['quantity']:g} | "
            f"{money(f['price'])} | {money(f['notional'])} | {money(f['fee'])} |"
            for f in fills["fills"]
        ]
    else:
        lines.append("Nothing was filled: there were no orders (the portfolio was at its target).")
    if fills["unfilled"]:
        lines += ["", "## Unfilled", ""]
        lines += [f"- {u['order_id']}: {u['quantity']:g}" for u in fills["unfilled"]]
    lines += ["", "## Portfolio before", "", *portfolio_lines(fills["portfolio_before"])]
    lines += ["", "## Portfolio after", "", *portfolio_lines(fills["portfolio_after"])]
    source = (fills.get("report") or {}).get("report")
    if source:
        lines += ["", f"Back-test report: artifact `{source['name']}` (sha256 {source['sha256'][:16]})."]
    return "\n".join(lines) + "\n"


async def execution_report(ctx: Any, input: dict[str, Any]) -> dict[str, Any]:
    """Store the report; return it with the totals and the portfolio after the fills."""
    fills = input["fills"]
    symbol = fills.get("symbol") or "portfolio"
    title = input.get("title") or f"Execution: {symbol}, {fills.get('as_of') or 'n/a'}"
    text = markdown(fills, title)
    ref = await ctx.put_artifact(REPORT_NAME, text, "text/markdown")
    totals = fills["totals"]
    return {
        "title": title,
        "summary": f"{totals['fills']} fill(s), notional {money(totals['notional'])}, fees {money(totals['fees'])}",
        "report": {"name": ref.name, "sha256": ref.sha256, "size": ref.size, "content_type": ref.content_type},
        "markdown": text,
        "totals": totals,
        "portfolio_after": fills["portfolio_after"],
    }
