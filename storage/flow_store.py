"""Flow control's tables: `flow_limits` (the limit of each key) and `flow_usage` (usage by hour).

Written by the coordinator only (it is the one writer of the database); docs/DB_schema.md.
"""

from __future__ import annotations

import msgspec

from common.api import UsageRow
from common.flow import Limit
from storage.database import Database

UPSERT_LIMIT = """
INSERT INTO flow_limits (key, spec, updated_at) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at
"""
DELETE_LIMIT = "DELETE FROM flow_limits WHERE key = ?"
# Adds a row's counts to what the hour already holds (errors are merged by the caller).
UPSERT_USAGE = """
INSERT INTO flow_usage (hour, tenant, skill, model, calls, errors, input_tokens, output_tokens, cache_hits, cost)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (hour, tenant, skill, model) DO UPDATE SET
    calls = calls + excluded.calls, errors = excluded.errors,
    input_tokens = input_tokens + excluded.input_tokens, output_tokens = output_tokens + excluded.output_tokens,
    cache_hits = cache_hits + excluded.cache_hits, cost = cost + excluded.cost
"""
GROUPS = ("tenant", "skill", "model", "hour")


class FlowStore:
    """Reads and writes the flow tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def limits(self) -> list[Limit]:
        """Every stored limit."""
        rows = await self._db.fetch_all("SELECT spec FROM flow_limits ORDER BY key")
        return [msgspec.json.decode(row["spec"], type=Limit) for row in rows]

    async def put_limit(self, limit: Limit, at: float) -> None:
        """Store (or replace) a key's limit."""
        await self._db.write([(UPSERT_LIMIT, [(limit.key, msgspec.json.encode(limit).decode(), at)])])

    async def delete_limit(self, key: str) -> None:
        """Forget a key's limit."""
        await self._db.write([(DELETE_LIMIT, [(key,)])])

    async def errors_of(self, hour: int, tenant: str, skill: str, model: str) -> dict[str, int]:
        """The errors by reason an hour's row holds already (to merge new ones into)."""
        row = await self._db.fetch_one(
            "SELECT errors FROM flow_usage WHERE hour = ? AND tenant = ? AND skill = ? AND model = ?",
            (hour, tenant, skill, model),
        )
        return {} if row is None else msgspec.json.decode(row["errors"], type=dict[str, int])

    async def add_usage(self, rows: list[tuple[object, ...]]) -> None:
        """Add rows (hour, tenant, skill, model, calls, errors JSON, in, out, hits, cost)."""
        await self._db.write([(UPSERT_USAGE, rows)])

    async def usage(self, since_hour: int, by: list[str]) -> list[UsageRow]:
        """Usage since an hour, summed over the fields not in `by`."""
        grouped = [g for g in GROUPS if g in by]
        select = ", ".join(grouped)
        sql = (
            f"SELECT {select + ', ' if select else ''}SUM(calls) AS calls, SUM(input_tokens) AS input_tokens, "
            "SUM(output_tokens) AS output_tokens, SUM(cache_hits) AS cache_hits, SUM(cost) AS cost, "
            "json_group_array(errors) AS errors FROM flow_usage WHERE hour >= ?"
            f"{' GROUP BY ' + select if select else ''} ORDER BY calls DESC"
        )
        rows = await self._db.fetch_all(sql, (since_hour,))
        result: list[UsageRow] = []
        for row in rows:
            if row["calls"] is None:
                continue
            errors: dict[str, int] = {}
            for part in msgspec.json.decode(row["errors"], type=list[str]):
                for reason, n in msgspec.json.decode(part, type=dict[str, int]).items():
                    errors[reason] = errors.get(reason, 0) + n
            result.append(
                UsageRow(
                    tenant=row["tenant"] if "tenant" in grouped else "",
                    skill=row["skill"] if "skill" in grouped else "",
                    model=row["model"] if "model" in grouped else "",
                    hour=float(row["hour"] * 3600) if "hour" in grouped else None,
                    calls=row["calls"],
                    errors=errors,
                    input_tokens=row["input_tokens"],
                    output_tokens=row["output_tokens"],
                    cache_hits=row["cache_hits"],
                    cost=round(row["cost"], 6),
                )
            )
        return result
