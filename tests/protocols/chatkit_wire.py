"""ChatKit's own pydantic types (`openai-chatkit`, test-only) as the judge of every body we send and answer we get.

`post` validates the request against `chatkit.types.ChatKitReq` before sending it, then every streamed frame against
`ThreadStreamEvent` and every JSON answer against the type `ChatKitServer` answers that request with. Validation is
not enough on its own (pydantic ignores unknown fields, and a widget root also matches the loose
`DynamicWidgetRoot`), so each value must also survive a round trip: everything we sent is in what ChatKit's type
dumps, and every widget node validates as one of ChatKit's strict components.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from chatkit.types import (
    Attachment,
    ChatKitReq,
    ErrorEvent,
    Page,
    SyncCustomActionResponse,
    Thread,
    ThreadItem,
    ThreadStreamEvent,
)
from chatkit.widgets import StrictWidgetComponent, StrictWidgetRoot
from pydantic import TypeAdapter

PATH = "/api/chatkit"
REQUEST: TypeAdapter[Any] = TypeAdapter(ChatKitReq)
EVENT: TypeAdapter[Any] = TypeAdapter(ThreadStreamEvent)
ITEM: TypeAdapter[Any] = TypeAdapter(ThreadItem)
STRICT_ROOT: TypeAdapter[Any] = TypeAdapter(StrictWidgetRoot)
STRICT_NODE: TypeAdapter[Any] = TypeAdapter(StrictWidgetComponent)
ANSWERS: dict[str, TypeAdapter[Any]] = {
    "threads.get_by_id": TypeAdapter(Thread),
    "threads.update": TypeAdapter(Thread),
    "threads.list": TypeAdapter(Page[Thread]),
    "items.list": TypeAdapter(Page[ThreadItem]),
    "attachments.create": TypeAdapter(Attachment),
    "threads.sync_custom_action": TypeAdapter(SyncCustomActionResponse),
}
EMPTY_ANSWERS = {"threads.delete", "items.feedback", "attachments.delete"}
LOOSE_KEYS = {"created_at", "url", "preview_url"}  # values ChatKit's types normalise (time zone, trailing slash)


def contained(ours: Any, theirs: Any, where: str = "$") -> None:
    """Everything in `ours` is in `theirs` (ChatKit's dump may add its defaults)."""
    if isinstance(ours, dict):
        assert isinstance(theirs, dict), where
        for key, value in ours.items():
            assert key in theirs, f"{where}.{key} was dropped by ChatKit's type (unknown field)"
            if key not in LOOSE_KEYS:
                contained(value, theirs[key], f"{where}.{key}")
    elif isinstance(ours, list):
        assert isinstance(theirs, list) and len(ours) == len(theirs), where
        for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            contained(a, b, f"{where}[{index}]")
    else:
        assert ours == theirs, f"{where}: {ours!r} != {theirs!r}"


def check(adapter: TypeAdapter[Any], value: Any) -> Any:
    """Validate `value` with ChatKit's type and check nothing of it was dropped; returns the typed value."""
    typed = adapter.validate_python(value)
    contained(value, adapter.dump_python(typed, mode="json", exclude_none=True, by_alias=True))
    for widget in widgets_in(value):
        check_widget(widget)
    return typed


def widgets_in(value: Any) -> list[dict[str, Any]]:
    """Every widget root inside a value (items' `widget`, updates' `widget`)."""
    found: list[dict[str, Any]] = []
    if isinstance(value, dict):
        if value.get("type") == "widget" and isinstance(value.get("widget"), dict):
            found.append(value["widget"])
        for child in value.values():
            if isinstance(child, dict | list):
                found += widgets_in(child)
    elif isinstance(value, list):
        for child in value:
            found += widgets_in(child)
    return found


def check_widget(root: dict[str, Any]) -> None:
    """A widget root and each of its nodes as ChatKit's strict types (not the catch-all dynamic component)."""
    contained(root, STRICT_ROOT.dump_python(STRICT_ROOT.validate_python(root), mode="json", exclude_none=True))
    stack = list(root.get("children") or [])
    while stack:
        node = stack.pop()
        typed = STRICT_NODE.validate_python(node)
        assert type(typed).__name__ == node["type"] or node["type"] == "ListViewItem", node
        contained(node, STRICT_NODE.dump_python(typed, mode="json", exclude_none=True))
        stack += node.get("children") or []


@dataclass
class Answer:
    """A ChatKit response: its status, its frames (streams) or its JSON body."""

    status: int
    content_type: str
    events: list[dict[str, Any]] = field(default_factory=list)
    body: Any = None

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def items_done(self) -> list[dict[str, Any]]:
        return [e["item"] for e in self.events if e["type"] in ("thread.item.done", "thread.item.replaced")]

    @property
    def text(self) -> str:
        return "".join(
            e["update"]["delta"]
            for e in self.of("thread.item.updated")
            if e["update"]["type"] == "assistant_message.content_part.text_delta"
        )


def request(kind: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ChatKit request body, validated as one before it is sent."""
    body = {"type": kind, "params": params or {}}
    check(REQUEST, body)
    return body


async def post(
    client: httpx.AsyncClient,
    kind: str,
    params: dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    path: str = PATH,
    stop_after: int | None = None,
) -> Answer:
    """Send one ChatKit request and check the answer with ChatKit's types (errors: its `ErrorEvent`, a 4xx)."""
    body = request(kind, params)
    return await send(client, body, headers=headers, path=path, kind=kind, stop_after=stop_after)


async def send(
    client: httpx.AsyncClient,
    body: Any,
    *,
    headers: dict[str, str] | None = None,
    path: str = PATH,
    kind: str | None = None,
    stop_after: int | None = None,
) -> Answer:
    """Send any body (also a malformed one) and check the answer."""
    content = body if isinstance(body, str | bytes) else json.dumps(body)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    async with client.stream("POST", path, content=content, headers=all_headers) as response:
        answer = Answer(response.status_code, response.headers.get("content-type", ""))
        if answer.content_type.startswith("text/event-stream"):
            async for line in response.aiter_lines():
                assert not line.startswith("id:"), "ChatKit's frames carry no id"
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    check(EVENT, event)
                    answer.events.append(event)
                    if stop_after is not None and len(answer.events) >= stop_after:
                        break
            return answer
        answer.body = json.loads(await response.aread())
    if answer.status >= 400:
        assert 400 <= answer.status < 500 or answer.status == 503, (answer.status, answer.body)
        check(TypeAdapter(ErrorEvent), {k: v for k, v in answer.body.items() if k != "error"})
        assert answer.body["message"], answer.body
        assert answer.body["error"]["message"] == answer.body["message"], answer.body
    elif kind in ANSWERS:
        check(ANSWERS[kind], answer.body)
    elif kind in EMPTY_ANSWERS:
        assert answer.body == {}, answer.body
    return answer
