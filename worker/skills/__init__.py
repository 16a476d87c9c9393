"""Skills: named handlers a worker can run, and the registry of those it has.

A handler is `async def handler(ctx: TaskContext, input: dict) -> result` (or a plain `def`, which
runs in a thread) returning anything JSON can encode. It signals failure by raising: a
`RetryableError` (or a timeout or connection error) asks for another attempt, a `PermanentError`
(or any other exception) ends the task failed. docs/Skills.md has the full contract.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.errors import ConfigError, InvalidInputError
from communication.subjects import check_skill_name

if TYPE_CHECKING:
    from worker.context import TaskContext

AsyncHandler = Callable[["TaskContext", dict[str, Any]], Awaitable[Any]]
SyncHandler = Callable[["TaskContext", dict[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class Skill:
    """A skill a worker can run."""

    name: str
    handler: AsyncHandler | SyncHandler
    description: str = ""

    @property
    def is_async(self) -> bool:
        """Whether the handler is a coroutine function (else it runs in a thread)."""
        return inspect.iscoroutinefunction(self.handler)


class SkillRegistry:
    """The skills of one worker, validated when they are registered."""

    def __init__(self, skills: Iterable[Skill] = ()) -> None:
        self._skills: dict[str, Skill] = {}
        for skill in skills:
            self.register(skill)

    def register(self, skill: Skill) -> None:
        """Add a skill; refuses invalid names, duplicates and non-callables."""
        try:
            check_skill_name(skill.name)
        except InvalidInputError as exc:
            raise ConfigError(str(exc)) from None
        if skill.name in self._skills:
            raise ConfigError(f"skill '{skill.name}' is registered twice")
        if not callable(skill.handler):
            raise ConfigError(f"skill '{skill.name}': its handler is not callable")
        self._skills[skill.name] = skill

    def get(self, name: str) -> Skill | None:
        """The skill called `name`, if registered."""
        return self._skills.get(name)

    def names(self) -> list[str]:
        """Registered skill names, sorted."""
        return sorted(self._skills)

    def select(self, names: list[str]) -> SkillRegistry:
        """A registry with only `names` (all when empty); unknown names are an error."""
        if not names:
            return self
        unknown = sorted(set(names) - set(self._skills))
        if unknown:
            raise ConfigError(
                f"this worker cannot run skill(s) {', '.join(unknown)}; available: {', '.join(self.names())}"
            )
        return SkillRegistry(self._skills[n] for n in names)


def builtin_registry() -> SkillRegistry:
    """The skills every worker has."""
    from worker.skills.builtin import BUILTIN_SKILLS

    return SkillRegistry(BUILTIN_SKILLS)
