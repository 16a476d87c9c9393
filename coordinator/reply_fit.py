"""Making a task view, a submit reply or a dead letter fit one NATS message.

These hold data whose size the client chose (an input, a result, a long event timeline, tracebacks).
When one would not fit, the parts that can be read elsewhere are left out, and the message says so:
the oldest events of a view (`events_omitted`), an oversize input or result (replaced by
`{"$omitted": {"bytes": N}}`; the database still holds it, `claw artifacts` has the artifact ones),
a dead letter's input (`input_omitted`; a replay re-runs the task from the database), why the tasks
of a huge submit reply are held (the state says they are; their `held` events say why).
"""

from __future__ import annotations

import msgspec

from common.api import SubmitReply, SubmitResult
from common.models import OMITTED_MARKER, AttemptError, DeadLetter, EventView, TaskView
from common.states import TaskState
from communication.codec import encode

# Inputs and results at least this big are the first thing a view leaves out when it is too big.
OVERSIZE_PAYLOAD_BYTES = 64 * 1024
# A traceback or error message kept in a trimmed view or letter: its end (where the error is).
KEPT_TRACEBACK_CHARS = 4000
KEPT_MESSAGE_CHARS = 2000
# The events a trimmed view keeps from the start of the timeline (the submit, the first queueing).
KEPT_FIRST_EVENTS = 2


def omitted(size: int) -> msgspec.Raw:
    """What stands for an input or result left out of a message."""
    return msgspec.Raw(encode({OMITTED_MARKER: {"bytes": size}}))


def fit_task_view(view: TaskView, budget: int) -> TaskView:
    """`view`, or a trimmed copy whose JSON takes at most `budget` bytes."""
    if len(encode(view)) <= budget:
        return view
    changes: dict[str, object] = {}
    for name in ("input", "result"):
        raw: msgspec.Raw = getattr(view, name)
        if len(raw) >= OVERSIZE_PAYLOAD_BYTES:
            changes[name] = omitted(len(raw))
    if view.error_traceback is not None:
        changes["error_traceback"] = _tail(view.error_traceback, KEPT_TRACEBACK_CHARS)
    if view.error_message is not None:
        changes["error_message"] = _tail(view.error_message, KEPT_MESSAGE_CHARS)
    trimmed = msgspec.structs.replace(view, events=[], **changes)
    room = budget - len(encode(trimmed))
    kept = _fit_events(view, room)
    return msgspec.structs.replace(
        trimmed, events=kept, events_omitted=view.events_omitted + len(view.events) - len(kept)
    )


def _fit_events(view: TaskView, room: int) -> list[EventView]:
    """The first few events and as many of the newest as `room` bytes hold, in order."""
    sizes = [len(encode(e)) + 1 for e in view.events]
    head: list[int] = []
    for index in range(min(KEPT_FIRST_EVENTS, len(view.events))):
        if sizes[index] > room:
            break
        head.append(index)
        room -= sizes[index]
    tail: list[int] = []
    for index in range(len(view.events) - 1, len(head) - 1, -1):
        if sizes[index] > room:
            break
        tail.append(index)
        room -= sizes[index]
    return [view.events[i] for i in head + tail[::-1]]


def max_submit_results(budget: int) -> int:
    """How many tasks one submit may hold so that its reply fits `budget` even without the reasons
    (note, rule, approvals) a task is held or denied."""
    widest = SubmitResult(task_id="0" * 26, state=TaskState.WAITING_APPROVAL, duplicate=True, note="")
    envelope = len(encode(SubmitReply(results=[])))
    return (budget - envelope) // (len(encode(widest)) + 1)  # +1: the comma after each


def fit_submit_reply(reply: SubmitReply, budget: int) -> SubmitReply:
    """`reply`, or the same without why a task is held or denied (its note, rule and approvals
    needed) when it would not fit; `claw submit` then reads the rule from the task's `held` event."""
    if len(encode(reply)) <= budget:
        return reply
    return SubmitReply(
        results=[msgspec.structs.replace(r, note="", rule="", approvals_needed=0) for r in reply.results]
    )


def fit_dead_letter(letter: DeadLetter, budget: int) -> DeadLetter:
    """`letter`, or a copy that fits `budget` bytes: shorter tracebacks, then without its input."""
    if len(encode(letter)) <= budget:
        return letter
    attempts = [_short_attempt(a) for a in letter.attempts]
    letter = msgspec.structs.replace(letter, attempts=attempts)
    if len(encode(letter)) <= budget or letter.task is None:
        return letter
    task = msgspec.structs.replace(letter.task, input=omitted(len(letter.task.input)))
    letter = msgspec.structs.replace(letter, task=task, input_omitted=True)
    while len(encode(letter)) > budget and len(letter.attempts) > 1:
        # Pathological (hundreds of attempts): the newest ones tell what killed it.
        letter = msgspec.structs.replace(letter, attempts=letter.attempts[len(letter.attempts) // 2 :])
    return letter


def _short_attempt(attempt: AttemptError) -> AttemptError:
    return msgspec.structs.replace(
        attempt,
        traceback=None if attempt.traceback is None else _tail(attempt.traceback, KEPT_TRACEBACK_CHARS),
        message=None if attempt.message is None else _tail(attempt.message, KEPT_MESSAGE_CHARS),
    )


def _tail(text: str, chars: int) -> str:
    return text if len(text) <= chars else "…" + text[-chars:]
