"""Imports the module of an example skill folder (examples/skills/...) for unit tests of its functions.

The skills are folders, not packages (each is installed on its own), so their modules are loaded by
path under a name of their own, as the worker's loader does.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

SKILLS = Path(__file__).resolve().parent.parent / "examples" / "skills"


def load_skill_module(folder: str, module: str) -> ModuleType:
    """`examples/skills/<folder>/<module>.py` as a module named after both."""
    path = SKILLS / folder / f"{module}.py"
    name = f"example_skill_{folder.replace('/', '_')}_{module}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded  # dataclasses look their module up by name
    spec.loader.exec_module(loaded)
    return loaded


def example_input(folder: str) -> dict[str, Any]:
    """The skill's `example_input.json`."""
    return json.loads((SKILLS / folder / "example_input.json").read_text())  # type: ignore[no-any-return]


def run_command_skill(folder: str, script: str, request: Any) -> subprocess.CompletedProcess[str]:
    """Run a command skill's program as its manifest says (`python3 <script>` in its folder), the
    request on stdin; the caller reads stdout (the result) or the exit code and stderr."""
    return subprocess.run(
        ["python3", script],
        cwd=SKILLS / folder,
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
