"""Feedback on replies: `PUT /api/conversations/{id}/messages/{message_id}/feedback`, the message's `feedback` in
`GET /api/conversations/{id}`, and the operator's `python -m backend.feedback`, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlmodel import select

from backend.conversations.store import ConversationRows
from backend.errors import InvalidInputError, NotFoundError
from backend.feedback import cli
from backend.models import FEEDBACK_COMMENT_MAX, Message, MessageFeedback
from tests.conftest import bearer, error_of
from tests.seeding import seed_conversation

REPLY_TEXT = "the secret reply text"


async def seed_exchange(db, user_id: str = "local") -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """A conversation with one user message and its reply: (conversation, user message, reply)."""
    cid = await seed_conversation(
        db,
        user_id=user_id,
        messages=[{"content": "hello"}, {"role": "assistant", "content": REPLY_TEXT, "agent": "Help"}],
    )
    async with db.sessions() as session:
        user, reply = (await session.exec(select(Message).where(Message.conversation_id == cid).order_by("seq"))).all()
    return cid, user.id, reply.id


def url(cid: uuid.UUID, mid: uuid.UUID) -> str:
    return f"/api/conversations/{cid}/messages/{mid}/feedback"


async def messages_of(client, cid: uuid.UUID) -> list[dict]:
    response = await client.get(f"/api/conversations/{cid}")
    assert response.status_code == 200, response.text
    return response.json()["messages"]


async def test_a_reply_is_rated_shown_with_the_message_changed_and_removed(client, db):
    cid, _, reply_mid = await seed_exchange(db)
    assert [m["feedback"] for m in await messages_of(client, cid)] == [None, None]

    response = await client.put(url(cid, reply_mid), json={"rating": "up"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message_id"] == str(reply_mid)
    first = body["feedback"]
    assert first["rating"] == "up" and first["comment"] is None
    assert first["created_at"] == first["updated_at"]
    user, reply = await messages_of(client, cid)
    assert user["feedback"] is None
    assert reply["feedback"] == first

    response = await client.put(url(cid, reply_mid), json={"rating": "down", "comment": "  wrong answer \n"})
    assert response.status_code == 200, response.text
    second = response.json()["feedback"]
    assert second["rating"] == "down" and second["comment"] == "wrong answer"
    assert second["created_at"] == first["created_at"]
    assert second["updated_at"] >= first["updated_at"]
    assert (await messages_of(client, cid))[1]["feedback"] == second

    response = await client.put(url(cid, reply_mid), json={"rating": None})
    assert response.status_code == 200, response.text
    assert response.json() == {"message_id": str(reply_mid), "feedback": None}
    assert [m["feedback"] for m in await messages_of(client, cid)] == [None, None]
    async with db.sessions() as session:
        assert (await session.exec(select(MessageFeedback))).all() == []
    # Removing what is not there is a no-op, not an error.
    assert (await client.put(url(cid, reply_mid), json={"rating": None})).status_code == 200


async def test_a_user_message_cannot_be_rated(client, db):
    cid, user_mid, _ = await seed_exchange(db)
    response = await client.put(url(cid, user_mid), json={"rating": "up"})
    assert response.status_code == 422
    assert error_of(response) == {
        "error": {"code": "not_an_assistant_message", "message": "Only assistant messages can be rated."}
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "rating"),
        ({"rating": "meh"}, "rating"),
        ({"rating": 1}, "rating"),
        ({"rating": "up", "comment": 5}, "comment"),
        ({"rating": "up", "stars": 5}, "stars"),
    ],
)
async def test_malformed_bodies_are_422_naming_the_field(client, db, body, field):
    cid, _, reply_mid = await seed_exchange(db)
    response = await client.put(url(cid, reply_mid), json=body)
    assert response.status_code == 422, response.text
    assert error_of(response)["error"]["code"] == "validation_error"
    assert field in response.text


async def test_the_comment_is_bounded_after_trimming_and_needs_a_rating(client, db):
    cid, _, reply_mid = await seed_exchange(db)
    longest = "x" * FEEDBACK_COMMENT_MAX
    response = await client.put(url(cid, reply_mid), json={"rating": "down", "comment": f"  {longest}  "})
    assert response.status_code == 200, response.text
    assert response.json()["feedback"]["comment"] == longest

    response = await client.put(url(cid, reply_mid), json={"rating": "down", "comment": longest + "x"})
    assert response.status_code == 422
    assert error_of(response) == {
        "error": {"code": "validation_error", "message": f"comment: at most {FEEDBACK_COMMENT_MAX} characters"}
    }
    response = await client.put(url(cid, reply_mid), json={"rating": None, "comment": "why"})
    assert response.status_code == 422
    assert error_of(response)["error"]["message"] == "comment: only with a rating"
    # Neither refusal changed the stored feedback.
    assert (await messages_of(client, cid))[1]["feedback"]["comment"] == longest
    # A blank comment is no comment.
    response = await client.put(url(cid, reply_mid), json={"rating": "up", "comment": "   "})
    assert response.json()["feedback"]["comment"] is None


async def test_another_users_conversation_or_message_is_404(auth_client, db):
    cid, _, reply_mid = await seed_exchange(db, user_id="alice")
    other_cid, _, other_reply = await seed_exchange(db, user_id="bob")
    for headers, path in [
        (bearer("bob"), url(cid, reply_mid)),  # alice's conversation
        (bearer("alice"), url(cid, other_reply)),  # bob's message under alice's conversation
        (bearer("alice"), url(cid, uuid.uuid4())),  # no such message
        (bearer("alice"), url(uuid.uuid4(), reply_mid)),  # no such conversation
    ]:
        response = await auth_client.put(path, json={"rating": "down"}, headers=headers)
        assert response.status_code == 404, (path, response.text)
        assert error_of(response)["error"]["code"] == "not_found"
    async with db.sessions() as session:
        assert (await session.exec(select(MessageFeedback))).all() == []
    response = await auth_client.put(url(cid, reply_mid), json={"rating": "down"}, headers=bearer("alice"))
    assert response.status_code == 200
    response = await auth_client.put(url(other_cid, other_reply), json={"rating": "up"}, headers=bearer("alice"))
    assert response.status_code == 404


async def test_the_service_entry_point_needs_no_http(db):
    """What a protocol adapter (ChatKit's `items.feedback`) calls: the same rules without a request."""
    cid, user_mid, reply_mid = await seed_exchange(db, user_id="alice")
    rows = ConversationRows(db)
    result = await rows.set_feedback("alice", cid, reply_mid, "down", "too long")
    assert result.feedback is not None and (result.feedback.rating, result.feedback.comment) == ("down", "too long")
    with pytest.raises(NotFoundError):
        await rows.set_feedback("bob", cid, reply_mid, "up")
    with pytest.raises(InvalidInputError) as refused:
        await rows.set_feedback("alice", cid, user_mid, "up")
    assert refused.value.code == "not_an_assistant_message"
    assert (await rows.set_feedback("alice", cid, reply_mid, None)).feedback is None


async def test_rating_several_messages_rates_all_or_none(db):
    """ChatKit's `items.feedback` names several items: one bad item leaves every other one unrated."""
    cid = await seed_conversation(
        db,
        user_id="alice",
        messages=[
            {"content": "hello"},
            {"role": "assistant", "content": "first"},
            {"content": "again"},
            {"role": "assistant", "content": "second"},
        ],
    )
    async with db.sessions() as session:
        user_mid, first, _, second = [
            m.id for m in (await session.exec(select(Message).where(Message.conversation_id == cid).order_by("seq")))
        ]
    rows = ConversationRows(db)

    async def rated() -> set[uuid.UUID]:
        async with db.sessions() as session:
            return {row.message_id for row in (await session.exec(select(MessageFeedback))).all()}

    with pytest.raises(InvalidInputError):
        await rows.set_feedbacks("alice", cid, [first, user_mid], "up")
    with pytest.raises(NotFoundError):
        await rows.set_feedbacks("alice", cid, [first, second, uuid.uuid4()], "up")
    assert await rated() == set()
    both = await rows.set_feedbacks("alice", cid, [first, second, first], "down")
    assert [(r.message_id, r.feedback.rating if r.feedback else None) for r in both] == [
        (first, "down"),
        (second, "down"),
    ]
    assert await rated() == {first, second}
    removed = await rows.set_feedbacks("alice", cid, [first, second], None)
    assert [r.feedback for r in removed] == [None, None] and await rated() == set()


async def test_feedback_goes_with_its_conversation(client, db):
    cid, _, reply_mid = await seed_exchange(db)
    assert (await client.put(url(cid, reply_mid), json={"rating": "down"})).status_code == 200
    assert (await client.delete(f"/api/conversations/{cid}")).status_code == 204
    async with db.sessions() as session:
        assert (await session.exec(select(MessageFeedback))).all() == []


async def test_the_operator_lists_recent_negative_feedback_without_the_reply_text(
    client, db, clean_db, monkeypatch, capsys
):
    monkeypatch.setenv("DATABASE_URL", clean_db)
    cid, _, down_mid = await seed_exchange(db)
    up_cid, _, up_mid = await seed_exchange(db)
    await client.put(url(cid, down_mid), json={"rating": "down", "comment": "made up a task"})
    await client.put(url(up_cid, up_mid), json={"rating": "up"})

    await cli.run([])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert "down" in lines[0] and f"message={down_mid}" in lines[0] and "user=local" in lines[0]
    assert '"made up a task"' in lines[0] and "agent=Help" in lines[0]
    assert REPLY_TEXT not in lines[0]

    await cli.run(["--rating", "any", "--json"])
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {e["message_id"] for e in entries} == {str(down_mid), str(up_mid)}
    assert all("reply" not in e for e in entries)
    assert entries[0]["updated_at"] >= entries[1]["updated_at"]

    await cli.run(["--with-text", "--json"])
    (entry,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert entry["reply"] == REPLY_TEXT and entry["comment"] == "made up a task"

    await cli.run(["--since", "2999-01-01", "--until", "2999-01-02"])
    assert capsys.readouterr().out == ""
    await cli.run(["--user", "someone-else", "--rating", "any"])
    assert capsys.readouterr().out == ""
    with pytest.raises(InvalidInputError):
        await cli.run(["--since", "yesterday"])
    with pytest.raises(InvalidInputError):
        await cli.run(["--limit", "0"])
