"""Each API verb is declared once, and the coordinator's handlers are checked against the declarations.

`common/verbs.py` names every verb with its request and reply Structs and its role; a coordinator
method serves one with `@serves(verb)`. Registering a handler whose types differ from its verb's,
a second handler for a verb, or leaving a verb without one is refused before the API starts.
"""

from __future__ import annotations

import msgspec
import pytest

from common import api, verbs
from common.errors import ConfigError, InvalidInputError
from common.models import TaskView
from common.states import TaskState
from communication.codec import decode_request
from communication.subjects import Subjects
from coordinator.api_handlers import ApiHandlers
from coordinator.api_routes import ApiRoutes, marked, serves
from coordinator.flow.cache import CacheDesk
from coordinator.flow.desk import FlowDesk
from coordinator.quarantine import QuarantineDesk
from coordinator.schedules.engine import ScheduleEngine
from coordinator.workflows.desk import WorkflowDesk


class CancelDesk:
    """A stand-in provider: one well-typed handler."""

    @serves(verbs.TASK_CANCEL)
    async def cancel(self, request: api.TaskCancelRequest) -> api.TaskActionReply:
        return api.TaskActionReply(task_id=request.task_id, state=TaskState.CANCELLED)


def test_every_verb_has_a_unique_name_that_is_one_subject_token_and_a_role() -> None:
    names = [verb.name for verb in verbs.ALL]
    assert len(names) == len(set(names)) == len(verbs.BY_NAME)
    for verb in verbs.ALL:
        assert verbs.BY_NAME[verb.name] is verb
        assert Subjects("claw").api("alice", verb.name) == f"claw.api.alice.{verb.name}"
        assert verb.name.isidentifier() and verb.name.islower(), verb.name
        assert isinstance(verb.role, verbs.Role)
        assert issubclass(verb.request, msgspec.Struct) and issubclass(verb.reply, msgspec.Struct)
    assert verbs.BY_NAME["task_get"].reply is TaskView
    assert verbs.TASK_CANCEL.role == verbs.Role.OPERATOR and verbs.SUBMIT.role == verbs.Role.SUBMITTER


def test_every_declared_verb_is_served_by_exactly_one_coordinator_method() -> None:
    served = [
        verb.name
        for _, verb in marked(ApiHandlers)
        + marked(QuarantineDesk)
        + marked(FlowDesk)
        + marked(CacheDesk)
        + marked(WorkflowDesk)
        + marked(ScheduleEngine)
    ]
    assert sorted(served) == sorted(verb.name for verb in verbs.ALL)


def test_a_well_typed_handler_is_routed() -> None:
    desk = CancelDesk()
    routes = ApiRoutes.of(desk)
    [route] = list(routes)
    assert route.verb is verbs.TASK_CANCEL and route.handler == desk.cancel and route.fit is None


def test_a_handler_taking_another_request_type_is_refused_naming_both_signatures() -> None:
    class Desk:
        @serves(verbs.TASK_CANCEL)  # type: ignore[arg-type]  # the mistake this test is about
        async def cancel(self, request: api.TaskRetryRequest) -> api.TaskActionReply:
            raise NotImplementedError

    with pytest.raises(
        ConfigError,
        match=r"serves task_cancel, declared as TaskCancelRequest -> TaskActionReply, "
        r"but its signature is \(TaskRetryRequest\) -> TaskActionReply",
    ):
        ApiRoutes.of(Desk())


def test_a_handler_answering_another_reply_type_is_refused() -> None:
    class Desk:
        @serves(verbs.TASK_CANCEL)  # type: ignore[arg-type]  # the mistake this test is about
        async def cancel(self, request: api.TaskCancelRequest) -> api.SkillsReply:
            raise NotImplementedError

    with pytest.raises(ConfigError, match=r"\(TaskCancelRequest\) -> SkillsReply"):
        ApiRoutes.of(Desk())


def test_a_handler_that_is_not_async_is_refused() -> None:
    def cancel(request: api.TaskCancelRequest) -> api.TaskActionReply:
        raise NotImplementedError

    with pytest.raises(ConfigError, match="is not a coroutine function"):
        ApiRoutes().add(verbs.TASK_CANCEL, cancel)  # type: ignore[arg-type]  # the mistake this test is about


def test_a_second_handler_for_a_verb_is_refused_naming_both() -> None:
    with pytest.raises(ConfigError, match=r"task_cancel has two handlers: CancelDesk.cancel and CancelDesk.cancel"):
        ApiRoutes.of(CancelDesk(), CancelDesk())


def test_the_routes_are_refused_while_a_declared_verb_has_no_handler() -> None:
    routes = ApiRoutes.of(CancelDesk())
    with pytest.raises(ConfigError, match=r"no handler for the API verb\(s\) .*task_retry"):
        routes.check_complete()
    routes.check_complete([verbs.TASK_CANCEL])  # complete for this set of verbs


def test_a_handler_for_a_verb_not_in_the_table_is_refused() -> None:
    stray = verbs.Verb("task_cancel", api.TaskCancelRequest, api.TaskActionReply, role=verbs.Role.ADMIN)

    async def cancel(request: api.TaskCancelRequest) -> api.TaskActionReply:
        raise NotImplementedError

    routes = ApiRoutes()
    routes.add(stray, cancel)
    with pytest.raises(ConfigError, match="undeclared API verb"):
        routes.check_complete([verbs.TASK_CANCEL])


def test_a_request_is_decoded_as_its_verb_declares_with_defaults_for_an_empty_body() -> None:
    assert decode_request(verbs.TASK_LIST, b"") == api.TaskListRequest()
    assert decode_request(verbs.TASK_CANCEL, b'{"task_id": "01J"}') == api.TaskCancelRequest(task_id="01J")
    # A verb that takes nothing ignores what it is sent (as health checks may send anything).
    assert decode_request(verbs.PING, b"not json") == api.Empty()


def test_a_malformed_request_is_invalid_input_naming_the_field() -> None:
    with pytest.raises(InvalidInputError, match=r"invalid request: TaskListRequest.*\$\.limit"):
        decode_request(verbs.TASK_LIST, b'{"limit": "many"}')
    with pytest.raises(InvalidInputError, match="invalid request"):
        decode_request(verbs.TASK_CANCEL, b"{}")  # task_id is required
