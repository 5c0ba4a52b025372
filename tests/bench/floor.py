"""The floor: the least a Python relay must do for the same job, to compare the backend against.

A bare ASGI app (no framework, no agent, no database) under the same uvicorn (uvloop + httptools): for each
``POST /chatkit {"message": ...}`` it streams ``:streamGenerateContent`` from the fake with one shared aiohttp
session, parses each upstream SSE event, and re-emits each text part as our ``text`` frame
(``data: {"type":"text","content":...}\\n\\n``), then ``done`` and ``data: [DONE]``. When the upstream turn is a
function call, it emits ``tool_call``/``tool_result`` frames and makes the next upstream request with the
``function_call`` and ``function_response`` contents, exactly as the agent does. Like our team, the first request
offers only the triage handoff (``transfer_to_task_assistant``) and, once the fake takes it, the next ones offer the
task tool: a new conversation is the same three upstream turns for the floor, ours and the ChatKit peer.

Run: ``python -m tests.bench.floor --port P --upstream http://127.0.0.1:FAKE/v1beta [--workers N]``
(or set ``FLOOR_UPSTREAM``).
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import aiohttp

from tests.bench.serving import DONE, SSE_HEADERS, chat_message, frame, serve_peer

MODEL = "gemini-2.5-flash"
HANDOFF = "transfer_to_task_assistant"
OBJECT = {"type": "object", "properties": {}}
TRIAGE_TOOLS = [{"function_declarations": [{"name": HANDOFF, "description": "Hand off.", "parameters": OBJECT}]}]
TASK_TOOLS = [{"function_declarations": [{"name": "list_tasks", "description": "List tasks.", "parameters": OBJECT}]}]

_session: aiohttp.ClientSession | None = None


async def _relay(
    url: str, contents: list[dict[str, Any]], tools: list[dict[str, Any]], send: Any
) -> list[dict[str, Any]]:
    """Stream one upstream turn; send each text part as a frame; return the function calls it made."""
    assert _session is not None
    calls: list[dict[str, Any]] = []
    body = {"contents": contents, "tools": tools}
    async with _session.post(url, json=body, headers={"x-goog-api-key": "bench"}) as resp:
        resp.raise_for_status()
        async for line in resp.content:
            if not line.startswith(b"data:"):
                continue
            event = json.loads(line[5:])
            for candidate in event.get("candidates", ()):
                for part in candidate.get("content", {}).get("parts", ()):
                    text = part.get("text")
                    if text:
                        await send(
                            {
                                "type": "http.response.body",
                                "body": frame({"type": "text", "content": text}),
                                "more_body": True,
                            }
                        )
                    elif "functionCall" in part:
                        calls.append(part["functionCall"])
    return calls


def _open_session() -> None:
    global _session
    _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


async def _close_session() -> None:
    if _session is not None:
        await _session.close()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI entry point."""
    user_text = await chat_message(scope, receive, send, _open_session, _close_session)
    if user_text is None:
        return
    url = f"{os.environ['FLOOR_UPSTREAM']}/models/{MODEL}:streamGenerateContent?alt=sse"
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    conversation_id, message_id = str(uuid.uuid4()), str(uuid.uuid4())
    await send(
        {
            "type": "http.response.body",
            "more_body": True,
            "body": frame(
                {"type": "start", "conversation_id": conversation_id, "message_id": message_id, "title": user_text[:50]}
            ),
        }
    )
    contents: list[dict[str, Any]] = [{"role": "user", "parts": [{"text": user_text}]}]
    tools = TRIAGE_TOOLS
    for _ in range(4):  # bounded: at most a few tool rounds
        calls = await _relay(url, contents, tools, send)
        if not calls:
            break
        tools = TASK_TOOLS
        contents.append({"role": "model", "parts": [{"function_call": c} for c in calls]})
        responses = []
        for call in calls:
            call_id = f"call_{uuid.uuid4().hex[:24]}"
            result = {"tasks": [], "truncated": False}
            await send(
                {
                    "type": "http.response.body",
                    "more_body": True,
                    "body": frame(
                        {"type": "tool_call", "id": call_id, "name": call["name"], "args": call.get("args", {})}
                    ),
                }
            )
            await send(
                {
                    "type": "http.response.body",
                    "more_body": True,
                    "body": frame({"type": "tool_result", "id": call_id, "name": call["name"], "result": result}),
                }
            )
            responses.append({"function_response": {"name": call["name"], "response": {"content": json.dumps(result)}}})
        contents.append({"role": "user", "parts": responses})
    done = {
        "type": "done",
        "conversation_id": conversation_id,
        "message_id": message_id,
        "finish_reason": "stop",
        "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
    }
    await send({"type": "http.response.body", "body": frame(done) + DONE, "more_body": False})


def main(argv: list[str] | None = None) -> None:
    """Serve it with uvicorn."""
    serve_peer(argv, module="floor", app="app", env_var="FLOOR_UPSTREAM", port=8001)


if __name__ == "__main__":
    main()
