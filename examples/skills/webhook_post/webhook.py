"""webhook.post: one JSON POST; 5xx and connection errors are retried, other errors are not."""

from typing import Any

import httpx

from common import PermanentError, RetryableError


async def post(ctx: Any, input: dict[str, Any]) -> dict[str, Any]:
    """POST the payload; return the status and the first 1,000 characters of the answer."""
    headers = {"X-Claw-Task": ctx.task_id}
    try:
        async with httpx.AsyncClient(timeout=20, follow_redirects=False, trust_env=False) as client:
            response = await client.post(input["url"], json=input["payload"], headers=headers)
    except httpx.TransportError as exc:
        raise RetryableError(f"webhook unreachable: {exc}") from None
    if response.status_code >= 500:
        raise RetryableError(f"webhook answered {response.status_code}")
    if response.status_code >= 400:
        raise PermanentError(f"webhook refused the payload: {response.status_code} {response.text[:200]}")
    return {"status": response.status_code, "body": response.text[:1000]}
