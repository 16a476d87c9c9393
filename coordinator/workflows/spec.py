"""The workflow spec: what a YAML or JSON workflow file may say, as msgspec Structs.

A workflow names its nodes; each node runs one skill (or is an approval gate) with an input built
from the run's input and upstream outputs (JMESPath expressions, coordinator/workflows/expressions.py),
after the nodes it needs, when its condition holds, once or once per item of a list (`for_each`).
docs/Workflows.md explains every field with the quant example. Parsing here checks only the shape;
coordinator/workflows/validate.py checks the meaning (cycles, skills, references, schemas).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
import yaml

from common.errors import WorkflowSpecError
from common.states import Priority

NAME_PATTERN = "^[A-Za-z][A-Za-z0-9_.-]{0,99}$"
# Node names appear in expressions as `nodes.<name>`: JMESPath identifiers, so no dots or dashes.
NODE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_NODES = 500
MAX_SPEC_BYTES = 512 * 1024


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A node's retries: attempts of its task and the backoff between them (unset: the skill's)."""

    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    base_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 1.0
    factor: Annotated[float, msgspec.Meta(ge=1, le=100)] = 2.0
    max_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 300.0
    jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.2


class Trigger(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What starts a run besides `claw workflow run` (the schedules feature reads it).

    One of: `cron` (with `timezone`), `interval_s`, `subject` (a NATS message), `artifact_prefix`
    (a new artifact under it), `webhook`; none of them: runs start by hand only.
    """

    cron: str | None = None
    timezone: str = "UTC"
    interval_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    subject: str | None = None
    artifact_prefix: str | None = None
    webhook: str | None = None
    # Fires missed while no coordinator ran: skip them, run once, or run each (up to `missed_cap`).
    missed: Literal["skip", "once", "all"] = "skip"
    missed_cap: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 10
    # The run input of a fire (merged over the workflow's `defaults`).
    input: dict[str, Any] = {}


class Node(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One step: a skill's task (or an approval gate) and when and how it runs."""

    # `name` or `name@version`; None only for an approval gate (`approval: true`).
    skill: str | None = None
    version: str | None = None
    # A mapping (values may be expressions: strings starting with `=`) or one expression (`=...`).
    input: Any = {}
    needs: list[str] = []
    # An expression; the node runs only when it is truthy (else it is skipped, and so are its dependents).
    when: str | None = None
    # An expression giving a list: one task per item (`item`, `index` in expressions); the output is
    # the list of the items' outputs, in order (the join).
    for_each: str | None = None
    # At most this many item tasks in flight at once (for_each only).
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None
    retry: RetryPolicy | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=7 * 86400)] | None = None
    # A failure does not fail the run: dependents run with `nodes.<name>.output` null.
    optional: bool = False
    # Hold the node's task for a person's approval, whatever the guard says (risky skills are held anyway).
    approval: bool = False
    # Serve the node from an earlier success of the same skill@version and input.
    cache: bool = False
    priority: Priority = Priority.NORMAL
    description: str = ""


class WorkflowSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A workflow file."""

    name: Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
    description: str = ""
    trigger: Trigger | None = None
    # Input fields a run gets when it does not give them.
    defaults: dict[str, Any] = {}
    nodes: dict[str, Node]


def parse_spec(text: str, *, source: str = "the workflow") -> WorkflowSpec:
    """Parse YAML (JSON is YAML) into a spec; raises `WorkflowSpecError` with one clear line."""
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise WorkflowSpecError(f"{source}: the spec is over {MAX_SPEC_BYTES // 1024} KiB; split the workflow")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise WorkflowSpecError(f"{source}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise WorkflowSpecError(f"{source}: a workflow is a mapping with `name` and `nodes`, not {_kind(data)}")
    raw_nodes = data.get("nodes")
    if isinstance(raw_nodes, dict):
        # Each node on its own, so that an error names it (msgspec reports a dict key as `[...]`).
        for name, node in raw_nodes.items():
            try:
                msgspec.convert(node, Node, strict=False)
            except msgspec.ValidationError as exc:
                raise WorkflowSpecError(f"node '{name}': {_field_message(str(exc))}") from None
    try:
        spec = msgspec.convert(data, WorkflowSpec, strict=False)
    except msgspec.ValidationError as exc:
        raise WorkflowSpecError(f"{source}: {_field_message(str(exc))}") from None
    if not spec.nodes:
        raise WorkflowSpecError(f"workflow '{spec.name}': it has no nodes; add at least one under `nodes`")
    if len(spec.nodes) > MAX_NODES:
        raise WorkflowSpecError(f"workflow '{spec.name}': {len(spec.nodes)} nodes, over the limit of {MAX_NODES}")
    return spec


def split_skill(node: Node) -> tuple[str | None, str | None]:
    """The node's skill name and pinned version (`name@version` or `version:`)."""
    if node.skill is None:
        return None, node.version
    name, _, version = node.skill.partition("@")
    return name, version or node.version


def _field_message(message: str) -> str:
    """msgspec's message with its `$.path` shown as the field's path."""
    text, _, path = message.partition(" - at `")
    path = path.rstrip("`").removeprefix("$").removeprefix(".")
    return f"{text} (at `{path}`)" if path else text


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"a {type(value).__name__}"
