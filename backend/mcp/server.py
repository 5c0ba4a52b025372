"""Our task tools served over MCP streamable HTTP at `/mcp`, inside the same Litestar app.

The tools are generated from `backend.tasks.tools.TASK_TOOLS` (the same definitions the agent uses), so names,
descriptions and input schemas match the chat agent's. Authentication is the app's own: the `/mcp` mount sits behind
the same middleware as `/api/*` (`backend.auth`), so a missing or bad bearer token gets `401` before MCP sees the
request, and local mode on loopback is the local user. Each tool call reads the user that the middleware verified
from the request scope (never from a header or an argument) and acts only for that user.

The transport is stateless (`stateless_http=True`, JSON responses): every POST carries a whole request, no MCP session
lives in process memory, so any worker can answer any request and no sticky routing is needed. Our tools never send
server-initiated messages, which is all that statefulness would add. So only POST is served: a GET (which would open
a server-to-client stream that never sends a byte and never ends) and a DELETE (no session to end) get `405`, which
the MCP specification allows and its clients expect.

Refusals speak the app's JSON error body. The `Host` and `Origin` checks are the app's own (`backend.http_guard`, local
mode only), so MCP's DNS-rebinding middleware is off: behind a reverse proxy in JWT mode, a public `Host` is fine. A
refusal the `mcp` package still answers in plain text (a wrong path, a body over its size cap) is rewritten into our
body; its JSON-RPC errors stay as they are, for MCP clients read those.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from litestar import asgi
from litestar.exceptions import MethodNotAllowedException
from litestar.handlers import ASGIRouteHandler
from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Message, Receive, Scope, Send
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.transport_security import TransportSecuritySettings
from pydantic_core import PydanticUndefined
from starlette.types import ASGIApp

from backend.auth import User
from backend.db import Database
from backend.errors import UnsupportedMediaTypeError, code_for_status, error_body, message_for_status
from backend.http_guard import content_type_matches
from backend.tasks.tools import TASK_TOOLS, JsonObject, TaskTool, ToolScope

MCP_PATH = "/mcp"
SERVER_NAME = "chatkit-tasks"


class TaskMcpServer:
    """The `/mcp` endpoint: an `MCPServer` with the task tools, its ASGI app, and the Litestar mount."""

    def __init__(self, host: str) -> None:
        """Build the MCP server and its ASGI app.

        Args:
            host: The address the app listens on. On a loopback address MCP's DNS-rebinding protection is on, so a
                web page cannot drive the local user's tools through a rebound host name.
        """
        self.database: Database | None = None
        tools = [
            # The handler's signature mirrors the argument model, so MCP validates the same fields; the published
            # schema is the shared definition's own, exactly as the agent's function tool publishes it.
            Tool.from_function(self._handler(tool), name=tool.name, description=tool.description).model_copy(
                update={"parameters": tool.input_schema()}
            )
            for tool in TASK_TOOLS
        ]
        self.mcp = MCPServer(SERVER_NAME, instructions="Manage the authenticated user's to-do list.", tools=tools)
        self.host = host
        self.asgi_app = self._build_asgi_app()

    def _build_asgi_app(self) -> ASGIApp:
        # Each call makes a fresh session manager (`self.mcp.session_manager`), which can run only once.
        return self.mcp.streamable_http_app(
            streamable_http_path="/",
            stateless_http=True,
            json_response=True,
            host=self.host,
            # `backend.http_guard` checks Host and Origin in local mode, and answers in our error body.
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )

    @asynccontextmanager
    async def running(self, database: Database) -> AsyncIterator[None]:
        """Serve requests while the app runs (mounted apps get no lifespan of their own).

        Args:
            database: Where the tools read and write tasks.
        """
        self.database = database
        self.asgi_app = self._build_asgi_app()  # an app can start more than once (tests re-enter the lifespan)
        async with self.mcp.session_manager.run():
            yield

    def mount(self) -> ASGIRouteHandler:
        """The Litestar route handler that forwards `/mcp` to the MCP app (behind the app's auth middleware)."""

        @asgi(MCP_PATH, is_mount=True, copy_scope=True)
        async def mcp_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
            if scope.get("method") != "POST":
                raise MethodNotAllowedException(headers={"Allow": "POST"})
            content_type = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-type"), "")
            if not content_type_matches(content_type, "application/json"):
                raise UnsupportedMediaTypeError("Send the body as application/json (Content-Type: application/json).")
            await self.asgi_app(scope, receive, json_errors(send))  # type: ignore[arg-type]

        return mcp_endpoint

    def _scope_of(self, ctx: Context) -> ToolScope:
        request = ctx.request_context.request
        user = getattr(request, "scope", {}).get("user")
        if not isinstance(user, User) or self.database is None:
            raise ToolError("Not authenticated.")
        return ToolScope(user_id=user.id, database=self.database)

    def _handler(self, tool: TaskTool) -> Callable[..., Awaitable[JsonObject]]:
        """An MCP tool function whose signature is the shared argument model's fields (so the schemas match)."""

        async def handler(ctx: Context, **arguments: object) -> JsonObject:
            result = await tool.invoke(self._scope_of(ctx), arguments)
            if "error" in result:
                raise ToolError(str(result["error"]))
            return result

        parameters = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=inspect.Parameter.empty if field.default is PydanticUndefined else field.default,
                annotation=Annotated[field.annotation, field],
            )
            for name, field in tool.args.model_fields.items()
        ]
        parameters.append(inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context))
        handler.__signature__ = inspect.Signature(parameters, return_annotation=dict[str, Any])  # type: ignore[attr-defined]
        handler.__annotations__ = {
            **{p.name: p.annotation for p in parameters},
            "return": dict[str, Any],
        }
        handler.__name__ = tool.name
        return handler


def json_errors(send: Send) -> Send:
    """Wrap `send` so that an error response that is not JSON goes out as our error body (same status)."""
    held: HTTPResponseStartEvent | None = None

    async def wrapped(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            content_type = next((bytes(v) for k, v in headers if bytes(k).lower() == b"content-type"), b"")
            if message["status"] >= 400 and not content_type.startswith(b"application/json"):
                held = message  # its plain-text body is dropped below
                return
        elif held is not None and message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            status = held["status"]
            body = json.dumps(error_body(code_for_status(status), message_for_status(status))).encode()
            kept = [(k, v) for k, v in held.get("headers", []) if bytes(k).lower() not in _REPLACED_HEADERS]
            kept += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            start: HTTPResponseStartEvent = {"type": "http.response.start", "status": status, "headers": kept}
            end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
            await send(start)
            await send(end)
            return
        await send(message)

    return wrapped


_REPLACED_HEADERS = frozenset({b"content-type", b"content-length"})
