"""The AG-UI encoder on its own: sequences the live tests cannot easily produce (a replay across a paused reply's
segments, a failure mid-message, a stream cut short, a rejoin mid-block), each checked against `ag-ui-protocol`'s
models and AG-UI's ordering rules."""

from __future__ import annotations

import json
from typing import Any

from backend.chat.events import (
    Agent,
    ApprovalRequest,
    ClientToolCall,
    Done,
    Error,
    Event,
    Start,
    Text,
    Thinking,
    Title,
    ToolCall,
    ToolResult,
    Usage,
    Widget,
)
from backend.protocols.agui.encoder import Encoder
from tests.protocols.test_agui import EVENT, assert_ordered

CONVERSATION, MESSAGE = "c0nversation", "m3ssage"


def encode(events: list[Event], encoder: Encoder | None = None) -> list[dict[str, Any]]:
    """The AG-UI events of our events, each frame checked for its `id:` line and its model."""
    encoder = encoder or Encoder("thread", "run")
    data = b"".join(encoder.encode(i, event) for i, event in enumerate(events, start=1)) + encoder.close()
    out = []
    for block in data.decode().split("\n\n"):
        if not block:
            continue
        id_line, data_line = block.split("\n")
        assert id_line.startswith("id: ") and data_line.startswith("data: ")
        event = json.loads(data_line[6:])
        EVENT.validate_python(event)
        out.append(event)
    assert_ordered(out)
    return out


def done(reason: str) -> Done:
    return Done(CONVERSATION, MESSAGE, reason, Usage(3, 2, 5))  # type: ignore[arg-type]


def test_a_replay_across_a_paused_segment_reads_as_one_run() -> None:
    events = encode(
        [
            Start(CONVERSATION, MESSAGE, "t"),
            Agent("Task assistant"),
            Text("Deleting."),
            ToolCall("c1", "delete_task", {"task": "milk"}),
            ApprovalRequest("c1", "delete_task", {"task": "milk"}),
            done("approval_required"),
            Start(CONVERSATION, MESSAGE, "t"),
            Agent("Task assistant"),
            ToolResult("c1", "delete_task", {"deleted": True}),
            Text("Done."),
            done("stop"),
        ]
    )
    types = [e["type"] for e in events]
    assert types.count("RUN_STARTED") == 1 and types.count("RUN_FINISHED") == 1
    assert events[-1]["outcome"] == {"type": "success"}
    assert [e["stepName"] for e in events if e["type"] == "STEP_STARTED"] == ["Task assistant", "Task assistant"]


def test_an_error_mid_message_closes_it_and_ends_the_run() -> None:
    events = encode(
        [
            Start(CONVERSATION, MESSAGE, "t"),
            Agent("Triage"),
            Thinking("hmm"),
            Text("Hal"),
            Error("provider_unavailable", "The model is unavailable.", retryable=True),
            done("error"),
        ]
    )
    assert [e["type"] for e in events][-3:] == ["TEXT_MESSAGE_END", "STEP_FINISHED", "RUN_ERROR"]
    assert events[-1] == {"type": "RUN_ERROR", "message": "The model is unavailable.", "code": "provider_unavailable"}


def test_a_stream_cut_before_done_still_ends_with_run_error() -> None:
    events = encode([Start(CONVERSATION, MESSAGE, "t"), Agent("Triage"), Text("Hal")])
    assert events[-1]["type"] == "RUN_ERROR" and events[-1]["code"] == "ended"


def test_a_rejoin_mid_block_opens_a_run_and_a_message_of_its_own() -> None:
    events = encode([Text("lo"), Text(" there"), done("stop")], Encoder("thread", MESSAGE, MESSAGE))
    assert [e["type"] for e in events] == [
        "RUN_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]
    assert events[0]["runId"] == MESSAGE and events[1]["messageId"].startswith(MESSAGE)


def test_a_pause_on_approvals_and_frontend_tools_is_one_interrupt_and_cancel_is_cancelled() -> None:
    both = encode(
        [
            Start(CONVERSATION, MESSAGE, "t"),
            ToolCall("a1", "delete_task", {}),
            ApprovalRequest("a1", "delete_task", {}),
            ClientToolCall("f1", "show_banner", {"text": "x"}),
            done("approval_required"),
        ]
    )
    interrupts = both[-1]["outcome"]["interrupts"]
    assert [(i["id"], i["reason"]) for i in interrupts] == [("a1", "tool_approval"), ("f1", "client_tool")]
    stopped = encode([Start(CONVERSATION, MESSAGE, "t"), Widget("w", {"type": "Card"}), Text("x"), done("cancelled")])
    assert stopped[-1]["outcome"] == {"type": "cancelled"}
    assert stopped[1] == {"type": "CUSTOM", "name": "widget", "value": {"id": "w", "widget": {"type": "Card"}}}


def test_a_generated_title_is_told_at_the_runs_end_without_splitting_the_message() -> None:
    events = encode(
        [
            Start(conversation_id="c1", message_id="m1", title="hi"),
            Text(content="Hel"),
            Title(conversation_id="c1", title="A Greeting"),
            Text(content="lo"),
            done("stop"),
        ]
    )
    types = [e["type"] for e in events]
    assert types.count("TEXT_MESSAGE_START") == 1, types
    assert types[-2:] == ["CUSTOM", "RUN_FINISHED"]
    assert events[-2]["name"] == "title" and events[-2]["value"] == {"conversationId": "c1", "title": "A Greeting"}
