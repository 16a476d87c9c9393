"""The skill `http.request`: one HTTP(S) request to an allowed host, with a capped response.

Hosts: `tools.http_allow_hosts` lists exact host names (or IP addresses) and `*.suffix` entries,
which match any subdomain of the suffix (not the suffix itself); an empty list allows every host.
Addresses: whatever the host list says, the connection goes only to a public address - loopback,
link-local, private and the other local ranges are refused by the address the host resolves to,
unless `tools.http_allow_private` lists it (addresses.py, netguard.py). Redirects are followed only
when the input asks (`follow_redirects`, at most `tools.http_max_redirects`), and every hop is
checked again, host list and address alike. The worker's proxy variables and ~/.netrc are ignored
(`trust_env=False`): a task must not send the worker's credentials anywhere.

The response body is read as it streams in and cut at `tools.http_max_response_bytes`: the result
then holds the first bytes and `truncated: true` (an agent usually wants the start of a page more
than an error). Connection errors and timeouts are retryable; any HTTP status is a result.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import math
from typing import TYPE_CHECKING, Any

from common.config import ToolSettings
from common.errors import ConfigError, InvalidInputError, PermanentError, RetryableError, ToolTimeoutError
from worker.context import TaskContext
from worker.skills import Skill
from worker.skills.tools import inputs
from worker.skills.tools.addresses import AddressPolicy

if TYPE_CHECKING:
    # httpx (with its TLS stack) is imported on a worker's first HTTP call: ~15 MB a worker that
    # never makes one does not hold.
    import httpx

SKILL = "http.request"
FIELDS = ("method", "url", "headers", "body", "json", "timeout_s", "follow_redirects")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
SCHEMES = ("http", "https")
REFUSED_HEADERS = ("host",)


class HttpTool:
    """The http.request handler; it closes over the tool settings."""

    def __init__(self, settings: ToolSettings) -> None:
        self._settings = settings
        self._allow = [_allow_entry(entry) for entry in settings.http_allow_hosts]
        self._policy = AddressPolicy.from_entries(settings.http_allow_private)

    def skills(self) -> list[Skill]:
        """The one HTTP skill."""
        return [Skill(SKILL, self.request, "makes an HTTP request: {'method': 'GET', 'url': ...}")]

    async def request(self, ctx: TaskContext, input: dict[str, Any]) -> dict[str, Any]:
        """{method, url, headers?, body? | json?, timeout_s?, follow_redirects?} -> {status, url,
        headers, body | body_base64, truncated}."""
        import httpx

        from worker.skills.tools.netguard import guarded_client

        inputs.check_fields(SKILL, input, FIELDS)
        method = _method(input.get("method", "GET"))
        url = self._allowed_url(inputs.string(SKILL, input, "url"))
        headers = inputs.headers(SKILL, input, "headers", REFUSED_HEADERS)
        content = _content(input)
        timeout_s = min(self._settings.http_timeout_s, inputs.timeout_s(SKILL, input) or math.inf)
        redirects = self._settings.http_max_redirects if inputs.boolean(SKILL, input, "follow_redirects") else 0
        client = guarded_client(self._policy, SKILL, timeout_s=timeout_s, max_redirects=redirects, on_request=self._hop)
        try:
            async with (
                client,
                asyncio.timeout(timeout_s),
                client.stream(method, url, headers=headers, **content) as response,
            ):
                body, truncated = await read_capped(response, self._settings.http_max_response_bytes)
        except (TimeoutError, httpx.TimeoutException):
            raise ToolTimeoutError(f"{SKILL}: {method} {url.host} got no answer within {timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise transport_error(SKILL, f"{method} {url.host}", exc) from None
        return {
            "status": response.status_code,
            "url": str(response.url),
            "headers": _headers(response.headers),
            **_body(response, body, truncated),
            "truncated": truncated,
        }

    def _allowed_url(self, text: str) -> httpx.URL:
        import httpx

        try:
            url = httpx.URL(text)
        except (httpx.InvalidURL, ValueError, TypeError):
            raise InvalidInputError(f"{SKILL}: 'url' is not a valid URL") from None
        if url.scheme not in SCHEMES or not url.host:
            raise InvalidInputError(f"{SKILL}: 'url' must be an http:// or https:// URL with a host")
        self._check_host(url)
        return url

    def _check_host(self, url: httpx.URL) -> None:
        host = url.host.rstrip(".").lower()
        if self._allow and not any(_matches(host, entry) for entry in self._allow):
            raise PermanentError(
                f"{SKILL}: host '{host}' is not allowed on this worker; "
                "to allow it, add it to tools.http_allow_hosts in the worker's config"
            )

    async def _hop(self, request: httpx.Request) -> None:
        """Before every request, redirects included: the scheme and the host list hold for each."""
        if request.url.scheme not in SCHEMES:
            raise PermanentError(f"{SKILL}: a redirect to a {request.url.scheme}:// URL is not followed")
        self._check_host(request.url)


async def read_capped(response: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    """The first `max_bytes` of the (decoded) body, and whether there was more; stops reading there."""
    data = bytearray()
    async for chunk in response.aiter_bytes():
        room = max_bytes - len(data)
        if len(chunk) > room:
            data += chunk[:room]
            return bytes(data), True
        data += chunk
    return bytes(data), False


def transport_error(skill: str, what: str, exc: httpx.HTTPError) -> RetryableError | PermanentError:
    """Connection trouble is retryable; a request this side cannot even send is not."""
    import httpx

    # A request that cannot be sent as it is: another attempt fails the same way.
    local_errors = (httpx.LocalProtocolError, httpx.UnsupportedProtocol)
    message = f"{skill}: {what} failed: {str(exc) or type(exc).__name__}"
    if isinstance(exc, local_errors) or not isinstance(exc, httpx.TransportError):
        return PermanentError(message)
    return RetryableError(message)


def _allow_entry(entry: str) -> str:
    host = entry.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # an IPv6 address, as URLs write it
    name = host.removeprefix("*.")
    if not name or any(c in name for c in "/*@ ") or name.count(":") == 1:
        raise ConfigError(
            f"tools.http_allow_hosts: {entry!r} must be a host name, an IP address or '*.suffix', without a port"
        )
    return host


def _matches(host: str, entry: str) -> bool:
    if entry.startswith("*."):
        return host.endswith(entry[1:])
    return host == entry


def _method(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in METHODS:
        raise InvalidInputError(f"{SKILL}: 'method' must be one of {', '.join(METHODS)}")
    return value.upper()


def _content(input: dict[str, Any]) -> dict[str, Any]:
    if "body" in input and "json" in input:
        raise InvalidInputError(f"{SKILL}: give 'body' or 'json', not both")
    if "json" in input:
        return {"json": input["json"]}
    body = inputs.optional_string(SKILL, input, "body")
    return {} if body is None else {"content": body.encode("utf-8", errors="replace")}


def _headers(headers: httpx.Headers) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in headers.multi_items():
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return merged


def _body(response: httpx.Response, data: bytes, truncated: bool) -> dict[str, str | None]:
    """`body` as text when it decodes with the response's charset (default UTF-8), else base64."""
    try:
        decoder = codecs.getincrementaldecoder(response.charset_encoding or "utf-8")("strict")
        return {"body": decoder.decode(data, final=not truncated), "body_base64": None}
    except (LookupError, UnicodeDecodeError):
        return {"body": None, "body_base64": base64.b64encode(data).decode("ascii")}
