"""Skills: named handlers a worker can run, and the registry of those it has.

A handler is `async def handler(ctx: TaskContext, input: dict) -> result` (or a plain `def`, which
runs in a thread) returning anything JSON can encode. It signals failure by raising: a
`RetryableError` (or a timeout or connection error) asks for another attempt, a `PermanentError`
(or any other exception) ends the task failed. docs/Skills.md has the full contract.

Every skill has a manifest (`common.skills.SkillManifest`): the built-in ones ship in
`common/builtin_skills/`, installed ones come from `claw skills install`, and a skill registered in
code without one gets a minimal manifest from its `Skill` fields. In code, `@skill("name")` on a
handler declares it (the function stays as it is) and `SkillRegistry.register` takes it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from common.config import ClawConfig
from common.errors import ConfigError, InvalidInputError
from common.skills import Risk, Runtime, SkillManifest
from communication.subjects import check_skill_name

if TYPE_CHECKING:
    from worker.context import TaskContext

AsyncHandler = Callable[["TaskContext", dict[str, Any]], Awaitable[Any]]
SyncHandler = Callable[["TaskContext", dict[str, Any]], Any]
HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])

# Where `@skill` keeps a function's `Skill`.
_SKILL_ATTR = "__claw_skill__"


@dataclass(frozen=True, slots=True)
class Skill:
    """A skill a worker can run."""

    name: str
    handler: AsyncHandler | SyncHandler
    description: str = ""
    version: str = "0.0.0"
    risk: Risk = Risk.READ_ONLY
    manifest: SkillManifest | None = None

    @property
    def is_async(self) -> bool:
        """Whether the handler is a coroutine function (else it runs in a thread)."""
        return inspect.iscoroutinefunction(self.handler)

    def described(self) -> SkillManifest:
        """This skill's manifest, or a minimal one from its fields for a skill registered in code."""
        if self.manifest is not None:
            return self.manifest
        return SkillManifest(
            name=self.name,
            version=self.version,
            description=self.description,
            risk=self.risk,
            runtime=Runtime(python=f"{getattr(self.handler, '__module__', 'code')}:{_callable_name(self.handler)}"),
        )


def skill(
    name: str, *, description: str | None = None, version: str = "0.0.0", risk: Risk = Risk.READ_ONLY
) -> Callable[[HandlerT], HandlerT]:
    """Declare a handler a skill; register it with `SkillRegistry.register(handler)`.

        @skill("text.word_count", risk=Risk.READ_ONLY)
        async def word_count(ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]: ...

    The function is returned unchanged, so it can still be called (and tested) directly. The
    description defaults to the first line of its docstring. A name that cannot be a skill's is
    refused here, when the module is imported, not when the first task arrives.
    """

    def declare(handler: HandlerT) -> HandlerT:
        summary = (inspect.getdoc(handler) or "").partition("\n")[0]
        declared = Skill(name, handler, summary if description is None else description, version, risk)
        _check_name(name)
        setattr(handler, _SKILL_ATTR, declared)
        return handler

    return declare


def skill_of(handler: Skill | Callable[..., Any]) -> Skill:
    """The `Skill` a handler was declared as with `@skill` (a `Skill` is itself)."""
    if isinstance(handler, Skill):
        return handler
    declared = getattr(handler, _SKILL_ATTR, None)
    if not isinstance(declared, Skill):
        what = getattr(handler, "__qualname__", None) or repr(handler)
        raise ConfigError(f"{what} is not a skill: declare it with @skill('name'), or register Skill('name', handler)")
    return declared


def _check_name(name: str) -> None:
    try:
        check_skill_name(name)
    except InvalidInputError as exc:
        raise ConfigError(str(exc)) from None


def _callable_name(handler: object) -> str:
    name = getattr(handler, "__name__", "handler")
    return name if name.isidentifier() else "handler"


class SkillRegistry:
    """The skills of one worker, validated when they are registered."""

    def __init__(self, skills: Iterable[Skill | Callable[..., Any]] = ()) -> None:
        self._skills: dict[str, Skill] = {}
        for each in skills:
            self.register(each)

    def register(self, skill: Skill | Callable[..., Any]) -> None:
        """Add a skill, or a handler declared with `@skill`; refuses invalid names, duplicates and
        non-callables."""
        skill = skill_of(skill)
        _check_name(skill.name)
        if skill.name in self._skills:
            raise ConfigError(f"skill '{skill.name}' is registered twice")
        if not callable(skill.handler):
            raise ConfigError(f"skill '{skill.name}': its handler is not callable")
        self._skills[skill.name] = skill

    def replace(self, skill: Skill) -> None:
        """Add or swap a skill (a newly enabled version)."""
        self._skills.pop(skill.name, None)
        self.register(skill)

    def remove(self, name: str) -> Skill | None:
        """Drop a skill (disabled); returns it."""
        return self._skills.pop(name, None)

    def get(self, name: str) -> Skill | None:
        """The skill called `name`, if registered."""
        return self._skills.get(name)

    def names(self) -> list[str]:
        """Registered skill names, sorted."""
        return sorted(self._skills)

    def all(self) -> list[Skill]:
        """Registered skills, by name."""
        return [self._skills[n] for n in self.names()]

    def select(self, names: list[str]) -> SkillRegistry:
        """A registry with only `names` (all when empty); unknown names are an error."""
        if not names:
            return SkillRegistry(self.all())
        unknown = sorted(set(names) - set(self._skills))
        if unknown:
            raise ConfigError(
                f"this worker cannot run skill(s) {', '.join(unknown)}; available: {', '.join(self.names())}"
            )
        return SkillRegistry(self._skills[n] for n in names)


def builtin_registry(config: ClawConfig | None = None) -> SkillRegistry:
    """The skills that ship with claw, from their manifests, that this worker's labels allow."""
    from worker.skills.loader import load_builtin_skills

    return SkillRegistry(load_builtin_skills(config or ClawConfig()))
