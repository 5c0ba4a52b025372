"""`GET /api/conversations/{id}/export`: JSON and a Markdown transcript with every message, tool calls, attachments by
name and feedback; 404 for another user's, 422 for an unknown format; on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.conftest import bearer, error_of
from tests.seeding import seed_conversation
from tests.sse import chat


async def conversation_with_everything(client: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    """A real turn of the offline model with an attachment and a tool call, a second exchange, feedback on a reply."""
    upload = await client.post("/api/files", files={"file": ("notes for café.txt", b"oat milk", "text/plain")})
    assert upload.status_code == 201, upload.text
    first = await chat(client, {"message": "add buy milk"})
    assert first.types[-1] == "done", first.types
    conversation_id = first.events[0]["conversation_id"]
    body = {"message": "what is in this file?", "thread_id": conversation_id, "attachments": [upload.json()["id"]]}
    second = await chat(client, body)
    assert second.types[-1] == "done"
    detail = (await client.get(f"/api/conversations/{conversation_id}")).json()
    reply = detail["messages"][1]
    feedback = {"rating": "down", "comment": "said it twice"}
    response = await client.put(f"/api/conversations/{conversation_id}/messages/{reply['id']}/feedback", json=feedback)
    assert response.status_code == 200, response.text
    return conversation_id, (await client.get(f"/api/conversations/{conversation_id}")).json()


async def test_the_json_export_has_every_message_with_tool_calls_attachments_and_feedback(client):
    conversation_id, detail = await conversation_with_everything(client)
    response = await client.get(f"/api/conversations/{conversation_id}/export")  # json by default
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="conversation-add-buy-milk-') and disposition.endswith('.json"')
    body = response.json()
    assert body["id"] == conversation_id and body["title"] == "add buy milk" and body["branches"] == "active"
    assert body["exported_at"] >= body["updated_at"]
    assert body["messages"] == detail["messages"]  # the same shape as the API's, nothing dropped
    user, reply, second_user, second_reply = body["messages"]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user", "assistant"]
    assert user["attachments"] == [] and second_reply["feedback"] is None
    assert [a["name"] for a in second_user["attachments"]] == ["notes for café.txt"]
    assert [call["name"] for call in reply["tool_calls"]] == ["add_task"]
    assert reply["feedback"]["rating"] == "down" and reply["feedback"]["comment"] == "said it twice"
    assert second_user["content"] == "what is in this file?"
    same = await client.get(f"/api/conversations/{conversation_id}/export?format=json")
    assert same.json()["messages"] == body["messages"]


async def test_the_markdown_export_is_a_readable_transcript(client):
    conversation_id, detail = await conversation_with_everything(client)
    response = await client.get(f"/api/conversations/{conversation_id}/export?format=markdown")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/markdown; charset=utf-8"
    assert response.headers["content-disposition"].endswith('.md"')
    text = response.text
    lines = text.splitlines()
    assert lines[0] == "# add buy milk"
    assert "4 messages" in lines[2]
    headings = [line for line in lines if line.startswith("## ")]
    assert [h.split(" · ")[0] for h in headings[::2]] == ["## You", "## You"]
    assert headings[1].startswith("## Assistant (Task assistant) · ")
    assert "add buy milk" in text and "what is in this file?" in text
    reply = detail["messages"][1]["content"].strip()
    assert reply and reply in text  # the reply's text
    assert "Attachments: notes for café.txt (text/plain, 8 bytes)" in text
    assert '- Tool `add_task` with `{"title": "buy milk"}` → `' in text
    assert "Feedback: 👎 down — said it twice" in text
    assert text.index("Feedback:") < text.index("what is in this file?")  # under the reply it rates


async def test_an_empty_conversation_and_an_odd_title_export_safely(client, db):
    conversation_id = await seed_conversation(db, title='Ünïcode "quotes"\r\n/../ & more')
    response = await client.get(f"/api/conversations/{conversation_id}/export?format=markdown")
    assert response.status_code == 200
    filename = response.headers["content-disposition"].split('filename="', 1)[1].rstrip('"')
    assert filename.startswith("conversation-unicode-quotes-more-") and filename.endswith(".md")
    assert response.text.splitlines()[0] == '# Ünïcode "quotes" /../ & more'
    assert (await client.get(f"/api/conversations/{conversation_id}/export")).json()["messages"] == []


async def test_an_unknown_format_is_422(client, db):
    conversation_id = await seed_conversation(db)
    response = await client.get(f"/api/conversations/{conversation_id}/export?format=pdf")
    assert response.status_code == 422
    assert error_of(response)["error"]["code"] == "validation_error"
    assert error_of(response)["error"]["message"].startswith("format:")


async def test_another_users_conversation_is_404(auth_client, db):
    conversation_id = await seed_conversation(db, user_id="alice", messages=[{"content": "private"}])
    for path in (f"/api/conversations/{conversation_id}/export", f"/api/conversations/{uuid.uuid4()}/export"):
        response = await auth_client.get(path, headers=bearer("bob"))
        assert response.status_code == 404
        assert error_of(response)["error"]["code"] == "not_found"
        assert "private" not in response.text
    assert (await auth_client.get(f"/api/conversations/{conversation_id}/export", headers=bearer("alice"))).is_success


async def test_branches_all_exports_every_version_and_active_only_the_active_branch(client):
    first = await chat(client, {"message": "add buy milk"})
    conversation_id = first.events[0]["conversation_id"]
    old_reply = first.events[0]["message_id"]
    async with client.stream(
        "POST", f"/api/conversations/{conversation_id}/messages/{old_reply}/regenerate", json={}
    ) as response:
        assert response.status_code == 200
        await response.aread()
    active = (await client.get(f"/api/conversations/{conversation_id}/export")).json()
    every = (await client.get(f"/api/conversations/{conversation_id}/export?branches=all")).json()
    assert active["branches"] == "active" and every["branches"] == "all"
    assert [m["role"] for m in active["messages"]] == ["user", "assistant"]
    assert old_reply not in [m["id"] for m in active["messages"]]
    assert [m["role"] for m in every["messages"]] == ["user", "assistant", "assistant"]
    assert old_reply in [m["id"] for m in every["messages"]]
    assert every["messages"][1]["sibling_count"] == 2
    markdown_all = await client.get(f"/api/conversations/{conversation_id}/export?format=markdown&branches=all")
    assert markdown_all.status_code == 422
    assert error_of(markdown_all)["error"]["message"] == "branches: `all` is for format=json"
