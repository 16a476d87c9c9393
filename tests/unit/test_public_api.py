"""The names a custom worker or client needs come from the packages themselves, cheaply.

`from worker import Worker, skill, TaskContext`, `from communication import ClawClient` and
`from common import TaskSpec, load_config, RetryableError, ...` are the public API. Each package
imports its exported names on first use, so importing a package (as `claw --help` does) loads none
of them; mypy sees the same names through the package's `TYPE_CHECKING` imports.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import common
import communication
import worker
from common.errors import ConfigError
from common.skills import Risk
from worker.context import TaskContext
from worker.skills import Skill, SkillRegistry, skill, skill_of

PACKAGES = (common, communication, worker)
ROOT = Path(__file__).resolve().parents[2]


def type_checking_imports(package: Any) -> dict[str, list[str]]:
    """module -> names, as the package's `if TYPE_CHECKING:` block imports them."""
    tree = ast.parse(Path(package.__file__).read_text())
    [block] = [node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"]
    imports: dict[str, list[str]] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.module is not None
        for alias in node.names:
            assert alias.asname == alias.name, f"{alias.name}: `import X as X` re-exports it for mypy"
            imports.setdefault(node.module, []).append(alias.name)
    return imports


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_the_exports_mypy_sees_are_the_ones_imported_at_run_time(package: Any) -> None:
    assert type_checking_imports(package) == {module: sorted(names) for module, names in package.EXPORTS.items()}


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_every_exported_name_is_the_object_of_its_home_module(package: Any) -> None:
    for module, names in package.EXPORTS.items():
        for name in names:
            assert getattr(package, name) is getattr(importlib.import_module(module), name), name
            assert name in package.__all__


def test_an_unknown_name_is_an_import_error() -> None:
    with pytest.raises(ImportError, match="cannot import name 'Wroker' from 'worker'"):
        from worker import Wroker  # type: ignore[attr-defined]  # noqa: F401


def test_importing_the_packages_loads_none_of_their_exports() -> None:
    """A package is imported whenever one of its modules is: its `__init__` must stay cheap."""
    code = (
        "import sys, common, communication, worker;"
        "print(' '.join(m for m in sys.modules if m.split('.')[0] in ('common', 'communication', 'worker')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert sorted(loaded.stdout.split()) == ["common", "common.exports", "communication", "worker"]


def test_the_cli_loads_neither_the_worker_nor_the_coordinator_to_show_its_help() -> None:
    code = "import sys, cli.main; print(' '.join(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    heavy = [m for m in loaded.stdout.split() if m.split(".")[0] in ("worker", "coordinator")]
    assert heavy == []


def test_the_examples_and_user_guides_import_only_the_public_names() -> None:
    """examples/, docs/Skills.md and docs/Python_client.md show what users write: `from <package>
    import <exported name or module>`, never from a module inside a package."""
    public = {package.__name__: set(package.__all__) for package in PACKAGES}
    sources = [
        *sorted((ROOT / "examples").rglob("*.py")),
        ROOT / "docs" / "Skills.md",
        ROOT / "docs" / "Python_client.md",
    ]
    checked = 0
    for path in sources:
        for node in ast.walk(ast.Module(body=[*_statements(path)], type_ignores=[])):
            if not isinstance(node, ast.ImportFrom) or node.module is None:
                continue
            if node.module.split(".")[0] not in ("common", "communication", "worker", "storage", "coordinator", "cli"):
                continue
            assert node.module in public, f"{path.name}: from {node.module} import ... (import from the package)"
            for alias in node.names:
                is_module = importlib.util.find_spec(f"{node.module}.{alias.name}") is not None
                assert alias.name in public[node.module] or is_module, f"{path.name}: {alias.name} is not exported"
                checked += 1
    assert checked >= 20  # the parsing found the imports


def _statements(path: Path) -> list[ast.stmt]:
    """The statements of a .py file, or of the python blocks of a .md file (top-level await allowed)."""
    text = path.read_text()
    blocks = [text] if path.suffix == ".py" else [b.split("```")[0] for b in text.split("```python\n")[1:]]
    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    return [stmt for block in blocks for stmt in compile(block, str(path), "exec", flags=flags).body]  # type: ignore[attr-defined]


# --- the @skill decorator -------------------------------------------------------------------------


@skill("text.shout", risk=Risk.WRITE_DRAFT)
async def shout(ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
    """Says the text louder.

    More words that are not the description.
    """
    return {"text": str(input["text"]).upper()}


def test_a_decorated_handler_stays_a_plain_coroutine_function() -> None:
    assert inspect.iscoroutinefunction(shout) and shout.__name__ == "shout"


def test_a_decorated_handler_registers_with_its_name_risk_and_docstring_summary() -> None:
    registry = SkillRegistry([shout])
    declared = registry.get("text.shout")
    assert declared is not None and declared.handler is shout and declared.is_async
    assert (declared.risk, declared.description, declared.version) == (
        Risk.WRITE_DRAFT,
        "Says the text louder.",
        "0.0.0",
    )
    assert declared.described().runtime.python == f"{__name__}:shout"


def test_a_skill_object_and_a_decorated_handler_register_alike() -> None:
    registry = SkillRegistry()
    registry.register(Skill("text.echo", shout))
    registry.register(shout)
    assert registry.names() == ["text.echo", "text.shout"]
    with pytest.raises(ConfigError, match="registered twice"):
        registry.register(shout)


def test_a_plain_function_is_refused_with_what_to_do() -> None:
    async def undeclared(ctx: TaskContext, input: dict[str, Any]) -> None:
        return None

    with pytest.raises(ConfigError, match=r"undeclared is not a skill: declare it with @skill\('name'\)"):
        SkillRegistry().register(undeclared)
    assert skill_of(Skill("x", undeclared)).name == "x"


def test_a_name_that_cannot_be_a_skill_is_refused_when_the_handler_is_declared() -> None:
    with pytest.raises(ConfigError, match="skill"):

        @skill("no spaces allowed")
        def handler(ctx: TaskContext, input: dict[str, Any]) -> None:
            return None
