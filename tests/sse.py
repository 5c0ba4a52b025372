"""A small SSE client for tests: posts to /chatkit and records every frame with its arrival time."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Frame:
    """One SSE frame: a JSON event, the `[DONE]` sentinel, or a comment (keep-alive)."""

    at: float
    data: Any = None
    id: int | None = None
    comment: str | None = None
    done_sentinel: bool = False

    @property
    def type(self) -> str | None:
        return self.data.get("type") if isinstance(self.data, dict) else None


@dataclass
class Stream:
    """A recorded response."""

    status: int
    headers: httpx.Headers
    frames: list[Frame] = field(default_factory=list)
    body: Any = None

    @property
    def error_body(self) -> dict[str, Any]:
        """A JSON error answer without its `request_id`, once that id is checked against `X-Request-ID`."""
        assert isinstance(self.body, dict) and isinstance(self.body.get("error"), dict), self.body
        inner = dict(self.body["error"])
        assert inner.pop("request_id", None) == self.headers.get("x-request-id"), (self.body, self.headers)
        return {**self.body, "error": inner}

    @property
    def events(self) -> list[dict[str, Any]]:
        return [f.data for f in self.frames if isinstance(f.data, dict)]

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    @property
    def text(self) -> str:
        return "".join(e["content"] for e in self.of("text"))

    @property
    def last_id(self) -> int:
        return max((f.id for f in self.frames if f.id is not None), default=0)


async def chat(
    client: httpx.AsyncClient,
    body: dict[str, Any] | str,
    *,
    headers: dict[str, str] | None = None,
    stop_after_texts: int | None = None,
) -> Stream:
    """POST /chatkit and read the stream to its end (or close it after `stop_after_texts` text events)."""
    kwargs: dict[str, Any] = {"content": body} if isinstance(body, str) else {"json": body}
    if isinstance(body, str):  # raw JSON text, possibly malformed on purpose
        headers = {"Content-Type": "application/json", **(headers or {})}
    return await read_stream(client, "POST", "/chatkit", headers=headers, stop_after_texts=stop_after_texts, **kwargs)


async def rejoin(
    client: httpx.AsyncClient,
    message_id: str,
    *,
    last_event_id: int | None = None,
    after: int | None = None,
    headers: dict[str, str] | None = None,
    stop_after_texts: int | None = None,
) -> Stream:
    """GET /chatkit/{message_id}/stream (with `Last-Event-ID` or `?after=`) and read it to its end."""
    all_headers = dict(headers or {})
    if last_event_id is not None:
        all_headers["Last-Event-ID"] = str(last_event_id)
    path = f"/chatkit/{message_id}/stream" + (f"?after={after}" if after is not None else "")
    return await read_stream(client, "GET", path, headers=all_headers, stop_after_texts=stop_after_texts)


async def read_stream(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    stop_after_texts: int | None = None,
    **kwargs: Any,
) -> Stream:
    """Send a request whose answer is an SSE stream (or a JSON error) and record it."""
    start = time.monotonic()
    async with client.stream(method, path, headers=headers, **kwargs) as response:
        stream = Stream(status=response.status_code, headers=response.headers)
        if response.headers.get("content-type", "").startswith("application/json"):
            stream.body = json.loads(await response.aread())
            return stream
        texts = 0
        pending_id: int | None = None
        async for line in response.aiter_lines():
            now = time.monotonic() - start
            if not line:
                continue
            if line.startswith("id: "):
                pending_id = int(line[4:])
                continue
            if line.startswith(":"):
                stream.frames.append(Frame(at=now, comment=line[1:].strip()))
            elif line.startswith("data: "):
                payload = line[len("data: ") :]
                if payload == "[DONE]":
                    stream.frames.append(Frame(at=now, done_sentinel=True))
                    continue
                frame = Frame(at=now, data=json.loads(payload), id=pending_id)
                pending_id = None
                stream.frames.append(frame)
                if frame.type in ("text", "text-delta", "TEXT_MESSAGE_CONTENT"):  # ours, the AI SDK's, AG-UI's
                    texts += 1
                    if stop_after_texts is not None and texts >= stop_after_texts:
                        break
    return stream
