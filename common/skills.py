"""Skill manifests (`skill.yaml`): what a skill is, how risky it is, how it runs, what it accepts.

```yaml
name: text.stats                 # lowercase words joined by dots
version: 1.2.0                   # semantic version
description: Counts words and characters
capabilities: [text, analysis]   # keywords for `claw skills search`
risk: read_only                  # read_only | write_draft | write_external | funds | destructive
runtime:
  python: handler:run            # <module file in the skill folder>:<function>, or an installed module
  # command: [python3, run.py]   # or a program: input JSON on stdin, result JSON on stdout
input_schema: {type: object, properties: {text: {type: string}}, required: [text]}
output_schema: {type: object}    # optional
timeout_s: 30
retry: {max_attempts: 3, base_s: 1, factor: 2, max_s: 60, jitter: 0.2}
requires_labels: {gpu: "true"}   # loaded only on workers with these labels
concurrency: 4                   # at most this many at once per worker
limit_keys: ["api:{host}"]       # flow control: limit keys over the input (docs/Flow_control.md)
```

`load_manifest` validates everything a worker or the coordinator would otherwise trip over later,
and every error names the field. `folder_checksum` fingerprints a skill folder for installs.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import re
import tarfile
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
import yaml

from common.errors import InvalidInputError, InvalidOutputError

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

MANIFEST_FILE = "skill.yaml"
SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")
PYTHON_TARGET = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*")
SKILL_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
LIMIT_KEY_TEMPLATE = re.compile(r"([A-Za-z0-9_.:/@+-]|\{[A-Za-z_][A-Za-z0-9_]*\})+")
IGNORED_FILES = {"__pycache__", ".git", ".DS_Store"}


class Risk(StrEnum):
    """How much harm a skill can do; the guard's default policy keys on it."""

    READ_ONLY = "read_only"
    WRITE_DRAFT = "write_draft"
    WRITE_EXTERNAL = "write_external"
    FUNDS = "funds"
    DESTRUCTIVE = "destructive"

    @property
    def rank(self) -> int:
        """Its place from least (0, read_only) to most harmful (destructive): the order the rule
        "a new version cannot declare a lower risk" compares by."""
        return _RISK_ORDER.index(self)


_RISK_ORDER = list(Risk)


class Runtime(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a skill runs: a Python callable, or a command (exactly one).

    `factory: true` marks `python` as a function taking the worker's config and returning Skill
    objects (for skills that need worker settings); the one with this manifest's name is used.
    """

    python: str | None = None
    command: list[str] | None = None
    factory: bool = False


class RetrySpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A skill's default retry policy (a task's own options override it)."""

    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    base_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 1.0
    factor: Annotated[float, msgspec.Meta(ge=1, le=100)] = 2.0
    max_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 300.0
    jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.2


class SkillManifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A validated `skill.yaml`."""

    name: str
    version: str
    description: str = ""
    capabilities: list[str] = []
    risk: Risk
    runtime: Runtime
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    retry: RetrySpec | None = None
    requires_labels: dict[str, str] = {}
    concurrency: Annotated[int, msgspec.Meta(ge=1)] | None = None
    # Flow control: the limit keys a task uses, as templates over its input (`llm:{provider}:{model}`).
    limit_keys: list[str] = []

    def key(self) -> str:
        """`name@version`."""
        return f"{self.name}@{self.version}"


class ManifestError(InvalidInputError):
    """A skill manifest is not valid; the message names the file and the field."""

    code = "invalid_manifest"


def parse_manifest(data: Any, *, source: str, check_schemas: bool = True) -> SkillManifest:
    """Validate a decoded manifest (a mapping) and return it; raises `ManifestError` naming the field.

    `check_schemas=False` skips checking that the input and output schemas are valid JSON Schema,
    for the built-in manifests only: a unit test checks those, and the check imports jsonschema,
    which a worker otherwise rarely needs.
    """
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: a manifest must be a mapping of fields, not {type(data).__name__}")
    try:
        manifest = msgspec.convert(data, SkillManifest, strict=False)
    except msgspec.ValidationError as exc:
        raise ManifestError(f"{source}: {_field_message(str(exc))}") from None
    _check_semantics(manifest, source)
    if check_schemas:
        _check_schemas(manifest, source)
    return manifest


def load_manifest(path: Path, *, check_schemas: bool = True) -> SkillManifest:
    """Read and validate `path` (a `skill.yaml`, or a folder holding one)."""
    if path.is_dir():
        path = path / MANIFEST_FILE
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such file (a skill folder needs a {MANIFEST_FILE})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ManifestError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_manifest(data, source=str(path), check_schemas=check_schemas)


def _check_semantics(m: SkillManifest, source: str) -> None:
    if len(m.name) > 64 or not SKILL_NAME.fullmatch(m.name):
        raise ManifestError(
            f"{source}: field 'name': '{m.name}' is not a skill name (lowercase words joined by dots, e.g. text.stats)"
        )
    if not SEMVER.fullmatch(m.version):
        raise ManifestError(f"{source}: field 'version': '{m.version}' is not a semantic version like 1.0.0")
    runtime = m.runtime
    if (runtime.python is None) == (runtime.command is None):
        raise ManifestError(f"{source}: field 'runtime': give exactly one of 'python' or 'command'")
    if runtime.python is not None and not PYTHON_TARGET.fullmatch(runtime.python):
        raise ManifestError(f"{source}: field 'runtime.python': '{runtime.python}' is not of the form module:function")
    if runtime.command is not None and (not runtime.command or not all(runtime.command)):
        raise ManifestError(f"{source}: field 'runtime.command': a non-empty list of arguments is needed")
    if runtime.factory and runtime.python is None:
        raise ManifestError(f"{source}: field 'runtime.factory': only a python runtime can be a factory")
    for template in m.limit_keys:
        if not LIMIT_KEY_TEMPLATE.fullmatch(template):
            raise ManifestError(
                f"{source}: field 'limit_keys': {template!r} is not a key template "
                "(letters, digits, . _ : / @ + - and {field} of the input, e.g. llm:{provider}:{model})"
            )


def _check_schemas(m: SkillManifest, source: str) -> None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    for field in ("input_schema", "output_schema"):
        schema = getattr(m, field)
        if schema is None:
            continue
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            where = ".".join(str(p) for p in exc.absolute_path)
            raise ManifestError(
                f"{source}: field '{field}{'.' + where if where else ''}': not a valid JSON Schema: {exc.message}"
            ) from None


_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")


def _field_message(message: str) -> str:
    match = _AT.search(message)
    path = match.group("path") if match else ""
    detail = _AT.sub("", message)
    unknown = _UNKNOWN.match(detail)
    if unknown:
        field = f"{path}.{unknown.group('field')}" if path else unknown.group("field")
        return f"unknown field '{field}'"
    missing = _MISSING.match(detail)
    if missing:
        field = f"{path}.{missing.group('field')}" if path else missing.group("field")
        return f"missing required field '{field}'"
    if "Expected `str`, got `bool`" in detail:
        detail += ' (quote it in YAML: "true")'
    return f"field '{path or '(top)'}': {detail}"


def folder_checksum(folder: Path) -> str:
    """sha256 over the relative paths and bytes of every file in a skill folder (sorted)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not _ignored(p, folder)):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def skill_files(folder: Path) -> list[Path]:
    """The files that make up a skill folder (what is packed on install)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not _ignored(p, folder))


def pack_skill(folder: Path) -> bytes:
    """The skill folder's files as a tar.gz (what `claw skills install` uploads).

    The same files always pack to the same bytes (times, owners and the gzip header's time are
    zeroed): a re-install of an unchanged folder uploads the very archive whose sha256 the registry
    already holds, so workers that have not cached it yet still accept it."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for path in skill_files(folder):
            archive.add(path, arcname=str(path.relative_to(folder)), recursive=False, filter=_normalised)
    return buffer.getvalue()


def _normalised(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


def _ignored(path: Path, folder: Path) -> bool:
    return any(part in IGNORED_FILES or part.endswith(".pyc") for part in path.relative_to(folder).parts)


def validate_input(manifest: SkillManifest, data: Any) -> None:
    """Check a task's input against the manifest's input schema; the error names the field."""
    if manifest.input_schema is None:
        return
    error = _first_error(compiled_validator(manifest), data, whole="(the input)")
    if error is not None:
        raise InvalidInputError(f"input of {manifest.name}: {error}")


def validate_output(manifest: SkillManifest, data: Any) -> None:
    """Check a handler's result against the manifest's output schema; the error names the field."""
    if manifest.output_schema is None:
        return
    error = _first_error(compiled_validator(manifest, "output"), data, whole="(the result)")
    if error is not None:
        raise InvalidOutputError(f"result of {manifest.name}: {error}")


def _first_error(validator: Draft202012Validator, data: Any, *, whole: str) -> str | None:
    error = next(iter(sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))), None)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or whole
    return f"field '{where}': {error.message}"


_validators: dict[tuple[str, str, str], Draft202012Validator] = {}


def compiled_validator(manifest: SkillManifest, which: Literal["input", "output"] = "input") -> Draft202012Validator:
    """The input (or output) validator of a manifest, built once per (name, version)."""
    key = (manifest.name, manifest.version, which)
    validator = _validators.get(key)
    if validator is None:
        from jsonschema import Draft202012Validator  # imported on first use: see parse_manifest

        schema = manifest.input_schema if which == "input" else manifest.output_schema
        validator = Draft202012Validator(schema or {})
        _validators[key] = validator
    return validator


def builtin_manifests() -> list[SkillManifest]:
    """The manifests of the skills that ship with claw (common/builtin_skills/*.yaml)."""
    folder = Path(__file__).parent / "builtin_skills"
    return [load_manifest(path, check_schemas=False) for path in sorted(folder.glob("*.yaml"))]


@functools.cache
def reserved_names() -> frozenset[str]:
    """Names no installed package may take: the built-in skills' (`shell.exec`, `python.exec`, ...).
    An installed version replaces a registered one of the same name on the workers, so a package
    calling itself `shell.exec` would otherwise replace the built-in tool under its name and policy."""
    return frozenset(manifest.name for manifest in builtin_manifests())


def archive_sha256(data: bytes) -> str:
    """The sha256 of an installed skill's archive (what the registry keeps and workers check)."""
    return hashlib.sha256(data).hexdigest()


class RegistryEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One installed (or built-in) skill version as the registry knows it."""

    name: str
    version: str
    enabled: bool
    source: str  # builtin | installed | worker
    checksum: str
    manifest: SkillManifest
    archive: str | None = None  # object name of an installed skill's files in the skill-code store
    installed_at: float = 0.0
    # sha256 of the archive's bytes, computed by the coordinator from the skill-code store when it
    # registered the skill; workers refuse an archive that does not match (None: installed before it).
    archive_sha256: str | None = None


class RegistrySnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """What workers read from KV `<prefix>_skills` (key `registry`) to know what to load and run."""

    revision: int
    skills: list[RegistryEntry]

    def enabled(self) -> dict[str, RegistryEntry]:
        """The enabled version of each skill, by name."""
        return {e.name: e for e in self.skills if e.enabled}

    def disabled_names(self) -> set[str]:
        """Names with no enabled version at all."""
        enabled = {e.name for e in self.skills if e.enabled}
        return {e.name for e in self.skills} - enabled


def manifest_checksum(manifest: SkillManifest) -> str:
    """A fingerprint of a manifest (the checksum of a built-in skill, which has no folder)."""
    return hashlib.sha256(msgspec.json.encode(manifest)).hexdigest()
