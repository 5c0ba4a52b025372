"""External MCP servers for the agent: connected once per process, kept connected, never able to break chat.

Each configured server becomes one Agents SDK server object (`MCPServerStdio` or `MCPServerStreamableHttp`) that lives
for the whole process and is attached to the agent once. A supervisor task per server connects it at start-up,
pings it while idle, and reconnects it with exponential backoff when it drops. While a server is not connected it
lists no tools (answered locally, without a round trip), so the model only sees the tools of connected servers and the
agent never has to be rebuilt. Tool lists are cached and refreshed when the server sends
`notifications/tools/list_changed`, and after every reconnection.

A failed call (the server died mid-run, timed out, or the tool raised) reaches the model as a `{"error": ...}` tool
result; it never ends the chat turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from agents import RunContextWrapper
from agents.agent import MCPConfig
from agents.exceptions import UserError
from agents.mcp import (
    MCPServer,
    MCPServerStdio,
    MCPServerStdioParams,
    MCPServerStreamableHttp,
    MCPToolMetaContext,
    create_static_tool_filter,
)
from mcp.client.subscriptions import Subscription, ToolsListChanged, listen
from mcp_types import CallToolResult, ServerNotification, TextContent, Tool, ToolListChangedNotification
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from backend.chat.context import ChatContext
from backend.mcp_config import HttpServerConfig, McpServerConfig, StdioServerConfig

log = logging.getLogger(__name__)

USER_ID_META_KEY = "chatkit/user_id"
FIRST_BACKOFF_SECONDS = 0.5
MAX_ERROR_CHARS = 300


def mcp_failure(_: RunContextWrapper[Any], error: Exception) -> str:
    """What the model gets when an MCP tool call fails: a JSON error, like our own tools' failures.

    Args:
        _: The run context (unused).
        error: Why the call failed (dead connection, timeout, server not connected).

    Returns:
        `{"error": "The tool failed: <first line of the error>"}` as JSON text.
    """
    detail = (str(error).splitlines() or [type(error).__name__])[0][:MAX_ERROR_CHARS]
    return json.dumps({"error": f"The tool failed: {detail}"}, ensure_ascii=False)


# How the agent exposes MCP tools: prefixed with their server (mcp_<server>__<tool>) so names never collide across
# servers or with our own tools, and failures reported to the model as data.
MCP_AGENT_CONFIG: MCPConfig = {"include_server_in_tool_names": True, "failure_error_function": mcp_failure}


def _user_id_meta(context: MCPToolMetaContext) -> dict[str, object] | None:
    chat = context.run_context.context
    return {USER_ID_META_KEY: chat.user_id} if isinstance(chat, ChatContext) else None


class ToolFailedError(UserError):
    """An MCP tool answered with `isError`; its text becomes the model's `{"error": ...}`.

    A `UserError`, so the SDK hands it to the failure function without logging a traceback.
    """


class _Supervised:
    """What a supervised server adds to the SDK class: availability, a wake-up signal, and list_changed handling."""

    available: bool
    wake: asyncio.Event

    def _init_supervision(self) -> None:
        self.available = False
        self.wake = asyncio.Event()

    async def on_message(self, message: ServerNotification | Exception) -> None:
        """Session message handler: refresh tools on list_changed; a transport error makes the supervisor check."""
        if isinstance(message, ToolListChangedNotification):
            self.invalidate_tools_cache()  # type: ignore[attr-defined]
        elif isinstance(message, Exception):
            self.wake.set()

    async def fetch_tools(self) -> list[Tool]:
        """Fetch the tool list from the server, raising if it fails (used by the supervisor)."""
        tools: list[Tool] = await super().list_tools()  # type: ignore[misc]
        return tools

    async def list_tools(self, run_context: Any = None, agent: Any = None) -> list[Tool]:
        """The server's (cached) tools; none while it is not connected, or if listing fails."""
        if not self.available:
            return []
        try:
            tools: list[Tool] = await super().list_tools(run_context, agent)  # type: ignore[misc]
            return tools
        except Exception as error:
            self.report("listing tools", error)
            return []

    async def call_tool(
        self, tool_name: str, arguments: dict[str, Any] | None, meta: dict[str, Any] | None = None
    ) -> CallToolResult:
        """Call a tool; a failure wakes the supervisor to check the connection, then reaches the model as an error."""
        if not self.available:
            raise UserError(f"MCP server {self.name!r} is not connected.")  # type: ignore[attr-defined]
        try:
            result: CallToolResult = await super().call_tool(tool_name, arguments, meta)  # type: ignore[misc]
        except Exception as error:
            self.report("calling a tool", error)
            raise
        if result.is_error:
            # The tool itself failed (the connection is fine): report it to the model as an error, not as output.
            text = " ".join(part.text for part in result.content if isinstance(part, TextContent))
            raise ToolFailedError(text or "the tool reported an error")
        return result

    def report(self, doing: str, error: Exception) -> None:
        """Log a failure (by class only: messages may carry tool data) and wake the supervisor."""
        log.warning(
            "MCP server %r failed while %s (%s); checking the connection",
            self.name,  # type: ignore[attr-defined]
            doing,
            type(error).__name__,
        )
        self.wake.set()


class SupervisedStdio(_Supervised, MCPServerStdio):
    """`MCPServerStdio` under supervision."""


class SupervisedHttp(_Supervised, MCPServerStreamableHttp):
    """`MCPServerStreamableHttp` under supervision."""


SupervisedServer = SupervisedStdio | SupervisedHttp


def build_server(config: McpServerConfig) -> SupervisedServer:
    """Build the SDK server object for one configured server (not connected yet).

    Args:
        config: The server's configuration from `MCP_SERVERS`.

    Returns:
        The server object the agent holds for the whole process.
    """
    common: dict[str, Any] = {
        "name": config.name,
        "cache_tools_list": True,
        # Each call pauses the run for the user's approval, like delete_task (see backend.chat.turn).
        "require_approval": "always" if config.require_approval else None,
        "client_session_timeout_seconds": config.timeout_seconds,
        "tool_filter": create_static_tool_filter(allowed_tool_names=list(config.tools))
        if config.tools is not None
        else None,
    }
    server: SupervisedServer
    if isinstance(config, StdioServerConfig):
        params: MCPServerStdioParams = {"command": config.command, "args": list(config.args)}
        if config.env is not None:
            params["env"] = config.env
        if config.cwd is not None:
            params["cwd"] = config.cwd
        server = SupervisedStdio(params=params, **common)
    else:
        assert isinstance(config, HttpServerConfig)
        server = SupervisedHttp(
            params={"url": config.url, "headers": dict(config.headers), "timeout": config.timeout_seconds},
            tool_meta_resolver=_user_id_meta if config.send_user_id else None,
            **common,
        )
    server._init_supervision()
    server.message_handler = server.on_message
    return server


class McpServers:
    """The configured external MCP servers and their supervisor tasks (one set per process)."""

    def __init__(
        self,
        configs: Sequence[McpServerConfig],
        *,
        health_seconds: float = 15.0,
        reconnect_max_seconds: float = 60.0,
    ) -> None:
        """Build (but do not connect) the servers.

        Args:
            configs: The servers from `MCP_SERVERS`.
            health_seconds: How often an idle server is pinged to notice that it dropped.
            reconnect_max_seconds: The longest wait between reconnection attempts.
        """
        self.configs = {config.name: config for config in configs}
        self.servers: list[SupervisedServer] = [build_server(config) for config in configs]
        self.health_seconds = health_seconds
        self.reconnect_max_seconds = reconnect_max_seconds
        self._tasks: list[asyncio.Task[None]] = []
        self._first_attempts: list[asyncio.Event] = []

    @property
    def agent_servers(self) -> list[MCPServer]:
        """The server objects to attach to the agent (all of them; disconnected ones list no tools)."""
        return list(self.servers)

    def connected(self) -> list[str]:
        """Names of the servers connected right now."""
        return [server.name for server in self.servers if server.available]

    async def start(self, connect_timeout: float) -> None:
        """Start one supervisor per server and wait (up to `connect_timeout`) for their first connection attempts.

        A server that is down at start-up does not delay start-up past the timeout; it keeps being retried.
        """
        for server in self.servers:
            attempted = asyncio.Event()
            self._first_attempts.append(attempted)
            self._tasks.append(asyncio.create_task(self._supervise(server, attempted), name=f"mcp:{server.name}"))
        if self._first_attempts:
            waits = [asyncio.create_task(event.wait()) for event in self._first_attempts]
            _, pending = await asyncio.wait(waits, timeout=connect_timeout)
            for wait in pending:
                wait.cancel()
            log.info("MCP servers connected: %s of %s", len(self.connected()), len(self.servers))

    async def stop(self) -> None:
        """Stop the supervisors; each disconnects its server (and ends its process) in its own task."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _supervise(self, server: SupervisedServer, attempted: asyncio.Event) -> None:
        """Keep one server connected: connect, ping while idle, and reconnect with backoff when it drops.

        Connecting and cleaning up happen in this one task, as the MCP client's cancel scopes require.
        """
        backoff = FIRST_BACKOFF_SECONDS
        try:
            while True:
                try:
                    await self._connect(server)
                    backoff = FIRST_BACKOFF_SECONDS
                    await self._watch(server, attempted)
                except Exception as error:
                    attempted.set()
                    log.warning(
                        "MCP server %r is unavailable (%s); its tools are hidden, retrying in %.1fs",
                        server.name,
                        type(error).__name__,
                        backoff,
                    )
                server.available = False
                await _cleanup(server)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.reconnect_max_seconds)
        finally:
            server.available = False
            await _cleanup(server)

    async def _connect(self, server: SupervisedServer) -> None:
        async with asyncio.timeout(server.client_session_timeout_seconds or None):
            await server.connect()  # type: ignore[no-untyped-call]
            server.invalidate_tools_cache()  # type: ignore[no-untyped-call]
            server.available = True
            # Fetch the tool list now so no chat turn pays for it; list_tools hides tools if this fails.
            tools = await server.fetch_tools()
        log.info("MCP server %r connected with %d tools", server.name, len(tools))

    async def _watch(self, server: SupervisedServer, ready: asyncio.Event) -> None:
        """Return (by raising) when the server stops answering pings; woken early by failures and transport errors.

        On 2026-07-28 connections tools/list_changed arrives only on a `subscriptions/listen` stream, so one is
        opened here; older servers send the notification unasked, to `on_message`.

        Args:
            server: The connected server.
            ready: Set once the server is fully set up (start-up waits for it).
        """
        session = server.session
        if session is None:
            raise ConnectionError("no session")
        async with contextlib.AsyncExitStack() as stack:
            if session.protocol_version in MODERN_PROTOCOL_VERSIONS:
                try:
                    subscription = await stack.enter_async_context(listen(session, tools_list_changed=True))
                except Exception as error:  # the server may not offer subscriptions: keep the cached list
                    log.info("MCP server %r: no tools/list_changed stream (%s)", server.name, type(error).__name__)
                else:
                    follower = asyncio.create_task(_follow_tool_changes(server, subscription))
                    stack.callback(follower.cancel)
            ready.set()
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(server.wake.wait(), timeout=self.health_seconds)
                server.wake.clear()
                async with asyncio.timeout(server.client_session_timeout_seconds or None):
                    await session.send_ping()


async def _follow_tool_changes(server: SupervisedServer, subscription: Subscription) -> None:
    """Drop the cached tool list whenever the server says it changed; wake the supervisor if the stream is lost."""
    try:
        async for event in subscription:
            if isinstance(event, ToolsListChanged):
                log.info("MCP server %r changed its tools", server.name)
                server.invalidate_tools_cache()  # type: ignore[no-untyped-call]
    except Exception:
        server.wake.set()


async def _cleanup(server: SupervisedServer) -> None:
    with contextlib.suppress(Exception):
        await server.cleanup()  # type: ignore[no-untyped-call]
