"""Our task tools over MCP at /mcp: the official `mcp` client against the real app under uvicorn, both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from backend.app import create_app
from backend.settings import Settings
from backend.tasks.tools import TASK_TOOLS
from backend.team.tools import TOOLS
from tests.conftest import SECRET, bearer, make_token, serve

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def base(make_settings: Callable[..., Settings]) -> AsyncIterator[str]:
    """The app in JWT mode under real uvicorn; yields its base URL."""
    async with serve(create_app(make_settings(auth_secret=SECRET))) as url:
        yield url


@asynccontextmanager
async def mcp_session(url: str, headers: dict[str, str] | None) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as streams,
        ClientSession(streams[0], streams[1]) as session,
    ):
        await session.initialize()
        yield session


def leaves(error: BaseException) -> list[BaseException]:
    """The innermost exceptions of (nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


async def call(session: ClientSession, tool: str, arguments: dict[str, Any]) -> tuple[bool, Any]:
    """Call a tool; return (is_error, structured result or error text)."""
    result = await session.call_tool(tool, arguments)
    if result.is_error:
        return True, " ".join(getattr(part, "text", "") for part in result.content)
    return False, result.structured_content


async def test_lists_the_task_tools_with_the_agents_names_descriptions_and_schemas(base):
    async with mcp_session(base, bearer("alice")) as session:
        listed = {tool.name: tool for tool in (await session.list_tools()).tools}

    assert sorted(listed) == sorted(tool.name for tool in TASK_TOOLS)
    for function_tool in TOOLS:
        mcp_tool = listed[function_tool.name]
        assert mcp_tool.description == function_tool.description
        assert mcp_tool.input_schema == function_tool.params_json_schema
    assert listed["add_task"].input_schema["required"] == ["title"]


async def test_add_task_over_mcp_is_the_users_task_over_rest(base):
    async with mcp_session(base, bearer("alice")) as session:
        failed, added = await call(session, "add_task", {"title": "buy milk", "notes": "oat"})
        _, listed = await call(session, "list_tasks", {})

    assert not failed and added["task"]["title"] == "buy milk"
    assert [task["title"] for task in listed["tasks"]] == ["buy milk"]
    async with httpx.AsyncClient(base_url=base) as rest:
        alice = (await rest.get("/api/tasks", headers=bearer("alice"))).json()["data"]
        bob = (await rest.get("/api/tasks", headers=bearer("bob"))).json()["data"]
    assert [(task["id"], task["title"], task["notes"]) for task in alice] == [(added["task"]["id"], "buy milk", "oat")]
    assert bob == []


async def test_another_user_cannot_list_change_or_delete_the_tasks(base):
    async with httpx.AsyncClient(base_url=base) as rest:
        created = await rest.post("/api/tasks", json={"title": "alice's secret"}, headers=bearer("alice"))
    task_id = created.json()["id"]

    async with mcp_session(base, bearer("bob")) as session:
        _, listed = await call(session, "list_tasks", {})
        attempts = [
            await call(session, "complete_task", {"task": task_id}),
            await call(session, "update_task", {"task": task_id, "title": "pwned"}),
            await call(session, "delete_task", {"task": task_id}),
            await call(session, "delete_task", {"task": "alice's secret"}),
        ]

    assert listed == {"tasks": [], "truncated": False}
    assert [failed for failed, _ in attempts] == [True, True, True, True]
    assert all("Task not found." in text or "No task matches" in text for _, text in attempts)
    async with httpx.AsyncClient(base_url=base) as rest:
        task = (await rest.get(f"/api/tasks/{task_id}", headers=bearer("alice"))).json()
    assert (task["title"], task["completed"]) == ("alice's secret", False)


async def test_tool_errors_are_reported_like_the_agents(base):
    async with mcp_session(base, bearer("alice")) as session:
        too_long = await call(session, "add_task", {"title": "x" * 300})
        unknown = await call(session, "complete_task", {"task": "nothing like this"})
    assert too_long[0] and "title: " in too_long[1] and "at most 200" in too_long[1]
    assert unknown[0] and "No task matches 'nothing like this'." in unknown[1]


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": f"Bearer {make_token('alice', secret='another-secret-that-is-32-bytes-long!!')}"},
        {"Authorization": f"Bearer {make_token('alice', expires_in=-3600)}"},
        {"Authorization": f"Basic {make_token('alice')}"},
    ],
    ids=["missing", "malformed", "wrong-secret", "expired", "not-bearer"],
)
async def test_a_missing_or_bad_token_is_refused_with_401(base, headers):
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    async with httpx.AsyncClient(base_url=base) as raw:
        response = await raw.post(
            "/mcp",
            json=initialize,
            headers={"Accept": "application/json, text/event-stream", **(headers or {})},
        )
    assert response.status_code == 401
    assert response.json()["error"]["code"] in {"unauthorized", "token_expired"}
    assert "www-authenticate" in response.headers

    with pytest.raises(BaseExceptionGroup) as refused:  # the official client cannot even initialize
        async with mcp_session(base, headers):
            pytest.fail("the session must not open")
    assert [type(error) for error in leaves(refused.value)] == [MCPError]


async def test_local_mode_on_loopback_is_the_local_user(settings):
    async with serve(create_app(settings)) as url:
        async with mcp_session(url, None) as session:
            failed, added = await call(session, "add_task", {"title": "local task"})
        async with httpx.AsyncClient(base_url=url) as rest:
            titles = [task["title"] for task in (await rest.get("/api/tasks")).json()["data"]]
    assert not failed and added["task"]["title"] == "local task"
    assert titles == ["local task"]


async def test_local_mode_refuses_a_rebound_host_name(settings):
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as raw:
        response = await raw.post(
            "/mcp",
            json=initialize,
            headers={"Accept": "application/json, text/event-stream", "Host": "evil.example.com"},
        )
    assert response.status_code == 421
    assert response.json()["error"]["code"] == "invalid_host"


MCP_ACCEPT = {"Accept": "application/json, text/event-stream"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


async def test_get_is_405_in_stateless_mode_not_an_endless_stream(base):
    """A GET would open a server-to-client stream that never sends a byte; stateless mode has nothing to send."""
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(10, read=5)) as raw:
        response = await raw.get("/mcp", headers={**bearer("alice"), "Accept": "text/event-stream"})
        deleted = await raw.delete("/mcp", headers={**bearer("alice"), **MCP_ACCEPT})
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response.headers["allow"] == "POST"
    assert deleted.status_code == 405 and deleted.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("path", "headers", "content", "status", "code"),
    [
        ("/mcp/nowhere", {**MCP_ACCEPT, "Content-Type": "application/json"}, b"{}", 404, "not_found"),
        ("/mcp", {**MCP_ACCEPT, "Content-Type": "text/plain"}, b"{}", 415, "unsupported_media_type"),
    ],
)
async def test_mcp_refusals_are_our_json_error_body(base, path, headers, content, status, code):
    async with httpx.AsyncClient(base_url=base) as raw:
        response = await raw.post(path, content=content, headers={**bearer("alice"), **headers})
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code


async def test_jwt_mode_behind_a_reverse_proxy_accepts_the_public_host_name(make_settings):
    """Loopback HOST behind a proxy: the proxy forwards `Host: chat.example.com`; the Host check is local mode's."""
    settings = make_settings(auth_secret=SECRET, host="127.0.0.1")
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as raw:
        response = await raw.post(
            "/mcp", json=INITIALIZE, headers={**bearer("alice"), **MCP_ACCEPT, "Host": "chat.example.com"}
        )
    assert response.status_code == 200, response.text
    assert response.json()["result"]["serverInfo"]["name"] == "chatkit-tasks"
