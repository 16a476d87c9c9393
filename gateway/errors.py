"""Errors as HTTP answers: a status per error code, and one JSON shape, `{"error": {code, message}}`.

The codes are the project's (`ClawError.code`, common/errors.py): stable, so clients branch on them.
"""

from __future__ import annotations

import msgspec
from starlette.responses import Response

from common.errors import ClawError

# The HTTP status of each error code; any other ClawError is a 400 (a request the cluster refused).
STATUS_OF_CODE: dict[str, int] = {
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "node_not_found": 404,
    "artifact_not_found": 404,
    "schedule_not_found": 404,
    "workflow_not_found": 404,
    "unknown_verb": 404,
    "payload_too_large": 413,
    "queue_full": 429,
    "internal": 500,
    "communication": 502,
    "nats_unavailable": 503,
    "coordinator_unavailable": 503,
    "timeout": 504,
}


class ErrorBody(msgspec.Struct, frozen=True):
    """What went wrong: a stable code and a one-line message for the user."""

    code: str
    message: str


class ErrorReply(msgspec.Struct, frozen=True):
    """The body of every error answer."""

    error: ErrorBody


def error_response(code: str, message: str, status: int | None = None) -> Response:
    """The JSON error answer for `code`."""
    body = msgspec.json.encode(ErrorReply(ErrorBody(code, message)))
    return Response(body, status_code=status or STATUS_OF_CODE.get(code, 400), media_type="application/json")


def response_for(error: ClawError) -> Response:
    """The JSON error answer for a project error."""
    return error_response(error.code, str(error))
