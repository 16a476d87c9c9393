"""The http.request skill against a real HTTP server on loopback: statuses are results, the host
allow-list holds, the body is capped, and connection trouble is retryable."""

from __future__ import annotations

import base64
import json
import socket
from typing import Any

import pytest

from common.config import ToolSettings
from common.errors import ConfigError, InvalidInputError, PermanentError, RetryableError, ToolTimeoutError
from tests.fakes.openai_server import FakeOpenAIServer
from tests.helpers import task_context
from worker.context import TaskContext
from worker.skills.tools.http import HttpTool

# The fake server is on loopback, which http.request refuses unless the worker allows it.
LOOPBACK = ["127.0.0.1"]


@pytest.fixture
def http() -> HttpTool:
    return HttpTool(ToolSettings(http_max_response_bytes=1000, http_allow_private=LOOPBACK))


@pytest.fixture
def ctx() -> TaskContext:
    return task_context("http.request")


async def test_get_returns_status_headers_and_text_body(
    http: HttpTool, ctx: TaskContext, openai_server: FakeOpenAIServer
) -> None:
    result = await http.request(ctx, {"url": f"{openai_server.url}/echo"})
    assert (result["status"], result["truncated"], result["body_base64"]) == (200, False, None)
    assert result["headers"]["content-type"] == "application/json"
    assert json.loads(result["body"])["method"] == "GET"


async def test_body_json_and_headers_reach_the_server(
    http: HttpTool, ctx: TaskContext, openai_server: FakeOpenAIServer
) -> None:
    await http.request(ctx, {"method": "post", "url": f"{openai_server.url}/echo", "json": {"a": [1, 2]}})
    await http.request(
        ctx, {"method": "PUT", "url": f"{openai_server.url}/echo", "body": "plain", "headers": {"X-Agent": "a-7"}}
    )
    posted, put = openai_server.requests
    assert (posted.method, posted.json(), posted.headers["content-type"]) == ("POST", {"a": [1, 2]}, "application/json")
    assert (put.method, put.body, put.headers["x-agent"]) == ("PUT", b"plain", "a-7")


@pytest.mark.parametrize("status", [201, 404, 500])
async def test_any_status_is_a_result_not_an_error(
    http: HttpTool, ctx: TaskContext, openai_server: FakeOpenAIServer, status: int
) -> None:
    result = await http.request(ctx, {"method": "DELETE", "url": f"{openai_server.url}/echo?status={status}"})
    assert result["status"] == status


async def test_redirects_are_returned_not_followed(
    http: HttpTool, ctx: TaskContext, openai_server: FakeOpenAIServer
) -> None:
    result = await http.request(ctx, {"url": f"{openai_server.url}/redirect"})
    assert (result["status"], result["headers"]["location"]) == (302, "/echo")
    assert [r.path for r in openai_server.requests] == ["/redirect"]


async def test_a_body_over_the_cap_is_cut_and_flagged(
    http: HttpTool, ctx: TaskContext, openai_server: FakeOpenAIServer
) -> None:
    result = await http.request(ctx, {"url": f"{openai_server.url}/bytes?n=100000"})
    assert (result["status"], result["body"], result["truncated"]) == (200, "x" * 1000, True)
    exact = await http.request(ctx, {"url": f"{openai_server.url}/bytes?n=1000"})
    assert (len(exact["body"]), exact["truncated"]) == (1000, False)


async def test_a_binary_body_comes_as_base64(http: HttpTool, ctx: TaskContext, openai_server: FakeOpenAIServer) -> None:
    result = await http.request(ctx, {"url": f"{openai_server.url}/binary"})
    assert result["body"] is None
    assert base64.b64decode(result["body_base64"]) == (bytes(range(256)) * 4)[:1000]


async def test_head_has_an_empty_body(http: HttpTool, ctx: TaskContext, openai_server: FakeOpenAIServer) -> None:
    result = await http.request(ctx, {"method": "HEAD", "url": f"{openai_server.url}/bytes?n=50"})
    assert (result["status"], result["body"], result["headers"]["content-length"]) == (200, "", "50")


async def test_a_host_outside_the_allow_list_is_refused_before_connecting(
    ctx: TaskContext, openai_server: FakeOpenAIServer
) -> None:
    http = HttpTool(ToolSettings(http_allow_hosts=["example.com", "*.example.org"]))
    with pytest.raises(PermanentError, match="host '127.0.0.1' is not allowed.*tools.http_allow_hosts"):
        await http.request(ctx, {"url": f"{openai_server.url}/echo"})
    assert openai_server.requests == []
    allowed = HttpTool(ToolSettings(http_allow_hosts=["127.0.0.1"], http_allow_private=LOOPBACK))
    assert (await allowed.request(ctx, {"url": f"{openai_server.url}/echo"}))["status"] == 200


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("example.com", True),
        ("EXAMPLE.com", True),
        ("api.example.org", True),
        ("deep.api.example.org", True),
        ("example.org", False),
        ("badexample.org", False),
        ("example.com.evil.net", False),
        ("other.com", False),
    ],
)
def test_allow_list_matches_exact_hosts_and_subdomains_of_star_entries(host: str, allowed: bool) -> None:
    http = HttpTool(ToolSettings(http_allow_hosts=["example.com", "*.example.org"]))
    if allowed:
        assert http._allowed_url(f"https://{host}/x").host == host.lower()
    else:
        with pytest.raises(PermanentError, match="not allowed"):
            http._allowed_url(f"https://{host}/x")


@pytest.mark.parametrize("entry", ["example.com:443", "https://example.com", "*", "a*.b.com"])
def test_invalid_allow_list_entries_are_a_config_error(entry: str) -> None:
    with pytest.raises(ConfigError, match="tools.http_allow_hosts"):
        HttpTool(ToolSettings(http_allow_hosts=[entry]))


async def test_a_refused_connection_is_retryable(http: HttpTool, ctx: TaskContext) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more.
    with pytest.raises(RetryableError, match="http.request: GET 127.0.0.1 failed"):
        await http.request(ctx, {"url": f"http://127.0.0.1:{port}/"})


async def test_a_timeout_is_retryable(http: HttpTool, ctx: TaskContext, openai_server: FakeOpenAIServer) -> None:
    with pytest.raises(ToolTimeoutError, match="got no answer within 0.3 s") as caught:
        await http.request(ctx, {"url": f"{openai_server.url}/hang", "timeout_s": 0.3})
    assert isinstance(caught.value, RetryableError)


@pytest.mark.parametrize(
    ("input", "message"),
    [
        ({}, "http.request: 'url' must be a string"),
        ({"url": "ftp://example.com/x"}, "'url' must be an http:// or https:// URL"),
        ({"url": "http:///nohost"}, "'url' must be an http:// or https:// URL"),
        ({"url": "http://x", "method": "FETCH"}, "'method' must be one of GET, POST"),
        ({"url": "http://x", "body": "a", "json": {}}, "give 'body' or 'json', not both"),
        ({"url": "http://x", "headers": {"Host": "y"}}, "'headers' may not set Host"),
        ({"url": "http://x", "headers": {"X": "a\r\nInjected: 1"}}, "must be printable ASCII"),
        ({"url": "http://x", "timeout_s": "5"}, "'timeout_s' must be a number"),
        ({"url": "http://x", "follow": True}, "unknown field\\(s\\) 'follow'"),
    ],
)
async def test_bad_input_is_refused_naming_the_field(
    http: HttpTool, ctx: TaskContext, input: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        await http.request(ctx, input)
