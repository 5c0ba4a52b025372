"""The command line shared by the bench's peer servers (the floor, the SDK floor, the ChatKit peer)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from backend.__main__ import WORKER_START_SECONDS
from tests.bench import lag


def serve_peer(
    argv: list[str] | None, *, module: str, app: str, env_var: str, port: int, factory: bool = False
) -> None:
    """``python -m tests.bench.<module> --port P --upstream URL [--workers N]``: serve `app` with uvicorn.

    The upstream (the fake's ``/v1beta`` URL) goes to the workers through `env_var`, which also serves as the
    default of ``--upstream``.
    """
    parser = argparse.ArgumentParser(prog=f"python -m tests.bench.{module}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--upstream", default=os.environ.get(env_var))
    args = parser.parse_args(argv)
    if not args.upstream:
        parser.error(f"--upstream (or {env_var}) is required")
    os.environ[env_var] = args.upstream.rstrip("/")  # the workers read it
    uvicorn.run(
        f"tests.bench.{module}:{app}",
        factory=factory,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_worker_healthcheck=WORKER_START_SECONDS,  # uvicorn's 5 s respawns workers that import slowly
    )


SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
DONE = b"data: [DONE]\n\n"
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def frame(event: dict[str, Any]) -> bytes:
    """One SSE frame of our protocol."""
    return b"data: " + json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


async def chat_message(
    scope: dict[str, Any],
    receive: Receive,
    send: Send,
    startup: Callable[[], None],
    shutdown: Callable[[], Awaitable[None]] | None = None,
) -> str | None:
    """The plain-ASGI plumbing of the floors: the lifespan (see `run_lifespan`) and ``/health`` are answered here;
    for ``POST /chatkit`` the body is read and its ``message`` returned (None when there is nothing more to do)."""
    if scope["type"] == "lifespan":
        await run_lifespan(receive, send, startup, shutdown)
        return None
    if scope["type"] != "http":
        return None
    if scope["path"] == "/health":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return None
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    text: str = json.loads(body)["message"]
    return text


async def run_lifespan(
    receive: Receive, send: Send, startup: Callable[[], None], shutdown: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Answer an ASGI lifespan: `startup` (then the lag sampler) at start, `shutdown` at the end."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            startup()
            lag.start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if shutdown is not None:
                await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
