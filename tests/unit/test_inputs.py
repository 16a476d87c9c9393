"""`claw submit` input reading: JSON objects only, JSONL with line numbers in errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.inputs import read_inputs
from common.errors import InvalidInputError


def test_inline_input_is_passed_verbatim() -> None:
    [raw] = read_inputs('{"a": 1}', None)
    assert bytes(raw) == b'{"a": 1}'


def test_no_input_means_an_empty_object() -> None:
    assert [bytes(r) for r in read_inputs(None, None)] == [b"{}"]


@pytest.mark.parametrize(
    ("text", "message"), [("{bad", "not valid JSON"), ("[1, 2]", "not a list"), ('"x"', "not a string")]
)
def test_inline_input_must_be_a_json_object(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=f"--input.*{message}"):
        read_inputs(text, None)


def test_jsonl_gives_one_task_per_non_empty_line(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"n": 1}\n\n{"n": 2}\n{"n": 3}\n')
    assert [bytes(r) for r in read_inputs(None, path)] == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']


def test_jsonl_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"n": 1}\n{"n": 2}\n[3]\n')
    with pytest.raises(InvalidInputError, match="tasks.jsonl line 3 must be a JSON object"):
        read_inputs(None, path)


def test_json_file_is_one_task(tmp_path: Path) -> None:
    path = tmp_path / "task.json"
    path.write_text('{\n  "n": 1\n}\n')
    assert len(read_inputs(None, path)) == 1


def test_file_without_suffix_is_sniffed(tmp_path: Path) -> None:
    one, many = tmp_path / "one", tmp_path / "many"
    one.write_text('{"n": 1}')
    many.write_text('{"n": 1}\n{"n": 2}\n')
    assert len(read_inputs(None, one)) == 1
    assert len(read_inputs(None, many)) == 2


def test_both_or_missing_file_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="either --input or --input-file"):
        read_inputs("{}", tmp_path / "x.json")
    with pytest.raises(InvalidInputError, match="cannot read"):
        read_inputs(None, tmp_path / "missing.json")


@pytest.mark.parametrize("suffix", [".json", ".txt"])
def test_an_empty_input_file_is_called_empty(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"input{suffix}"
    path.write_text("\n")
    with pytest.raises(InvalidInputError) as caught:
        read_inputs(None, path)
    assert str(caught.value).startswith(f"{path} ") and "empty" in str(caught.value)
    assert "truncated" not in str(caught.value)


def test_json_cut_short_says_so_in_words() -> None:
    with pytest.raises(InvalidInputError, match="it ends before its JSON value does") as caught:
        read_inputs('{"text": "hi"', None)
    assert "truncated" not in str(caught.value)
