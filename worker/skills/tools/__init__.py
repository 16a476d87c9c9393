"""The agent tool skills: files, programs, Python, HTTP and LLM calls, within the worker's limits.

`tool_skills(config.tools)` returns them; each handler closes over the `tools` config section, which
sets the sandbox, the allow-lists and the caps (docs/Tool_skills.md). Their manifests
(common/builtin_skills/) name `from_config` as their factory, so every worker offers them.
"""

from __future__ import annotations

from common.clock import SYSTEM_CLOCK, Clock
from common.config import ClawConfig, ToolSettings
from worker.skills import Skill


def tool_skills(settings: ToolSettings, *, clock: Clock = SYSTEM_CLOCK) -> list[Skill]:
    """fs.read, fs.write, fs.list, fs.mkdir, shell.exec, python.exec, http.request and llm.chat,
    limited by `settings`; a setting they cannot work with is a ConfigError here, not at run time."""
    from worker.skills.tools.fs import FileTools
    from worker.skills.tools.http import HttpTool
    from worker.skills.tools.isolation import Isolation
    from worker.skills.tools.llm import LlmTool
    from worker.skills.tools.python_exec import PythonTool
    from worker.skills.tools.shell import ShellTool

    isolation = Isolation(settings)
    tools = (
        FileTools(settings),
        ShellTool(settings, isolation),
        PythonTool(settings, isolation),
        HttpTool(settings),
        LlmTool(settings, clock),
    )
    return [skill for tool in tools for skill in tool.skills()]


def from_config(config: ClawConfig) -> list[Skill]:
    """The tool skills for a worker's whole config: the factory their manifests name."""
    return tool_skills(config.tools)
