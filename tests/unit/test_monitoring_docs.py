"""docs/Monitoring.md and the sample Grafana dashboard name only metrics the coordinator exports, and
the docs list every one of them."""

from __future__ import annotations

import json
import re

from coordinator.metrics import ClusterMetrics
from tests.helpers import ROOT

METRIC_NAME = re.compile(r"\bclaw_[a-z_]+")
SERIES_SUFFIXES = ("_bucket", "_count", "_sum")


def exported() -> dict[str, str]:
    """Name as written in queries (counters with `_total`) -> type, for every `claw_*` family."""
    names = {}
    for family in ClusterMetrics().registry.collect():
        if family.name.startswith("claw_"):
            name = f"{family.name}_total" if family.type == "counter" else family.name
            names[name] = family.type
    return names


def family_of(series: str) -> str:
    for suffix in SERIES_SUFFIXES:
        if series.endswith(suffix) and series.removesuffix(suffix) in exported():
            return series.removesuffix(suffix)
    return series


def test_the_docs_table_lists_every_metric_with_its_type() -> None:
    text = (ROOT / "docs" / "Monitoring.md").read_text()
    rows = dict(re.findall(r"^\| `(claw_[a-z_]+)` \| (\w+) \|", text, flags=re.MULTILINE))
    assert rows == exported()


def test_the_docs_and_the_dashboard_name_only_exported_metrics() -> None:
    docs = (ROOT / "docs" / "Monitoring.md").read_text()
    dashboard = json.loads((ROOT / "config" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    named = {family_of(m) for text in [docs, *exprs] for m in METRIC_NAME.findall(text)}
    # A regex over names, as in {__name__=~"claw_tasks_(failed|dead)_total"}, is checked by its parts.
    named -= {"claw_tasks_"}
    assert named <= set(exported()), named - set(exported())
    assert {"claw_tasks_succeeded_total", "claw_queue_depth", "claw_task_run_seconds"} <= {
        family_of(m) for e in exprs for m in METRIC_NAME.findall(e)
    }
