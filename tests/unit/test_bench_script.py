"""The tail the benchmark commands share (cli/bench/script.py): `--json FILE`, what is printed and
written, the exit codes, and the scratch directory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from cli.bench.script import Report, add_json_option, as_json, emit, run_and_emit, scratch_dir
from common.errors import InvalidInputError

REPORT: Report = {"tps": 1234.5, "rounds": [1, 2]}


async def _measured() -> Report:
    return REPORT


async def _refused() -> Report:
    raise InvalidInputError("--tasks must be positive")


async def _interrupted() -> Report:
    raise KeyboardInterrupt


def test_the_json_option_reads_a_file_path_and_is_optional() -> None:
    parser = argparse.ArgumentParser()
    add_json_option(parser)
    assert parser.parse_args(["--json", "out/figures.json"]).json_path == Path("out/figures.json")
    assert parser.parse_args([]).json_path is None


def test_the_report_is_printed_as_json_and_written_with_a_final_newline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "deeper" / "figures.json"
    assert run_and_emit(_measured(), json_path=out) == 0
    printed = capsys.readouterr()
    assert printed.out == as_json(REPORT) + "\n" and printed.err == ""
    assert out.read_text() == as_json(REPORT) + "\n" and json.loads(out.read_text()) == REPORT


def test_a_renderer_replaces_the_json_on_stdout_and_none_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def table(report: dict[str, Any]) -> str:
        return f"throughput {report['tps']:,} tasks/s"

    emit(REPORT, render=table, json_path=tmp_path / "a.json")
    assert capsys.readouterr().out == "throughput 1,234.5 tasks/s\n"
    assert json.loads((tmp_path / "a.json").read_text()) == REPORT
    emit(REPORT, render=None)
    assert capsys.readouterr().out == ""


def test_an_error_is_one_line_and_exit_1_and_ctrl_c_is_130_with_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "figures.json"
    assert run_and_emit(_refused(), json_path=out) == 1
    printed = capsys.readouterr()
    assert printed.err == "error: --tasks must be positive\n" and printed.out == ""
    assert run_and_emit(_interrupted(), json_path=out) == 130
    printed = capsys.readouterr()
    assert printed.err == "interrupted; every process the benchmark started is stopped\n" and printed.out == ""
    assert not out.exists()


def test_the_scratch_directory_is_removed_afterwards_also_on_an_error() -> None:
    with scratch_dir("claw-test-scratch-") as path:
        (path / "nats").mkdir()
        assert path.name.startswith("claw-test-scratch-")
    assert not path.exists()
    with pytest.raises(RuntimeError), scratch_dir("claw-test-scratch-") as failed:
        raise RuntimeError("the run failed")
    assert not failed.exists()
