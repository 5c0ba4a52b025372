"""A small external MCP server for the tests, written with the official `mcp` package (`MCPServer`).

Run it over stdio (`python -m tests.fakes.mcp_tools`) or streamable HTTP
(`python -m tests.fakes.mcp_tools --http --port 8123`, endpoint `/mcp`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("fake-tools")


@server.tool()
async def echo(text: str) -> str:
    """Repeat the text back."""
    return f"echo: {text}"


@server.tool()
async def whoami(ctx: Context) -> str:
    """Say which chat user the backend sent in the request's _meta (or 'nobody')."""
    meta = ctx.request_context.meta or {}
    return str(meta.get("chatkit/user_id", "nobody"))


@server.tool()
async def boom() -> str:
    """Always fail."""
    raise ValueError("kaboom")


@server.tool()
async def die() -> str:
    """End the server process in the middle of the call."""
    os._exit(3)


@server.tool()
async def nap(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return "rested"


@server.tool()
async def grow(ctx: Context) -> str:
    """Add a tool named `grown` and tell the client that the tool list changed."""
    server.add_tool(echo, name="grown", description="Added at run time.")
    await ctx.notify_tools_changed()
    return "grown"


@dataclass
class CountingApp:
    """The fake server's streamable-HTTP app, counting the MCP requests it receives by JSON-RPC method."""

    methods: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.app = server.streamable_http_app()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve one ASGI connection, counting each JSON-RPC request body's method."""
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        with contextlib.suppress(ValueError, AttributeError):
            self.methods[json.loads(body).get("method", "?")] += 1
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    parser.add_argument("--port", type=int, default=8123)
    options = parser.parse_args()
    if options.http:
        import uvicorn

        uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=options.port, log_level="warning")
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
