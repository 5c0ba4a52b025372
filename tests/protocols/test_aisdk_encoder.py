"""The AI SDK encoder on its own: chunk types per version, one message across a paused turn's segments, the hot path."""

from __future__ import annotations

import json
from typing import Any

import pytest

from backend.chat.events import (
    Agent,
    ApprovalRequest,
    Done,
    Event,
    Start,
    Text,
    Title,
    ToolCall,
    ToolResult,
    Usage,
    encode,
    parse_frames,
)
from backend.protocols.aisdk.encoder import Encoder, Version

# Chunk types of `uiMessageChunkSchema` in each major (read from ai 5.0.285, 6.0.333 and 7.0.185), `data-*` aside.
KNOWN = {
    5: {
        "text-start", "text-delta", "text-end", "error", "tool-input-start", "tool-input-delta", "tool-input-available",
        "tool-input-error", "tool-output-available", "tool-output-error", "reasoning-start", "reasoning-delta",
        "reasoning-end", "source-url", "source-document", "file", "start-step", "finish-step", "start", "finish",
        "abort", "message-metadata",
    },
}  # fmt: skip
KNOWN[6] = KNOWN[5] | {"tool-approval-request", "tool-output-denied"}
KNOWN[7] = KNOWN[6]

PAUSED: list[Event] = [
    Start("c", "m", "t"),
    Agent("Task assistant"),
    ToolCall("call_1", "delete_task", {"task": "milk"}),
    ApprovalRequest("call_1", "delete_task", {"task": "milk"}),
    Done("c", "m", "approval_required", Usage()),
]
CONTINUED: list[Event] = [
    Start("c", "m", "t"),
    ToolResult("call_1", "delete_task", {"error": "I still need it", "rejected": True}),
    Text("Kept "),
    Text("it."),
    Done("c", "m", "stop", Usage(3, 2, 5)),
]


def chunks(encoder: Encoder, events: list[Event], first_id: int = 1) -> list[dict[str, Any]]:
    data = b"".join(encoder.encode(event_id, event) for event_id, event in enumerate(events, start=first_id))
    data += encoder.close()
    frames = [block for block in data.decode().split("\n\n") if block]
    assert frames[-1] == "data: [DONE]"
    assert all(block.startswith("id: ") for block in frames[:-1]), "every chunk has an id: line"
    return [json.loads(block.split("\ndata: ", 1)[1]) for block in frames[:-1]]


@pytest.mark.parametrize("version", [5, 6, 7])
def test_only_chunk_types_the_version_knows(version: Version) -> None:
    sent = chunks(Encoder(version), PAUSED + CONTINUED)
    types = {c["type"] for c in sent if not c["type"].startswith("data-")}
    assert types <= KNOWN[version], types - KNOWN[version]
    if version == 5:
        assert any(c["type"] == "data-approval" for c in sent)
    else:
        assert {"tool-approval-request", "tool-output-denied"} <= types


def test_a_replay_across_a_pause_is_one_message() -> None:
    sent = [c["type"] for c in chunks(Encoder(7), PAUSED + CONTINUED)]
    assert sent.count("start") == 1 and sent.count("finish") == 1 and sent[-1] == "finish"
    assert sent.count("start-step") == sent.count("finish-step")


def test_a_continuation_after_last_event_id_sends_no_second_start() -> None:
    sent = [c["type"] for c in chunks(Encoder(7, started=True), CONTINUED[1:], first_id=7)]
    assert "start" not in sent and sent[-1] == "finish"


def test_the_text_delta_hot_path_writes_what_the_general_path_writes() -> None:
    encoder = Encoder(6)
    encoder.encode(1, Start("c", "m", "t"))
    encoder.encode(2, Text("a"))
    tricky = Text('quote " newline \n non-ascii ö emoji 🙂')
    fast = encoder.encode(3, tricky)
    ((event_id, event),) = parse_frames(encode(tricky, 3))
    assert (event_id, event) == (3, tricky)
    assert json.loads(fast.decode().split("data: ", 1)[1]) == {
        "type": "text-delta",
        "id": "t2",
        "delta": tricky.content,
    }


@pytest.mark.parametrize("version", [5, 6, 7])
def test_a_title_is_a_transient_data_part_and_metadata_that_leaves_the_text_block_open(version: Version) -> None:
    events: list[Event] = [
        Start("c", "m", "first words"),
        Text("Hello "),
        Title("c", "Greeting"),
        Text("there."),
        Done("c", "m", "stop", Usage()),
    ]
    sent = chunks(Encoder(version), events)
    assert {"type": "data-title", "data": {"title": "Greeting"}, "transient": True} in sent
    assert {"type": "message-metadata", "messageMetadata": {"title": "Greeting"}} in sent
    assert [c["type"] for c in sent].count("text-start") == 1  # one text block around the title
    types = {c["type"] for c in sent if not c["type"].startswith("data-")}
    assert types <= KNOWN[version]
