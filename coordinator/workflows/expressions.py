"""Node inputs, conditions and fan-outs as JMESPath expressions: a sandboxed query language, no eval.

A string value that starts with `=` is an expression (`"=nodes.fetch.output.close"`); `==` starts a
literal string that begins with `=`; every other value is taken as written. Expressions read one
document, the scope of a node:

    {"input": <the run's input>,
     "nodes": {"<name>": {"output": <its output>, "state": "<its state>"}, ...},
     "item": <the current item (for_each only)>, "index": <its position>}

JMESPath can only select, filter and reshape that document (and call its fixed set of pure
functions): it cannot reach the process, the file system or the network, and every evaluation ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.functions import Functions

from common.errors import WorkflowSpecError

SCOPE_ROOTS = ("input", "nodes", "item", "index")
# The built-in functions of JMESPath (pure, over JSON values): the only ones an expression may call.
FUNCTIONS = frozenset(Functions.FUNCTION_TABLE)


@dataclass(frozen=True, slots=True)
class Reference:
    """A path an expression reads under `nodes`: `nodes.<node>.<part>.<field>` (the rest may be None)."""

    node: str
    part: str | None
    field: str | None


@dataclass(frozen=True, slots=True)
class Expression:
    """One compiled expression and what it reads."""

    text: str
    parsed: Any
    references: tuple[Reference, ...]
    roots: frozenset[str]

    def evaluate(self, scope: dict[str, Any]) -> Any:
        """The expression's value over `scope` (JMESPath errors become `ExpressionError`)."""
        try:
            return self.parsed.search(scope)
        except JMESPathError as exc:
            raise ExpressionError(f"expression '{self.text}': {_one_line(exc)}") from None


class ExpressionError(WorkflowSpecError):
    """An expression could not be evaluated over a run's data (a wrong type for a function, ...)."""


def compile_expression(text: str, where: str) -> Expression:
    """Compile an expression (without its leading `=`); `where` names it in the error."""
    try:
        parsed = jmespath.compile(text)
    except JMESPathError as exc:
        raise WorkflowSpecError(f"{where}: bad expression '{text}': {_one_line(exc)}") from None
    tree = parsed.parsed
    for node in _walk(tree):
        if node.get("type") == "function_expression" and node["value"] not in FUNCTIONS:
            raise WorkflowSpecError(
                f"{where}: bad expression '{text}': unknown function {node['value']}(); JMESPath has "
                f"{', '.join(sorted(FUNCTIONS))}"
            )
    return Expression(text, parsed, tuple(_references(tree)), frozenset(_roots(tree)))


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


# --- templates -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Template:
    """A node's input as written: literals, and expressions to evaluate at dispatch time."""

    value: Any  # literal | Expression | dict[str, Template-value] | list[Template-value]

    def render(self, scope: dict[str, Any]) -> Any:
        """The input for one task, over `scope`."""
        return _render(self.value, scope)

    def expressions(self) -> Iterator[Expression]:
        """Every expression in the template."""
        yield from _expressions(self.value)

    @property
    def is_literal(self) -> bool:
        """Whether the template holds no expression (its value is the input as written)."""
        return next(self.expressions(), None) is None


def compile_template(value: Any, where: str) -> Template:
    """Compile a node's `input` (a mapping, a list, a literal or an `=` expression)."""
    return Template(_compile(value, where))


def expression_text(value: str) -> str:
    """An expression field (`when`, `for_each`), with or without its leading `=`."""
    return value[1:] if value.startswith("=") else value


def _compile(value: Any, where: str) -> Any:
    if isinstance(value, str):
        if value.startswith("=="):
            return value[1:]
        if value.startswith("="):
            return compile_expression(value[1:], where)
        return value
    if isinstance(value, dict):
        return {str(k): _compile(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_compile(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _render(value: Any, scope: dict[str, Any]) -> Any:
    if isinstance(value, Expression):
        return value.evaluate(scope)
    if isinstance(value, dict):
        return {k: _render(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, scope) for v in value]
    return value


def _expressions(value: Any) -> Iterator[Expression]:
    if isinstance(value, Expression):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _expressions(v)
    elif isinstance(value, list):
        for v in value:
            yield from _expressions(v)


# --- what an expression reads ------------------------------------------------------------------------


def _walk(tree: Any) -> Iterator[dict[str, Any]]:
    if isinstance(tree, dict):
        yield tree
        for child in tree.get("children", ()):
            yield from _walk(child)


def _chain(tree: dict[str, Any]) -> list[dict[str, Any]]:
    """The links of a subexpression `a.b[0].c`, flattened (the parser already keeps them flat)."""
    if tree.get("type") != "subexpression":
        return [tree]
    links: list[dict[str, Any]] = []
    for child in tree["children"]:
        links.extend(_chain(child))
    return links


def _field(link: dict[str, Any]) -> str | None:
    """The field a link selects: `x` for `x`, and for `x[0]` / `x[*]` too."""
    if link.get("type") == "field":
        return str(link["value"])
    if link.get("type") in ("index_expression", "projection") and link.get("children"):
        return _field(link["children"][0])
    return None


def _references(tree: Any) -> Iterator[Reference]:
    for node in _walk(tree):
        if node.get("type") != "subexpression":
            continue
        links = _chain(node)
        if len(links) < 2 or _field(links[0]) != "nodes" or links[0].get("type") != "field":
            continue
        name = _field(links[1])
        if name is None:
            continue
        part = _field(links[2]) if len(links) > 2 else None
        field = _field(links[3]) if len(links) > 3 and links[2].get("type") == "field" else None
        yield Reference(name, part, field)


_LEFTMOST = {"subexpression", "index_expression", "projection", "value_projection", "filter_projection",
             "flatten", "pipe"}  # fmt: skip
_ALL_CHILDREN = {"multi_select_dict", "key_val_pair", "multi_select_list", "function_expression", "comparator",
                 "and_expression", "or_expression", "not_expression"}  # fmt: skip


def _roots(tree: Any) -> Iterator[str]:
    """The top-level names an expression reads (`input`, `nodes`, `item`, ...): the leftmost field of
    each chain read from the scope itself (fields inside projections and filters read their items)."""
    if not isinstance(tree, dict):
        return
    kind = tree.get("type")
    children = tree.get("children", [])
    if kind == "field":
        yield str(tree["value"])
    elif kind in _LEFTMOST and children:
        yield from _roots(children[0])
    elif kind in _ALL_CHILDREN:
        for child in children:
            yield from _roots(child)
