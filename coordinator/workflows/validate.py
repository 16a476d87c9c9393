"""Validation of a workflow at register time, and the compiled form the runner executes.

Every error is one line naming the node and what to do: an unknown skill or version, a node that
needs or reads a node that does not exist, a field a node has not got (`nodes.x.outputs`, a field
missing from the upstream skill's output schema), `item` outside a fan-out, a cycle, an input that
cannot match the skill's input schema (required fields missing, fields it does not accept, literal
values of the wrong type). Dependencies are the node's `needs` plus every node its expressions read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.errors import WorkflowSpecError
from common.skills import SkillManifest
from coordinator.workflows.expressions import (
    Expression,
    Template,
    compile_expression,
    compile_template,
    expression_text,
)
from coordinator.workflows.spec import NODE_NAME, Node, WorkflowSpec, split_skill

# The skill an approval gate without a skill of its own runs once approved: it returns its input.
GATE_SKILL = "echo"
NODE_PARTS = ("output", "state")


@dataclass(frozen=True, slots=True)
class SkillInfo:
    """What validation knows of a skill: its enabled manifest (None: run from a worker's code)."""

    manifest: SkillManifest | None
    versions: tuple[str, ...] = ()


# name -> what is known of it, or None when no such skill is registered or offered.
SkillLookup = Callable[[str], SkillInfo | None]


@dataclass(slots=True)
class CompiledNode:
    """A node ready to run: its skill, its compiled expressions, its dependencies."""

    name: str
    spec: Node
    skill: str
    version: str | None
    manifest: SkillManifest | None
    input: Template
    when: Expression | None
    for_each: Expression | None
    deps: tuple[str, ...]
    dependents: list[str] = field(default_factory=list)


@dataclass(slots=True)
class CompiledWorkflow:
    """A validated workflow: its nodes in a dependency order."""

    spec: WorkflowSpec
    nodes: dict[str, CompiledNode]
    order: list[str]

    @property
    def name(self) -> str:
        """The workflow's name."""
        return self.spec.name

    def downstream(self, start: str) -> set[str]:
        """`start` and every node that depends on it, directly or not."""
        seen = {start}
        stack = [start]
        while stack:
            for dependent in self.nodes[stack.pop()].dependents:
                if dependent not in seen:
                    seen.add(dependent)
                    stack.append(dependent)
        return seen


def compile_workflow(spec: WorkflowSpec, skills: SkillLookup) -> CompiledWorkflow:
    """Validate `spec` against the known skills; raises `WorkflowSpecError` naming the node."""
    nodes = {name: _compile_node(spec, name, node, skills) for name, node in spec.nodes.items()}
    for node in nodes.values():
        for dep in node.deps:
            nodes[dep].dependents.append(node.name)
    order = _order(spec.name, nodes)
    for name in order:
        _check_references(nodes, nodes[name])
    return CompiledWorkflow(spec, nodes, order)


def _compile_node(spec: WorkflowSpec, name: str, node: Node, skills: SkillLookup) -> CompiledNode:
    where = f"node '{name}'"
    if not NODE_NAME.match(name):
        raise WorkflowSpecError(
            f"{where}: a node name is a letter or _ then letters, digits or _ (it is read as nodes.<name> "
            "in expressions); rename it"
        )
    skill, version, manifest = _skill_of(where, node, skills)
    template = compile_template(node.input, f"{where}: input")
    when = compile_expression(expression_text(node.when), f"{where}: when") if node.when is not None else None
    fan = None
    if node.for_each is not None:
        fan = compile_expression(expression_text(node.for_each), f"{where}: for_each")
    elif node.concurrency is not None:
        raise WorkflowSpecError(f"{where}: `concurrency` caps a fan-out; add `for_each` or remove it")
    reads: set[str] = set()
    for expression, part in _expressions(template, when, fan):
        if fan is None and expression.roots & {"item", "index"}:
            raise WorkflowSpecError(f"{where}: {part} uses `item`/`index`, which exist only in a node with for_each")
        if expression is fan and expression.roots & {"item", "index"}:
            raise WorkflowSpecError(f"{where}: for_each cannot use `item`/`index` (they are its own items)")
        unknown = expression.roots - {"input", "nodes", "item", "index"}
        if unknown:
            raise WorkflowSpecError(
                f"{where}: {part} reads '{sorted(unknown)[0]}'; expressions read input, nodes.<name>, item or index"
            )
        for ref in expression.references:
            if ref.node not in spec.nodes:
                raise WorkflowSpecError(f"{where}: {part} reads nodes.{ref.node}, but there is no node '{ref.node}'")
            if ref.node == name:
                raise WorkflowSpecError(f"{where}: {part} reads its own output (nodes.{name}); a node cannot")
            reads.add(ref.node)
    for need in node.needs:
        if need not in spec.nodes:
            raise WorkflowSpecError(f"{where}: needs '{need}', but there is no node '{need}'")
        if need == name:
            raise WorkflowSpecError(f"{where}: needs itself")
    if manifest is not None:
        _check_input(where, skill, manifest, template)
    deps = tuple(dict.fromkeys([*node.needs, *sorted(reads)]))
    return CompiledNode(name, node, skill, version, manifest, template, when, fan, deps)


def _skill_of(where: str, node: Node, skills: SkillLookup) -> tuple[str, str | None, SkillManifest | None]:
    """The node's skill, checked: known, and the pinned version the one enabled."""
    name, version = split_skill(node)
    if name is None:
        if not node.approval:
            raise WorkflowSpecError(f"{where}: give it a `skill` to run (or make it a gate with `approval: true`)")
        name = GATE_SKILL
    info = skills(name)
    if info is None:
        raise WorkflowSpecError(
            f"{where}: unknown skill '{name}': it is not registered and no online worker offers it "
            "(`claw skills list`; install it with `claw skills install`)"
        )
    manifest = info.manifest
    if version is not None and manifest is not None and manifest.version != version:
        others = ", ".join(info.versions) or manifest.version
        raise WorkflowSpecError(
            f"{where}: skill '{name}' version {version} is not the enabled one ({manifest.version}; registered: "
            f"{others}); pin {manifest.version} or `claw skills enable {name}` at {version}"
        )
    return name, version, manifest


def _expressions(template: Template, when: Expression | None, fan: Expression | None) -> list[tuple[Expression, str]]:
    found = [(e, "input") for e in template.expressions()]
    if when is not None:
        found.append((when, "when"))
    if fan is not None:
        found.append((fan, "for_each"))
    return found


def _check_input(where: str, skill: str, manifest: SkillManifest, template: Template) -> None:
    """Check what can be checked before run time against the skill's input schema."""
    schema = manifest.input_schema
    if schema is None:
        return
    if template.is_literal:
        error = _schema_error(schema, template.value)
        if error is not None:
            raise WorkflowSpecError(f"{where}: input does not match skill '{skill}': {error}")
        return
    value = template.value
    if not isinstance(value, dict):
        return  # one expression builds the whole input: checked when it runs
    properties = schema.get("properties") or {}
    for key in schema.get("required") or ():
        if key not in value:
            raise WorkflowSpecError(f"{where}: input lacks '{key}', which skill '{skill}' requires")
    if schema.get("additionalProperties") is False:
        for key in value:
            if key not in properties:
                accepted = ", ".join(sorted(properties)) or "none"
                raise WorkflowSpecError(
                    f"{where}: input field '{key}' is not accepted by skill '{skill}' (it accepts: {accepted})"
                )
    for key, item in value.items():
        sub = properties.get(key)
        if sub is None or not Template(item).is_literal:
            continue
        error = _schema_error({**sub, "$defs": schema.get("$defs", {})}, item)
        if error is not None:
            raise WorkflowSpecError(f"{where}: input field '{key}' does not match skill '{skill}': {error}")


def _schema_error(schema: Mapping[str, Any], value: Any) -> str | None:
    from jsonschema import Draft202012Validator  # imported on first use, as common/skills.py does

    error = next(iter(sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path))), None)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"field '{where}': {error.message}" if where else error.message


def _order(workflow: str, nodes: dict[str, CompiledNode]) -> list[str]:
    """A dependency order of the nodes (declaration order among equals); a cycle is an error."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    order: list[str] = []

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name) :], name]
            raise WorkflowSpecError(
                f"workflow '{workflow}': node '{name}' is in a cycle: {' -> '.join(cycle)}; a workflow is a DAG"
            )
        state[name] = 1
        for dep in nodes[name].deps:
            visit(dep, [*path, name])
        state[name] = 2
        order.append(name)

    for name in nodes:
        visit(name, [])
    return order


def _check_references(nodes: dict[str, CompiledNode], node: CompiledNode) -> None:
    """Each `nodes.x.<part>.<field>` names a part a node has and, where x's output schema says, a field."""
    where = f"node '{node.name}'"
    for expression, part in _expressions(node.input, node.when, node.for_each):
        for ref in expression.references:
            if ref.part is None:
                continue
            if ref.part not in NODE_PARTS:
                raise WorkflowSpecError(
                    f"{where}: {part} reads nodes.{ref.node}.{ref.part}; a node has only "
                    f"nodes.{ref.node}.output and nodes.{ref.node}.state"
                )
            if ref.part != "output" or ref.field is None:
                continue
            upstream = nodes[ref.node]
            if upstream.for_each is not None:
                raise WorkflowSpecError(
                    f"{where}: {part} reads nodes.{ref.node}.output.{ref.field}, but '{ref.node}' fans out: its "
                    f"output is a list (read nodes.{ref.node}.output[*].{ref.field})"
                )
            fields = _output_fields(upstream.manifest)
            if fields is not None and ref.field not in fields:
                raise WorkflowSpecError(
                    f"{where}: {part} reads nodes.{ref.node}.output.{ref.field}, but skill '{upstream.skill}' "
                    f"returns no field '{ref.field}' (its output has: {', '.join(sorted(fields))})"
                )


def _output_fields(manifest: SkillManifest | None) -> set[str] | None:
    """The fields a skill's output is known to have, or None when its schema does not say."""
    schema = None if manifest is None else manifest.output_schema
    if not schema or schema.get("type") != "object":
        return None
    fields = set(schema.get("properties") or {}) | set(schema.get("required") or ())
    if not fields or (schema.get("additionalProperties", True) is not False and not schema.get("required")):
        return None
    return fields
