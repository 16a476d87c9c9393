"""Skill manifests: every bad field gets an error that names it; schemas validate inputs by field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from common.errors import InvalidInputError, InvalidOutputError
from common.skills import (
    ManifestError,
    builtin_manifests,
    folder_checksum,
    load_manifest,
    pack_skill,
    parse_manifest,
    validate_input,
    validate_output,
)

GOOD: dict[str, Any] = {
    "name": "text.stats",
    "version": "1.2.0",
    "description": "counts words",
    "capabilities": ["text"],
    "risk": "read_only",
    "runtime": {"python": "handler:run"},
    "input_schema": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
    "timeout_s": 30,
    "retry": {"max_attempts": 2},
    "requires_labels": {"gpu": "true"},
    "concurrency": 2,
}


def with_(**changes: Any) -> dict[str, Any]:
    data = dict(GOOD)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def test_a_good_manifest_parses() -> None:
    manifest = parse_manifest(GOOD, source="skill.yaml")
    assert manifest.key() == "text.stats@1.2.0" and manifest.concurrency == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Text Stats"}, "field 'name': 'Text Stats' is not a skill name"),
        ({"name": None}, "missing required field 'name'"),
        ({"version": "1.2"}, "field 'version': '1.2' is not a semantic version"),
        ({"risk": "harmless"}, "field 'risk': Invalid enum value 'harmless'"),
        ({"runtime": {}}, "field 'runtime': give exactly one of 'python' or 'command'"),
        ({"runtime": {"python": "a:b", "command": ["x"]}}, "give exactly one"),
        ({"runtime": {"python": "no-colon"}}, "field 'runtime.python': 'no-colon' is not of the form module:function"),
        ({"runtime": {"command": []}}, "field 'runtime.command': a non-empty list"),
        ({"runtime": {"command": ["x"], "factory": True}}, "field 'runtime.factory': only a python runtime"),
        ({"runtime": {"shell": "x"}}, "unknown field 'runtime.shell'"),
        ({"input_schema": {"type": "objekt"}}, "field 'input_schema.type': not a valid JSON Schema"),
        ({"output_schema": {"required": "text"}}, "field 'output_schema.required': not a valid JSON Schema"),
        ({"timeout_s": 0}, "field 'timeout_s': Expected `float` > 0"),
        ({"retry": {"max_attempts": 0}}, "field 'retry.max_attempts': Expected `int` >= 1"),
        ({"retry": {"tries": 3}}, "unknown field 'retry.tries'"),
        ({"requires_labels": {"gpu": True}}, "field 'requires_labels[...]': Expected `str`, got `bool` (quote it"),
        ({"concurrency": 0}, "field 'concurrency': Expected `int` >= 1"),
        ({"capabilities": "text"}, "field 'capabilities': Expected `array`"),
        ({"colour": "red"}, "unknown field 'colour'"),
    ],
)
def test_each_bad_field_is_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError) as raised:
        parse_manifest(with_(**changes), source="skill.yaml")
    assert str(raised.value).startswith("skill.yaml: ")
    assert message in str(raised.value)


def test_a_file_that_is_not_yaml_or_missing_is_named(tmp_path: Path) -> None:
    (tmp_path / "skill.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ManifestError, match=r"skill.yaml: not valid YAML at line 2"):
        load_manifest(tmp_path)
    with pytest.raises(ManifestError, match="no such file"):
        load_manifest(tmp_path / "nowhere")


def test_input_is_validated_naming_the_field() -> None:
    manifest = parse_manifest(GOOD, source="skill.yaml")
    validate_input(manifest, {"text": "ok"})
    with pytest.raises(InvalidInputError, match=r"input of text.stats: field 'text': 5 is not of type 'string'"):
        validate_input(manifest, {"text": 5})
    with pytest.raises(InvalidInputError, match=r"field '\(the input\)': 'text' is a required property"):
        validate_input(manifest, {})


def test_output_is_validated_naming_the_field() -> None:
    manifest = parse_manifest(GOOD, source="skill.yaml")
    shaped = msgspec.structs.replace(
        manifest, output_schema={"type": "object", "required": ["words"], "properties": {"words": {"type": "integer"}}}
    )
    validate_output(shaped, {"words": 3})
    with pytest.raises(InvalidOutputError, match=r"result of text.stats: field 'words': 'x' is not of type 'integer'"):
        validate_output(shaped, {"words": "x"})
    with pytest.raises(InvalidOutputError, match=r"field '\(the result\)': 'words' is a required property"):
        validate_output(shaped, {})
    assert InvalidOutputError("x").retryable


def test_builtin_manifests_are_valid_and_classify_risk() -> None:
    folder = Path(builtin_manifests.__code__.co_filename).parent / "builtin_skills"
    for path in sorted(folder.glob("*.yaml")):
        load_manifest(path)  # with the JSON Schema check that builtin_manifests() skips at run time
    risks = {m.name: m.risk.value for m in builtin_manifests()}
    assert risks["echo"] == "read_only" and risks["fs.write"] == "write_draft"
    assert risks["http.request"] == "write_external" and risks["shell.exec"] == "destructive"


def test_checksum_covers_names_and_contents_and_skips_caches(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    first = folder_checksum(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    assert folder_checksum(tmp_path) == first
    (tmp_path / "a.py").write_text("x = 2\n")
    assert folder_checksum(tmp_path) != first
    assert pack_skill(tmp_path)[:2] == b"\x1f\x8b"  # gzip
