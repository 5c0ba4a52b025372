"""Attachments as model input: the content parts, the history budget, and what reaches Gemini through LiteLLM."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from agents import Agent, Runner
from agents.extensions.models.litellm_model import LitellmModel

import backend  # noqa: F401  (offline LiteLLM environment)
from backend.files.content import Attachment, attached_descriptions, history_selection, human_size, user_content
from backend.files.service import StoredFile
from tests import files_samples as samples
from tests.fakes.gemini import FakeGemini, text_turn


def stored(name: str, content_type: str, size: int) -> StoredFile:
    return StoredFile(uuid.uuid4(), "local", name, content_type, size, datetime(2026, 12, 1, tzinfo=UTC))


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini() as server:
        yield server


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_parts_for_each_type() -> None:
    image, pdf, note = (
        stored("a.png", "image/png", 10),
        stored("r.pdf", "application/pdf", 20),
        stored("n.md", "text/markdown", 7),
    )
    parts = user_content(
        "look", [Attachment(image, b"PNGDATA"), Attachment(pdf, b"%PDF-1"), Attachment(note, b"# hi\n")]
    )
    assert parts == [
        {"type": "input_text", "text": "look"},
        {"type": "input_text", "text": "Attached file a.png (image/png, 10 B):"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{b64(b'PNGDATA')}", "detail": "auto"},
        {"type": "input_text", "text": "Attached file r.pdf (application/pdf, 20 B):"},
        {"type": "input_file", "file_data": f"data:application/pdf;base64,{b64(b'%PDF-1')}", "filename": "r.pdf"},
        {"type": "input_text", "text": "Attached file n.md (text/markdown, 7 B):\n\n# hi\n"},
    ]
    assert attached_descriptions(parts) == [
        "a.png (image/png, 10 B)",
        "r.pdf (application/pdf, 20 B)",
        "n.md (text/markdown, 7 B)",
    ]


def test_history_budget_keeps_the_newest_and_notes_the_rest() -> None:
    oldest, older, newer, newest = (stored(f"{n}.png", "image/png", 400) for n in "abcd")
    turns = [[oldest], [older, newer], [newest]]
    chosen = history_selection(turns, 1000)
    assert chosen == {newest.id, newer.id}
    content = user_content("then", [Attachment(f, b"x" if f.id in chosen else None) for f in (older, newer)])
    assert content[1] == {"type": "input_text", "text": "[attachment omitted from history: b.png (image/png, 400 B)]"}
    assert [part["type"] for part in content[2:]] == ["input_text", "input_image"]
    assert history_selection(turns, 0) == set()
    assert history_selection(turns, 10_000) == {f.id for f in (oldest, older, newer, newest)}


def test_the_same_file_counts_once_and_a_big_one_stops_the_selection() -> None:
    small, big, tiny = (
        stored("s.txt", "text/plain", 100),
        stored("b.pdf", "application/pdf", 5000),
        stored("t.txt", "text/plain", 1),
    )
    assert history_selection([[tiny], [big], [small], [small]], 1000) == {small.id}


def test_descriptions_are_read_back_from_labels_only() -> None:
    files = [stored("a (1).png", "image/png", 1234), stored("n.md", "text/markdown", 300)]
    content = user_content("Attached file typed.txt (text/plain, 1 B):", [Attachment(f, b"x") for f in files])
    assert attached_descriptions(content) == ["a (1).png (image/png, 1.2 KB)", "n.md (text/markdown, 300 B)"]
    assert attached_descriptions("Attached file x (text/plain, 1 B):") == []
    assert attached_descriptions(user_content("hi", [])) == []
    assert human_size(10 * 1024 * 1024) == "10.0 MB"


async def test_parts_reach_gemini_as_inline_data_and_text(fake: FakeGemini) -> None:
    """The real Agents SDK -> LitellmModel -> LiteLLM gemini/ path, recorded by the fake server."""
    png = samples.png()
    image, pdf, csv = (
        stored("chart.png", "image/png", len(png)),
        stored("report.pdf", "application/pdf", len(samples.PDF)),
        stored("table.csv", "text/csv", len(samples.CSV)),
    )
    content = user_content(
        "what is in these?", [Attachment(image, png), Attachment(pdf, samples.PDF), Attachment(csv, samples.CSV)]
    )
    fake.script(text_turn("a chart, a report and a table"))
    agent = Agent(
        name="assistant",
        instructions="Be brief.",
        model=LitellmModel("gemini/gemini-2.5-flash", base_url=fake.base_url, api_key="test-key"),
    )

    result = Runner.run_streamed(agent, [{"role": "user", "content": content}])
    async for _ in result.stream_events():
        pass

    assert result.final_output == "a chart, a report and a table"
    ((user_turn,),) = [[c for c in request["contents"] if c["role"] == "user"] for request in fake.requests]
    parts = user_turn["parts"]
    assert parts[0] == {"text": "what is in these?"}
    inline = [part["inline_data"] for part in parts if "inline_data" in part]
    assert [(item["mime_type"], base64.b64decode(item["data"])) for item in inline] == [
        ("image/png", png),
        ("application/pdf", samples.PDF),
    ]
    texts = [part["text"] for part in parts if "text" in part]
    assert texts[1] == f"Attached file chart.png (image/png, {len(png)} B):"
    assert texts[3] == f"Attached file table.csv (text/csv, {len(samples.CSV)} B):\n\n{samples.CSV.decode()}"
