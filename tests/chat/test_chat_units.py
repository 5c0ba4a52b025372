"""Pure unit tests of the chat modules: event encoding, error classification, history replay and trimming."""

from __future__ import annotations

import json
import uuid

import httpx
import litellm
import openai
import pytest
from agents import MaxTurnsExceeded, ModelBehaviorError
from agents.exceptions import ModelTimeoutError

from backend.chat import events
from backend.chat.history import to_agent_input, turn_items
from backend.chat.model import TruncatedStreamError
from backend.chat.store import make_title
from backend.chat.translate import classify_error
from backend.models import Message, MessageRole, MessageStatus
from backend.team.offline import OFFLINE_LABEL, _plan

ALL_EVENTS = [
    events.Start("c", "m", "title"),
    events.Agent("Task assistant"),
    events.Text("multi\nline <b>&</b> “quotes”"),
    events.Thinking("hmm"),
    events.ToolCall("call_1", "add_task", {"title": "x"}),
    events.ToolResult("call_1", "add_task", {"task": {"title": "x"}}),
    events.Widget("w1", {"type": "Card", "children": []}),
    events.ApprovalRequest("call_2", "delete_task", {"task": "x"}),
    events.ClientToolCall("call_3", "set_theme", {"theme": "dark"}),
    events.Error("rate_limited", "slow down", retryable=True),
    events.Done("c", "m", "stop", events.Usage(1, 2, 3)),
]


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_is_an_id_line_and_one_data_line_that_round_trips(event):
    frame = events.encode(event, 7)
    assert frame.startswith(b"id: 7\ndata: ") and frame.endswith(b"\n\n")
    assert frame.count(b"\n") == 3, "a frame must be an id line and a single data line"
    payload = json.loads(frame[len(b"id: 7\ndata: ") :])
    assert (
        payload["type"]
        == {
            "Start": "start",
            "Agent": "agent",
            "Text": "text",
            "Widget": "widget",
            "ApprovalRequest": "approval_request",
            "ClientToolCall": "client_tool_call",
            "Thinking": "thinking",
            "ToolCall": "tool_call",
            "ToolResult": "tool_result",
            "Error": "error",
            "Done": "done",
        }[type(event).__name__]
    )
    assert events.decode(frame[len(b"id: 7\ndata: ") : -2]) == event


def test_a_lone_surrogate_or_nul_in_model_text_still_encodes():
    frame = events.encode(events.Text("bad \ud800 here"), 1)
    assert json.loads(frame.split(b"data: ", 1)[1])["content"] == "bad \ufffd here"
    frame = events.encode(events.Text("nul \x00 here"), 2)
    assert json.loads(frame.split(b"data: ", 1)[1])["content"] == "nul \x00 here"


def _status_error(cls: type[Exception], status: int) -> Exception:
    response = httpx.Response(status, request=httpx.Request("POST", "http://upstream"))
    return cls("provider says: secret detail", response=response, body=None)


@pytest.mark.parametrize(
    ("error", "code", "retryable"),
    [
        (MaxTurnsExceeded("too many"), "max_turns", False),
        (_status_error(openai.RateLimitError, 429), "rate_limited", True),
        (_status_error(openai.InternalServerError, 503), "provider_unavailable", True),
        (_status_error(openai.BadRequestError, 400), "provider_error", False),
        (_status_error(openai.AuthenticationError, 401), "provider_error", False),
        (openai.APIConnectionError(request=httpx.Request("POST", "http://upstream")), "provider_unavailable", True),
        (ModelTimeoutError(1.0), "provider_unavailable", True),
        (TruncatedStreamError("cut"), "provider_unavailable", True),
        (ModelBehaviorError("Tool nope not found"), "provider_error", False),
        (RuntimeError("secret internal detail"), "internal", True),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_errors_map_to_stable_codes_without_leaking_text(error, code, retryable):
    event = classify_error(error)
    assert (event.code, event.retryable) == (code, retryable)
    assert "secret" not in event.message


def test_litellm_mid_stream_fallback_keeps_the_original_status():
    original = litellm.exceptions.RateLimitError("quota secret", llm_provider="gemini", model="gemini-2.5-flash")
    error = litellm.exceptions.MidStreamFallbackError(
        "boom", model="gemini-2.5-flash", llm_provider="gemini", original_exception=original
    )
    assert classify_error(error).code == "rate_limited"


def _message(seq: int, role: MessageRole, content: str = "", items: list[dict] | None = None) -> Message:
    return Message(conversation_id=uuid.uuid4(), seq=seq, role=role, content=content, items=items)


def _tool_turn(call_id: str, text: str) -> list[dict]:
    return [
        {"type": "function_call", "call_id": call_id, "name": "add_task", "arguments": "{}"},
        {"type": "function_call_output", "call_id": call_id, "output": "{}"},
        {"role": "assistant", "content": text},
    ]


def test_history_replays_stored_items_and_plain_text():
    messages = [
        _message(1, MessageRole.USER, "add milk"),
        _message(2, MessageRole.ASSISTANT, "Added.", items=_tool_turn("c1", "Added.")),
        _message(3, MessageRole.USER, "hi"),
        _message(4, MessageRole.ASSISTANT, "Hello!"),
        _message(5, MessageRole.USER, "and now?"),
    ]
    assert to_agent_input(messages, max_items=100) == [
        {"role": "user", "content": "add milk"},
        *_tool_turn("c1", "Added."),
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "and now?"},
    ]


def test_history_is_trimmed_only_at_user_message_boundaries():
    messages = [
        _message(1, MessageRole.USER, "first"),
        _message(2, MessageRole.ASSISTANT, "x", items=_tool_turn("c1", "x")),  # turn of 4 items
        _message(3, MessageRole.USER, "second"),
        _message(4, MessageRole.ASSISTANT, "y", items=_tool_turn("c2", "y")),  # turn of 4 items
        _message(5, MessageRole.USER, "third"),
    ]
    trimmed = to_agent_input(messages, max_items=6)
    assert trimmed[0] == {"role": "user", "content": "second"}
    assert [i.get("call_id") for i in trimmed if "call_id" in i] == ["c2", "c2"]
    assert trimmed[-1] == {"role": "user", "content": "third"}
    # The newest user message is kept even when it alone is over the cap.
    assert to_agent_input(messages, max_items=1) == [{"role": "user", "content": "third"}]


def test_history_that_starts_mid_turn_drops_the_orphan_reply():
    messages = [
        _message(7, MessageRole.ASSISTANT, "orphan", items=_tool_turn("c0", "orphan")),
        _message(8, MessageRole.USER, "hello"),
    ]
    assert to_agent_input(messages, max_items=50) == [{"role": "user", "content": "hello"}]


def test_unpaired_tool_items_are_never_replayed():
    items = [
        {"type": "function_call", "call_id": "done", "name": "a", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "done", "output": "1"},
        {"type": "function_call", "call_id": "interrupted", "name": "b", "arguments": "{}"},
    ]
    messages = [_message(1, MessageRole.USER, "go"), _message(2, MessageRole.ASSISTANT, "", items=items)]
    replay = to_agent_input(messages, max_items=50)
    assert [i.get("call_id") for i in replay[1:]] == ["done", "done"]


def test_turn_items_keep_the_partial_text_the_user_saw():
    assert turn_items([], "Half a sent", MessageStatus.CANCELLED) == [{"role": "assistant", "content": "Half a sent"}]
    assert turn_items([], "", MessageStatus.ERROR) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("add buy milk", ("add_task", {"title": "buy milk"})),
        ("Add a task: call mum.", ("add_task", {"title": "call mum"})),
        ("remind me to water the plants", ("add_task", {"title": "water the plants"})),
        ("list my tasks", ("list_tasks", {})),
        ("what are my tasks?", ("list_tasks", {})),
        ("complete buy milk", ("complete_task", {"task": "buy milk"})),
        ("delete the task buy milk", ("delete_task", {"task": "buy milk"})),
        ("rename buy milk to buy oat milk", ("update_task", {"task": "buy milk", "title": "buy oat milk"})),
    ],
)
def test_offline_model_understands_a_few_task_requests(text, expected):
    assert _plan([{"role": "user", "content": text}]) == expected


def test_offline_model_explains_itself_otherwise():
    reply = _plan([{"role": "user", "content": "what is the weather?"}])
    assert isinstance(reply, str) and reply.startswith(OFFLINE_LABEL) and "GEMINI_API_KEY" in reply


def test_offline_model_reports_tool_errors():
    items = [
        {"role": "user", "content": "complete nothing"},
        {"type": "function_call", "call_id": "c", "name": "complete_task", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": json.dumps({"error": "No task matches"})},
    ]
    assert "No task matches" in _plan(items)


@pytest.mark.parametrize(
    ("message", "title"),
    [
        ("  hello   world ", "hello world"),
        ("x" * 80, "x" * 50 + "…"),
        ("Please help me plan the garden party for next Saturday", "Please help me plan the garden party for next…"),
    ],
)
def test_titles(message, title):
    assert make_title(message) == title


def test_the_installed_litellm_is_the_one_without_the_1_83_gemini_bugs():
    from importlib.metadata import version

    # 1.83.0 (what a plain resolve picks next to openai-agents 0.24) hangs on a truncated Gemini line, hides
    # mid-stream errors and never closes the upstream stream on cancel; the stream tests exercise all three.
    major, minor, patch = (int(part) for part in version("litellm").split(".")[:3])
    assert (major, minor, patch) >= (1, 109, 1)
