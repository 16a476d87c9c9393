"""An outcome larger than the server's max_payload can never be stored: the attempt must end failed
for good with a short event saying why, not stay unsettled and fail the same way on every delivery."""

from __future__ import annotations

from common.config import ClawConfig
from common.models import TaskView
from common.states import TaskState
from tests.helpers import connected_client, eventually, running_coordinator, running_worker, spec, wait_nodes_online
from worker import TaskContext
from worker.skills import Skill, SkillRegistry


async def test_an_error_too_large_to_report_fails_the_task_once_with_the_reason(config: ClawConfig) -> None:
    calls = 0

    async def shout(ctx: TaskContext, input: dict[str, object]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("x" * 2_000_000)  # its failed event is over the 1 MiB max_payload

    skills = SkillRegistry([Skill("shout", shout)])
    async with (
        running_coordinator(config),
        running_worker(config, skills=skills),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        [submitted] = await client.submit_many([spec("shout", {}, max_attempts=3)])

        async def ended() -> TaskView | None:
            task = await client.get_task(submitted.task_id)
            return task if task.state in (TaskState.FAILED, TaskState.DEAD) else None

        task = await eventually(ended, timeout_s=60, what="the task ended")
        assert calls == 1  # not retried: another attempt could only fail to report the same way
        assert task.attempts == 1
        assert task.error_type == "OutcomeTooLargeError"
        assert "failed event could not be reported" in (task.error_message or "")
        assert "max_payload" in (task.error_message or "")


async def test_a_handler_with_the_wrong_signature_fails_its_task_instead_of_crashing_the_attempt(
    config: ClawConfig,
) -> None:
    async def one_argument(input: dict[str, object]) -> None:  # the context argument forgotten
        return None

    skills = SkillRegistry([Skill("wrong", one_argument)])  # type: ignore[arg-type]
    async with (
        running_coordinator(config),
        running_worker(config, skills=skills),
        connected_client(config) as client,
    ):
        await wait_nodes_online(client, 1)
        [submitted] = await client.submit_many([spec("wrong", {})])

        async def ended() -> TaskView | None:
            task = await client.get_task(submitted.task_id)
            return task if task.state in (TaskState.FAILED, TaskState.DEAD) else None

        # Before the fix the call raised outside the attempt: nothing was reported and the message came
        # back after every ack wait (30 s) until max_deliver.
        task = await eventually(ended, timeout_s=20, what="the task failed")
        assert task.error_type == "TypeError" and "positional argument" in (task.error_message or "")
