"""End to end: the README's installed-skill lines, with real `claw` processes (on uvloop, as users run
them) and two workers that share one skill cache, as `claw up` starts them."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_cli_cluster import start_cluster
from tests.helpers import ProcessPool

pytestmark = pytest.mark.e2e


def test_readme_text_stats_lines_install_and_run_on_two_workers_sharing_a_cache(processes: ProcessPool) -> None:
    start_cluster(processes, workers=2)
    installed = processes.run("skills", "install", "examples/skills/text_stats")
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout.startswith("text.stats@1.0.0 installed and enabled")

    result = processes.run(
        "submit", "text.stats", "--input-file", "examples/skills/text_stats/example_input.json", "--wait", "--json"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    task = json.loads(result.stdout)
    assert task["state"] == "succeeded"
    assert task["result"]["top"] == [["to", 3], ["be", 2], ["the", 2]]
    assert (task["result"]["words"], task["result"]["lines"]) == (18, 2)
