"""Attachments in chat, end to end: real uvicorn, the real Agents SDK and LiteLLM, the fake Gemini, both databases."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.chat.model import build_model
from backend.chat.schemas import ChatRequest
from backend.chat.service import ChatService
from backend.chat.store import ConversationStore, TurnRequest
from backend.db import Database
from backend.files import service as file_service
from backend.files.models import File
from backend.files.storage import DatabaseStorage
from backend.models import Conversation, Message, MessageStatus
from backend.settings import Settings
from backend.team.agents import build_agent
from tests import files_samples as samples
from tests.conftest import SECRET, bearer, live
from tests.fakes.gemini import FakeGemini, text_turn
from tests.seeding import count_rows
from tests.sse import Stream, chat

pytestmark = pytest.mark.timeout(60)


async def upload(client: httpx.AsyncClient, name: str, data: bytes, **headers: str) -> dict[str, Any]:
    response = await client.post(
        "/api/files", files={"file": (name, data, "application/octet-stream")}, headers=headers or None
    )
    assert response.status_code == 201, response.text
    return response.json()


async def send(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> Stream:
    stream = await chat(client, body, headers=headers or None)
    assert stream.status == 200, stream.body
    assert stream.types[0] == "start" and stream.types[-1] == "done", stream.types
    assert stream.events[-1]["finish_reason"] == "stop", stream.events
    return stream


async def messages_of(client: httpx.AsyncClient, conversation_id: str, **headers: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/conversations/{conversation_id}", headers=headers or None)
    assert response.status_code == 200, response.text
    return response.json()["messages"]


def user_turns(request: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The parts of each user turn of one recorded Gemini request."""
    return [content["parts"] for content in request["contents"] if content["role"] == "user"]


def inline(parts: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    return [
        (p["inline_data"]["mime_type"], base64.b64decode(p["inline_data"]["data"])) for p in parts if "inline_data" in p
    ]


def texts(parts: list[dict[str, Any]]) -> list[str]:
    return [p["text"] for p in parts if "text" in p]


def public(file: dict[str, Any]) -> dict[str, Any]:
    return {key: file[key] for key in ("id", "name", "content_type", "size")}


async def test_each_type_reaches_gemini_and_the_api_lists_the_attachments(
    gemini_settings: Callable[..., Settings], fake: FakeGemini
) -> None:
    png = samples.png()
    uploads = [
        ("chart.png", png),
        ("photo.jpg", samples.JPEG),
        ("report.pdf", samples.PDF),
        ("notes.txt", samples.TEXT),
        ("readme.md", samples.MARKDOWN),
        ("table.csv", samples.CSV),
    ]
    async with live(gemini_settings()) as client:
        files = [await upload(client, name, data) for name, data in uploads]
        fake.script(text_turn("Six files."))
        stream = await send(client, {"message": "what are these?", "attachments": [f["id"] for f in files]})
        assert stream.text == "Six files."
        stored = await messages_of(client, stream.events[0]["conversation_id"])

    ((parts,),) = [user_turns(request) for request in fake.requests]
    assert inline(parts) == [("image/png", png), ("image/jpeg", samples.JPEG), ("application/pdf", samples.PDF)]
    assert texts(parts) == [
        "what are these?",
        f"Attached file chart.png (image/png, {len(png)} B):",
        f"Attached file photo.jpg (image/jpeg, {len(samples.JPEG)} B):",
        f"Attached file report.pdf (application/pdf, {len(samples.PDF)} B):",
        f"Attached file notes.txt (text/plain, {len(samples.TEXT)} B):\n\n{samples.TEXT.decode()}",
        f"Attached file readme.md (text/markdown, {len(samples.MARKDOWN)} B):\n\n{samples.MARKDOWN.decode()}",
        f"Attached file table.csv (text/csv, {len(samples.CSV)} B):\n\n{samples.CSV.decode()}",
    ]
    # Each label comes right before its image or PDF.
    kinds = ["inline" if "inline_data" in p else p["text"].split(" (")[0] for p in parts]
    labels = [f"Attached file {name}" for name in ("chart.png", "photo.jpg", "report.pdf")]
    assert kinds[1:7] == [kind for label in labels for kind in (label, "inline")]

    user, assistant = stored
    assert user["attachments"] == [public(f) for f in files]
    assert [a["content_type"] for a in user["attachments"]] == [
        "image/png",
        "image/jpeg",
        "application/pdf",
        "text/plain",
        "text/markdown",
        "text/csv",
    ]
    assert assistant["attachments"] == []


async def test_history_resends_earlier_files_within_the_budget_and_notes_the_rest(
    gemini_settings: Callable[..., Settings], fake: FakeGemini
) -> None:
    png = samples.png()
    assert len(samples.PDF) > len(png)
    async with live(gemini_settings(history_attachment_bytes=len(png))) as client:
        pdf_file = await upload(client, "report.pdf", samples.PDF)
        png_file = await upload(client, "chart.png", png)
        fake.script(text_turn("A report."), text_turn("A chart."), text_turn("Both."))
        first = await send(client, {"message": "one", "attachments": [pdf_file["id"]]})
        thread = first.events[0]["conversation_id"]
        await send(client, {"message": "two", "attachments": [png_file["id"]], "thread_id": thread})
        await send(client, {"message": "three", "thread_id": thread})
        stored = await messages_of(client, thread)

    first_request, second_request, third_request = (user_turns(request) for request in fake.requests)
    assert inline(first_request[0]) == [("application/pdf", samples.PDF)]
    note = f"[attachment omitted from history: report.pdf (application/pdf, {len(samples.PDF)} B)]"
    # 2nd request: the PDF (over the budget) is a note; the new message's PNG is always sent.
    old, new = second_request
    assert texts(old) == ["one", note] and inline(old) == []
    assert inline(new) == [("image/png", png)]
    # 3rd request: the PNG fits the budget and is resent; the PDF stays a note.
    old, middle, newest = third_request
    assert texts(old) == ["one", note] and inline(old) == []
    assert inline(middle) == [("image/png", png)]
    assert texts(newest) == ["three"] and inline(newest) == []
    assert [[a["name"] for a in m["attachments"]] for m in stored] == [["report.pdf"], [], ["chart.png"], [], [], []]


async def test_refusals_and_files_shared_between_conversations(
    gemini_settings: Callable[..., Settings], fake: FakeGemini
) -> None:
    alice, bob = bearer("alice"), bearer("bob")
    async with live(gemini_settings(auth_secret=SECRET, files_per_message_max=2)) as client:
        a, b, c = [(await upload(client, f"{n}.txt", samples.TEXT, **alice))["id"] for n in "abc"]
        bobs = (await upload(client, "bob.txt", samples.TEXT, **bob))["id"]

        too_many = await chat(client, {"message": "hi", "attachments": [a, b, c]}, headers=alice)
        assert too_many.status == 422 and too_many.body["error"]["code"] == "too_many_attachments"
        unknown = await chat(client, {"message": "hi", "attachments": [a, str(uuid.uuid4())]}, headers=alice)
        assert unknown.status == 404, unknown.body
        foreign = await chat(client, {"message": "hi", "attachments": [bobs]}, headers=alice)
        assert foreign.status == 404, foreign.body
        assert (await client.get("/api/conversations", headers=alice)).json()["data"] == []

        fake.script(text_turn("ok"), text_turn("ok again"))
        first = await send(client, {"message": "hi", "attachments": [a, b]}, **alice)
        thread = first.events[0]["conversation_id"]
        refused = await chat(client, {"message": "more", "attachments": [bobs], "thread_id": thread}, headers=alice)
        assert refused.status == 404
        assert len(await messages_of(client, thread, **alice)) == 2, "a refused message leaves nothing behind"

        # A file already attached in another conversation may be attached again.
        second = await send(client, {"message": "again", "attachments": [b]}, **alice)
        other = second.events[0]["conversation_id"]
        assert [f["id"] for f in (await messages_of(client, other, **alice))[0]["attachments"]] == [b]

        # Another user can neither delete the conversation nor, through it, the files.
        assert (await client.delete(f"/api/conversations/{thread}", headers=bob)).status_code == 404
        assert (await client.delete(f"/api/conversations/{thread}", headers=alice)).status_code == 204
        assert (await client.get(f"/api/files/{a}", headers=alice)).status_code == 404  # only that conversation's
        assert (await client.get(f"/api/files/{b}/content", headers=alice)).status_code == 200  # still used
        assert (await client.get(f"/api/files/{c}", headers=alice)).status_code == 200  # never attached
        assert (await client.delete(f"/api/conversations/{other}", headers=alice)).status_code == 204
        assert (await client.get(f"/api/files/{b}", headers=alice)).status_code == 404
        assert (await client.get(f"/api/files/{bobs}", headers=bob)).status_code == 200


async def test_offline_model_acknowledges_attachments_and_delete_discards_bytes(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    settings = make_settings()
    png = samples.png()
    async with live(settings) as client:
        image = await upload(client, "chart.png", png)
        note = await upload(client, "notes.md", samples.MARKDOWN)
        stream = await send(client, {"message": "add buy milk", "attachments": [image["id"], note["id"]]})
        assert stream.text == (
            f"(offline demo) I received 2 files: chart.png (image/png, {len(png)} B), "
            f"notes.md (text/markdown, {len(samples.MARKDOWN)} B). "
            "The offline demo cannot read them; set GEMINI_API_KEY to use a real model."
        )
        thread = stream.events[0]["conversation_id"]
        plain = await send(client, {"message": "list my tasks", "thread_id": thread})
        assert plain.text == "(offline demo) You have no tasks."  # only the newest message is acknowledged

        local = settings.file_storage_backend == "local"
        paths = [settings.file_storage_dir / f.hex[:2] / f.hex for f in (uuid.UUID(image["id"]), uuid.UUID(note["id"]))]
        assert all(path.exists() for path in paths) == local
        assert (await client.delete(f"/api/conversations/{thread}")).status_code == 204
        assert not any(path.exists() for path in paths)
        assert (await client.get(f"/api/files/{image['id']}/content")).status_code == 404
    assert await count_rows(db, File) == 0


async def test_history_without_attachments_costs_no_file_query(db: Database, settings: Settings) -> None:
    store = ConversationStore(
        db, instance_id=uuid.uuid4(), stale_after_seconds=10, max_turn_seconds=60, history_max_items=10
    )
    statements: list[str] = []
    event.listen(db.engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    async def turn(message: str, conversation_id: uuid.UUID | None, *files: uuid.UUID) -> Any:
        begun = await store.begin_turn(TurnRequest("local", message, conversation_id, attachments=files))
        await store.release(begun.conversation_id, begun.message_id)
        return begun

    first = await turn("plain", None)
    second = await turn("still plain", first.conversation_id)
    assert second.files == {}
    assert not [s for s in statements if "JOIN files" in s], statements
    async with live(settings) as client:
        file_id = uuid.UUID((await upload(client, "a.txt", samples.TEXT))["id"])
    third = await turn("with a file", first.conversation_id, file_id)
    assert [f.id for f in third.files[third.user_message_id]] == [file_id]
    statements.clear()
    fourth = await turn("after the file", first.conversation_id)
    assert [[f.id for f in files] for files in fourth.files.values()] == [[file_id]]
    assert list(fourth.files) == [third.user_message_id]
    assert len([s for s in statements if "JOIN files" in s]) == 1


class UnreadableStorage(DatabaseStorage):
    """Database storage whose reads fail with an unexpected error (not a missing blob)."""

    async def read(self, session: AsyncSession, file_id: uuid.UUID) -> bytes:
        raise RuntimeError("disk on fire")


async def test_a_turn_whose_files_cannot_be_read_fails_and_frees_its_conversation(
    db: Database, settings: Settings
) -> None:
    storage = UnreadableStorage()
    async with db.sessions() as session:
        stored = await file_service.upload_file(session, storage, settings, "local", "a.txt", samples.TEXT)
    service = ChatService(db, settings, build_agent(*build_model(settings)), file_storage=storage)
    request = ChatRequest(message="read this", attachments=[stored.id])
    with pytest.raises(RuntimeError):
        await service.execute("local", request.to_command())
    async with db.sessions() as session:
        conversation = (await session.exec(select(Conversation))).one()
        statuses = [m.status for m in (await session.exec(select(Message).order_by(col(Message.seq)))).all()]
    assert conversation.run_id is None, "the run lock must be released"
    assert statuses == [MessageStatus.COMPLETE, MessageStatus.ERROR]
