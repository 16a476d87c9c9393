"""How a task reads for a person: its input and result, what happened, how to run it again.

Shared by the commands that show tasks: `task show`, `task watch`, `submit --wait`, and the ones
that act on them (`task cancel|retry`, `dlq replay`).
"""

from __future__ import annotations

import shlex
from typing import Any

import msgspec

from cli.output import fmt_bytes, fmt_duration, shorten
from common.api import TaskActionReply
from common.models import ARTIFACT_MARKER, OMITTED_MARKER, RESULT_ARTIFACT, TaskView


def since(start: float | None, end: float | None) -> str:
    """The time from `start` to `end`, or '-' when either is unknown."""
    return "-" if start is None or end is None else fmt_duration(end - start)


def event_detail(kind: str, data: dict[str, Any], node_id: str | None = None) -> str:
    """What an event of the timeline says, in words: the same for `task show`, `task watch` and live
    events, with percentages rounded (a worker reports 33.333... when it is a third done)."""
    data = dict(data)
    if kind == "progress":
        percent = data.get("percent")
        parts = [] if percent is None else [f"{float(percent):.0f}%"]
        return " ".join([*parts, str(data.get("message") or "")]).strip()
    if kind == "log":
        return f"{data.get('level', 'info')}: {data.get('message', '')}"
    if "error_type" in data:
        retry = data.get("retry_in_s")
        return f"{data['error_type']}: {data.get('message', '')}" + ("" if retry is None else f"; retry in {retry:g} s")
    if kind == "started" and node_id:
        return f"on {node_id}"
    if kind == "artifact" and "name" in data:
        return f"{data['name']} ({fmt_bytes(int(data.get('size', 0)))})"
    if kind == "verifying":
        return f"the result ({data.get('check', '')})"
    if kind == "waiting for tenant share" and "tenant" in data:
        return f"tenant {data['tenant']}: published when its turn comes (docs/Flow_control.md)"
    flow = _flow_detail(kind, data)
    if flow is not None:
        return flow
    return "" if not data else shorten(msgspec.json.encode(data).decode(), 200)


def _flow_detail(kind: str, data: dict[str, Any]) -> str | None:
    """Flow control's rows (docs/Flow_control.md): what the task waits for, which key served it, usage."""
    if kind == "waiting for limit":
        return f"{data.get('key', '')}: {data.get('why', '')}"
    if kind == "limit granted":
        fallback = data.get("model")
        return str(data.get("key", "")) + (f" (fallback: {fallback})" if fallback else "")
    if kind == "usage":
        hit = " (cache hit)" if data.get("cache_hit") else ""
        tokens = f"{data.get('input_tokens', 0)} in / {data.get('output_tokens', 0)} out tokens"
        return f"{tokens}, {data.get('model', '')}{hit}"
    return None


def decode_data(raw: msgspec.Raw) -> dict[str, Any]:
    """An event's `data` as a dict (empty for null or anything that is not an object)."""
    value = msgspec.json.decode(bytes(raw)) if bytes(raw) not in (b"", b"null") else None
    return value if isinstance(value, dict) else {}


def json_text(raw: msgspec.Raw, limit: int = 2000) -> str:
    """A JSON value on one line of at most `limit` characters; '-' for null."""
    text = bytes(raw).decode()
    return "-" if text == "null" else shorten(text, limit)


def _artifact_ref(raw: msgspec.Raw) -> dict[str, object] | None:
    text = bytes(raw)
    if not text.startswith(b'{"' + ARTIFACT_MARKER.encode()):
        return None
    ref = msgspec.json.decode(text).get(ARTIFACT_MARKER)
    return ref if isinstance(ref, dict) else None


def _omitted_bytes(raw: msgspec.Raw) -> int | None:
    text = bytes(raw)
    if not text.startswith(b'{"' + OMITTED_MARKER.encode()):
        return None
    marker = msgspec.json.decode(text).get(OMITTED_MARKER)
    return int(marker.get("bytes", 0)) if isinstance(marker, dict) else None


def payload_text(raw: msgspec.Raw) -> str:
    """An input or result for a human: its JSON (shortened), or which artifact holds it."""
    omitted = _omitted_bytes(raw)
    if omitted is not None:
        return f"{fmt_bytes(omitted)}, too large to show in one message (the database keeps it)"
    ref = _artifact_ref(raw)
    if ref is None:
        return json_text(raw)
    return f"artifact {ref['name']} ({fmt_bytes(int(str(ref['size'])))}, sha256 {str(ref['sha256'])[:16]})"


def result_text(task: TaskView) -> str:
    """The whole result JSON, or, for one kept in the artifact store, how to fetch it."""
    text = payload_text(task.result)
    if text.startswith("artifact "):
        return f"{text}; claw artifacts get {task.task_id} {RESULT_ARTIFACT} -o {RESULT_ARTIFACT}"
    return bytes(task.result).decode()


def attempts_text(task: TaskView) -> str:
    """'2 of 3', or per series once a task was re-run: 'attempt 3 of 3 (series 2; 6 in all)'."""
    if task.series <= 1:
        return f"{task.attempts} of {task.max_attempts}"
    in_series = task.attempts - task.attempt_offset
    return f"attempt {in_series} of {task.max_attempts} (series {task.series}; {task.attempts} in all)"


def task_summary(task: TaskView) -> list[str]:
    """What happened, where the outputs are, and how to run it again."""
    lines = []
    retries = max(task.attempts - 1, 0)
    ran = since(task.started_at, task.finished_at)
    waited = since(task.queued_at, task.started_at)
    where = f" on {task.node_id}" if task.node_id else ""
    tries = f" ({retries} retr{'y' if retries == 1 else 'ies'})" if retries else ""
    if task.state.value in ("succeeded", "failed", "dead"):
        on = attempts_text(task) if task.series > 1 else f"attempt {task.attempts} of {task.max_attempts}"
        lines.append(f"{task.state.value} on {on}{where}; waited {waited} in the queue, ran {ran}{tries}")
    else:
        lines.append(f"{task.state.value}; {task.attempts} attempt(s) so far{where}")
    for artifact in task.artifacts:
        lines.append(
            f"artifact {artifact.name} ({fmt_bytes(artifact.size)}): "
            f"claw artifacts get {task.task_id} {artifact.name} -o {artifact.name.rsplit('/', 1)[-1]}"
        )
    lines.append(f"reproduce: {reproduce_command(task)}")
    return lines


def reproduce_command(task: TaskView) -> str:
    """A `claw submit` that runs the same task again."""
    by_file = _artifact_ref(task.input) is not None or _omitted_bytes(task.input) is not None
    given = "--input-file input.json" if by_file else f"--input {shlex.quote(bytes(task.input).decode())}"
    return (
        f"claw submit {task.skill} {given} --priority {task.priority.value} "
        f"--max-attempts {task.max_attempts} --timeout {task.timeout_s:g}"
    )


def render_action(reply: TaskActionReply, verb: str) -> None:
    """`claw task cancel|retry`, `claw dlq replay`: what happened to the task, in one sentence."""
    task_id = reply.task_id
    if not reply.changed:
        print(f"{task_id} unchanged ({reply.note or reply.state.value})")
    elif reply.state.value == "cancelled":
        print(f"{task_id} cancelled: it will not run again (a running attempt is stopped on its worker)")
    else:
        print(
            f"{task_id} {verb}: it runs again as a new series of attempts (now {reply.state.value}); "
            f"follow it with `claw task watch {task_id}`"
        )
