"""Which coordinator method answers which API verb, checked before the API starts.

A handler is an async method marked `@serves(verbs.X)`: it takes the verb's request Struct and
returns its reply Struct, as `common/verbs.py` declares them. mypy checks the method against the
declaration where it is marked; `ApiRoutes` checks it again when it collects the handlers (the exact
types, async, one handler per verb) and, before the server subscribes, that every declared verb has
one. Decoding, id checks, error replies, reply fitting and tracing are the `ApiServer`'s, not the
handler's.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from common import verbs
from common.errors import ConfigError
from common.verbs import ReplyT, RequestT, Verb

S = TypeVar("S")

# What a reply may be trimmed with to fit a NATS message: (reply, budget in bytes) -> reply.
Fit = Callable[[ReplyT, int], ReplyT]
Method = Callable[[S, RequestT], Awaitable[ReplyT]]

_MARK = "__claw_serves__"


@dataclass(frozen=True, slots=True)
class Route:
    """A verb and the handler that answers it; `fit` trims a reply that would not fit one message."""

    verb: Verb[Any, Any]
    handler: Callable[[Any], Awaitable[Any]]
    fit: Callable[[Any, int], Any] | None = None


@dataclass(frozen=True, slots=True)
class _Mark:
    verb: Verb[Any, Any]
    fit: Callable[[Any, int], Any] | None


def serves(
    verb: Verb[RequestT, ReplyT], *, fit: Fit[ReplyT] | None = None
) -> Callable[[Method[S, RequestT, ReplyT]], Method[S, RequestT, ReplyT]]:
    """Mark a method as the handler of `verb`; `fit(reply, budget)` returns a reply of at most
    `budget` bytes (for replies holding data of the client's size: a task's timeline, a submit's notes)."""

    def mark(method: Method[S, RequestT, ReplyT]) -> Method[S, RequestT, ReplyT]:
        setattr(method, _MARK, _Mark(verb, fit))
        return method

    return mark


def marked(cls: type) -> list[tuple[str, Verb[Any, Any]]]:
    """The methods of `cls` marked with `@serves`, by name, with their verbs."""
    return [(name, mark.verb) for name, mark in _marks(cls)]


class ApiRoutes:
    """verb name -> `Route`, each checked against the verb's declaration as it is added."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}

    @classmethod
    def of(cls, *providers: object) -> ApiRoutes:
        """The routes of every `@serves` method of `providers`."""
        routes = cls()
        for provider in providers:
            for name, mark in _marks(type(provider)):
                routes._add(mark.verb, getattr(provider, name), mark.fit)
        return routes

    def add(
        self,
        verb: Verb[RequestT, ReplyT],
        handler: Callable[[RequestT], Awaitable[ReplyT]],
        *,
        fit: Fit[ReplyT] | None = None,
    ) -> None:
        """Serve `verb` with `handler`; refuses a second handler and one whose types differ."""
        self._add(verb, handler, fit)

    def _add(self, verb: Verb[Any, Any], handler: Callable[[Any], Awaitable[Any]], fit: Fit[Any] | None) -> None:
        existing = self._routes.get(verb.name)
        if existing is not None:
            raise ConfigError(
                f"the API verb {verb.name} has two handlers: {_describe(existing.handler)} and {_describe(handler)}"
            )
        _check_signature(verb, handler)
        self._routes[verb.name] = Route(verb, handler, fit)

    def check_complete(self, declared: Iterable[Verb[Any, Any]] = verbs.ALL) -> None:
        """Refuse to serve unless every declared verb has a handler, and every handler a declared verb."""
        by_name = {verb.name: verb for verb in declared}
        missing = sorted(set(by_name) - set(self._routes))
        if missing:
            raise ConfigError(f"no handler for the API verb(s) {', '.join(missing)}: mark one method each with @serves")
        strays = sorted(name for name, route in self._routes.items() if by_name.get(name) is not route.verb)
        if strays:
            raise ConfigError(
                f"handlers for undeclared API verb(s) {', '.join(strays)}: declare them in common/verbs.py"
            )

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes.values())

    def __len__(self) -> int:
        return len(self._routes)


def _marks(cls: type) -> list[tuple[str, _Mark]]:
    found = []
    for name in dir(cls):
        mark = getattr(getattr(cls, name, None), _MARK, None)
        if isinstance(mark, _Mark):
            found.append((name, mark))
    return found


def _check_signature(verb: Verb[Any, Any], handler: Callable[..., Any]) -> None:
    """The handler is async, takes one argument of the verb's request type, and returns its reply type."""
    name = _describe(handler)
    if not inspect.iscoroutinefunction(handler):
        raise ConfigError(f"{name} serves {verb.name} but is not a coroutine function (async def)")
    parameters = list(inspect.signature(handler).parameters.values())
    try:
        hints = typing.get_type_hints(handler)
    except NameError as exc:
        raise ConfigError(f"{name} serves {verb.name}, but its annotations cannot be resolved: {exc}") from None
    takes = hints.get(parameters[0].name) if len(parameters) == 1 else None
    answers = hints.get("return")
    if takes is not verb.request or answers is not verb.reply:
        raise ConfigError(
            f"{name} serves {verb.name}, declared as {verb.request.__name__} -> {verb.reply.__name__}, but its "
            f"signature is ({', '.join(_type_name(hints.get(p.name)) for p in parameters)}) -> {_type_name(answers)}"
        )


def _describe(handler: Callable[..., Any]) -> str:
    return getattr(handler, "__qualname__", repr(handler))


def _type_name(type_: object) -> str:
    return getattr(type_, "__name__", None) or ("?" if type_ is None else str(type_))
