"""External MCP servers used by the agent, end to end through POST /chatkit.

Real MCP servers (`tests/fakes/mcp_tools.py`, written with the official `mcp` package) over stdio and streamable HTTP,
real uvicorn, the real Agents SDK and LiteLLM against the fake Gemini, both databases.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from litestar import Litestar

from backend.app import create_app
from backend.mcp.client import McpServers
from backend.mcp_config import parse_mcp_servers
from backend.settings import PROJECT_ROOT, Settings
from tests.conftest import SECRET, bearer, serve
from tests.fakes.gemini import function_call_turn, handoff_turn, text_turn
from tests.fakes.mcp_tools import CountingApp
from tests.sse import chat

pytestmark = pytest.mark.timeout(90)

STDIO = {"name": "fake", "command": sys.executable, "args": ["-m", "tests.fakes.mcp_tools"], "cwd": str(PROJECT_ROOT)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def http_server() -> Iterator[str]:
    """The fake MCP server over streamable HTTP, as its own uvicorn process; yields its /mcp URL."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.mcp_tools", "--http", "--port", str(port)], cwd=PROJECT_ROOT
    )
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                assert process.poll() is None, "the fake MCP server exited"
                subprocess.run(["sleep", "0.05"], check=True)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


def mcp_settings(gemini_settings: Callable[..., Settings], servers: list[dict[str, Any]], **overrides: Any) -> Settings:
    """Settings for the fake Gemini with these external MCP servers."""
    return gemini_settings(mcp_servers=json.dumps(servers), mcp_connect_timeout_seconds=20, **overrides)


@asynccontextmanager
async def live(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Litestar]]:
    app = create_app(settings)
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        yield client, app


def declared_tools(request: dict[str, Any]) -> list[str]:
    """The tool names a Gemini request offered the model."""
    return [f["name"] for group in request.get("tools", []) for f in group.get("function_declarations", [])]


async def wait_until_connected(servers: McpServers, name: str) -> None:
    while name not in servers.connected():
        await asyncio.sleep(0.05)


async def test_a_stdio_tool_is_called_through_chat(gemini_settings, fake):
    fake.script(handoff_turn(), function_call_turn("mcp_fake__echo", {"text": "hello"}), text_turn("It echoed."))
    async with live(mcp_settings(gemini_settings, [STDIO])) as (client, _):
        stream = await chat(client, {"message": "echo hello"})

    assert stream.types[:5] == ["start", "agent", "agent", "tool_call", "tool_result"] and stream.types[-1] == "done"
    assert stream.of("tool_result")[0]["name"] == "mcp_fake__echo"
    assert stream.of("tool_result")[0]["result"] == {"text": "echo: hello"}, "MCP text content, one shape"
    offered = declared_tools(fake.requests[1])  # the task assistant's, after triage handed off
    assert {"add_task", "mcp_fake__echo", "mcp_fake__boom"} <= set(offered), "our tools and the server's, prefixed"
    assert "echo: hello" in json.dumps(fake.requests[2]["contents"]), "the model saw the tool's output"


async def test_a_server_configured_to_require_approval_pauses_each_call(gemini_settings, fake):
    fake.script(handoff_turn(), function_call_turn("mcp_fake__echo", {"text": "hello"}), text_turn("It echoed."))
    async with live(mcp_settings(gemini_settings, [{**STDIO, "require_approval": True}])) as (client, _):
        paused = await chat(client, {"message": "echo hello"})
        approval = paused.of("approval_request")[0]
        assert approval["name"] == "mcp_fake__echo" and paused.of("done")[0]["finish_reason"] == "approval_required"
        assert "tool_result" not in paused.types, "nothing ran before the approval"
        resumed = await chat(
            client,
            {"thread_id": paused.events[0]["conversation_id"], "approvals": [{"id": approval["id"], "approve": True}]},
        )
    assert "echo: hello" in json.dumps(resumed.of("tool_result")[0]["result"])
    assert resumed.of("done")[0]["finish_reason"] == "stop"


async def test_an_http_tool_gets_the_user_through_meta_never_the_prompt(gemini_settings, fake, http_server):
    server = {"name": "remote", "url": http_server, "send_user_id": True, "tools": ["whoami", "echo"]}
    fake.script(handoff_turn(), function_call_turn("mcp_remote__whoami", {}), text_turn("You are alice."))
    async with live(mcp_settings(gemini_settings, [server], auth_secret=SECRET)) as (client, _):
        stream = await chat(client, {"message": "who am I?"}, headers=bearer("alice"))

    assert stream.types[-1] == "done" and stream.of("done")[0]["finish_reason"] == "stop"
    assert "alice" in json.dumps(stream.of("tool_result")[0]["result"])
    assert sorted(n for n in declared_tools(fake.requests[1]) if n.startswith("mcp_")) == [
        "mcp_remote__echo",
        "mcp_remote__whoami",
    ], "the allow-list hides the other tools"
    assert "alice" not in json.dumps(fake.requests[:2]), "the user id is never put in the prompt"


async def test_a_server_down_at_start_up_leaves_chat_working_without_its_tools(gemini_settings, fake):
    dead_stdio = {"name": "gone", "command": sys.executable, "args": ["-c", "raise SystemExit(1)"]}
    dead_http = {"name": "offline", "url": f"http://127.0.0.1:{_free_port()}/mcp", "timeout_seconds": 2}
    fake.script(handoff_turn(), text_turn("Hello without tools."))
    async with live(mcp_settings(gemini_settings, [dead_stdio, dead_http, STDIO])) as (client, app):
        assert app.state.mcp_servers.connected() == ["fake"]
        stream = await chat(client, {"message": "hi"})

    assert stream.text == "Hello without tools."
    assert stream.of("done")[0]["finish_reason"] == "stop"
    offered = declared_tools(fake.requests[1])
    assert "add_task" in offered and "mcp_fake__echo" in offered
    assert not [name for name in offered if name.startswith(("mcp_gone__", "mcp_offline__"))]


async def test_a_server_killed_mid_run_is_an_error_result_and_comes_back(gemini_settings, fake):
    fake.script(
        handoff_turn(),
        function_call_turn("mcp_fake__die", {}),
        text_turn("The tool service crashed."),
        handoff_turn(),
        function_call_turn("mcp_fake__echo", {"text": "again"}),
        text_turn("Back."),
    )
    async with live(mcp_settings(gemini_settings, [STDIO], mcp_reconnect_max_seconds=1)) as (client, app):
        killed = await chat(client, {"message": "die"})
        await asyncio.wait_for(wait_until_connected(app.state.mcp_servers, "fake"), 30)
        again = await chat(client, {"message": "echo again"})

    assert killed.types[:5] == ["start", "agent", "agent", "tool_call", "tool_result"] and killed.types[-1] == "done"
    assert killed.of("done")[0]["finish_reason"] == "stop"
    assert "error" in killed.of("tool_result")[0]["result"]
    assert "echo: again" in json.dumps(again.of("tool_result")[0]["result"]), "reconnected in the background"


async def test_a_tool_that_raises_comes_back_as_an_error_result(gemini_settings, fake, http_server):
    fake.script(handoff_turn(), function_call_turn("mcp_remote__boom", {}), text_turn("That tool failed."))
    async with live(mcp_settings(gemini_settings, [{"name": "remote", "url": http_server}])) as (client, app):
        stream = await chat(client, {"message": "boom"})
        assert app.state.mcp_servers.connected() == ["remote"], "a failing tool does not drop the server"

    assert stream.types[:5] == ["start", "agent", "agent", "tool_call", "tool_result"] and stream.types[-1] == "done"
    assert stream.of("tool_result")[0]["result"]["error"].startswith("The tool failed: ")
    assert "error" in json.dumps(fake.requests[2]["contents"])


async def test_the_tool_list_refreshes_when_the_server_says_it_changed():
    servers = McpServers(parse_mcp_servers([STDIO]), health_seconds=60)
    await servers.start(connect_timeout=20)
    try:
        server = servers.servers[0]
        assert "grown" not in [tool.name for tool in await server.list_tools()]
        await server.call_tool("grow", {})
        names: list[str] = []
        for _ in range(200):
            names = [tool.name for tool in await server.list_tools()]
            if "grown" in names:
                break
            await asyncio.sleep(0.05)
        assert "grown" in names, "notifications/tools/list_changed must invalidate the cached list"
    finally:
        await servers.stop()
    assert not server.available


async def test_an_idle_server_costs_no_round_trip_per_turn_and_the_offline_help_names_its_tools(make_settings):
    counting = CountingApp()
    async with serve(counting) as mcp_base:  # type: ignore[arg-type]
        server = {"name": "counted", "url": f"{mcp_base}/mcp"}
        settings = make_settings(
            offline_model=True, mcp_servers=json.dumps([server]), mcp_health_seconds=600, mcp_connect_timeout_seconds=20
        )
        async with live(settings) as (client, _):
            at_start = Counter(counting.methods)
            streams = [await chat(client, {"message": text}) for text in ("add buy milk", "list my tasks", "hello")]
            during_turns = counting.methods - at_start

    assert at_start["tools/list"] == 1, "the tool list is fetched once, at start-up"
    assert not during_turns, f"turns must not reach an idle MCP server, got {dict(during_turns)}"
    assert all(stream.of("done")[0]["finish_reason"] == "stop" for stream in streams)
    assert "(offline demo)" in streams[2].text and "mcp_counted__echo" in streams[2].text
