"""The `/api/conversations` REST API over rows seeded through the service layer, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from backend.models import Conversation, Message
from tests.conftest import error_of
from tests.seeding import append, b64, count_rows, insert_messages, seed_conversation, when

CONVERSATION_NOT_FOUND = {"error": {"code": "not_found", "message": "Conversation not found."}}
BAD_CURSOR = {"error": {"code": "validation_error", "message": "cursor: not a cursor this server issued for this list"}}
SUMMARY_KEYS = {"id", "title", "archived", "created_at", "updated_at", "preview", "snippet", "snippet_highlights"}
DETAIL_KEYS = {
    "id",
    "title",
    "archived",
    "created_at",
    "updated_at",
    "messages",
    "next_cursor",
    "active_message_id",
    "active_leaf_id",
}
MESSAGE_KEYS = {
    "id",
    "seq",
    "parent_id",
    "sibling_ids",
    "sibling_index",
    "sibling_count",
    "role",
    "content",
    "parts",
    "tool_calls",
    "attachments",
    "status",
    "error_code",
    "agent",
    "usage",
    "created_at",
}
BASE = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


async def list_ids(client, query: str = "") -> list[str]:
    response = await client.get(f"/api/conversations{query}")
    assert response.status_code == 200, response.text
    return [c["id"] for c in response.json()["data"]]


async def preview_of(client, db, content: str) -> str | None:
    cid = await seed_conversation(db, messages=[{"content": content}])
    (summary,) = (await client.get("/api/conversations")).json()["data"]
    assert summary["id"] == str(cid)
    return summary["preview"]


# --- list -----------------------------------------------------------------------------------------------------------


async def test_list_is_empty_at_first(client):
    response = await client.get("/api/conversations")
    assert response.status_code == 200
    assert response.json() == {"data": [], "next_cursor": None}


async def test_list_is_newest_updated_first(client, db):
    # Created in an order that matches neither creation nor title order.
    middle = await seed_conversation(db, title="middle", updated_at=BASE + timedelta(hours=1))
    oldest = await seed_conversation(db, title="oldest", updated_at=BASE)
    newest = await seed_conversation(db, title="newest", updated_at=BASE + timedelta(hours=2))
    response = await client.get("/api/conversations")
    assert response.status_code == 200
    body = response.json()
    assert body["next_cursor"] is None
    assert [c["id"] for c in body["data"]] == [str(newest), str(middle), str(oldest)]
    assert [c["title"] for c in body["data"]] == ["newest", "middle", "oldest"]
    for summary in body["data"]:
        assert set(summary) == SUMMARY_KEYS
        assert summary["preview"] is None
    assert when(body["data"][0]["updated_at"]) == BASE + timedelta(hours=2)


async def test_append_message_moves_a_conversation_to_the_top(client, db):
    older = await seed_conversation(db, title="older", updated_at=BASE)
    newer = await seed_conversation(db, title="newer", updated_at=BASE + timedelta(minutes=5))
    assert await list_ids(client) == [str(newer), str(older)]
    await append(db, older, content="bump")
    assert await list_ids(client) == [str(older), str(newer)]
    (top, _) = (await client.get("/api/conversations")).json()["data"]
    assert top["preview"] == "bump"
    assert when(top["updated_at"]) > BASE + timedelta(minutes=5)


async def test_preview_is_the_last_message_by_seq_not_by_time(client, db):
    cid = await seed_conversation(db, updated_at=BASE)
    # seq 2 is inserted first and carries the oldest timestamp; it is still the last message.
    await insert_messages(
        db,
        cid,
        [
            {"seq": 2, "content": "second by seq", "created_at": BASE - timedelta(days=1)},
            {"seq": 1, "content": "first by seq", "created_at": BASE},
        ],
    )
    (summary,) = (await client.get("/api/conversations")).json()["data"]
    assert summary["preview"] == "second by seq"


async def test_preview_collapses_whitespace(client, db):
    assert await preview_of(client, db, "  Hello,\n\n   world!\t\tBye.  ") == "Hello, world! Bye."


async def test_preview_keeps_a_120_character_message_whole(client, db):
    assert await preview_of(client, db, "a" * 120) == "a" * 120


async def test_preview_truncates_a_long_message_with_an_ellipsis(client, db):
    preview = await preview_of(client, db, "a" * 121)
    assert preview == "a" * 119 + "…"
    assert len(preview) == 120


async def test_preview_truncates_on_words_without_trailing_space(client, db):
    assert await preview_of(client, db, "word " * 50) == ("word " * 24).rstrip() + "…"
    await client.delete(f"/api/conversations/{(await list_ids(client))[0]}")
    assert await preview_of(client, db, "a" * 118 + " " + "b" * 10) == "a" * 118 + "…"


async def test_preview_counts_characters_not_bytes(client, db):
    assert await preview_of(client, db, "é" * 120) == "é" * 120


async def test_preview_collapses_whitespace_before_truncating(client, db):
    # 205 raw characters, but "hello world" once the run of spaces is collapsed: nothing is cut off.
    assert await preview_of(client, db, "hello" + " " * 195 + "world") == "hello world"


async def test_preview_of_a_conversation_without_messages_is_null(client, db):
    await seed_conversation(db)
    (summary,) = (await client.get("/api/conversations")).json()["data"]
    assert summary["preview"] is None


async def test_list_only_shows_the_callers_conversations(client, db):
    mine = await seed_conversation(db, "local")
    await seed_conversation(db, "someone-else")
    assert await list_ids(client) == [str(mine)]


# --- list pagination ------------------------------------------------------------------------------------------------


async def walk(client, limit: int) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        response = await client.get(f"/api/conversations?limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([c["id"] for c in body["data"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "the cursor never ends"


async def test_exactly_one_page_has_no_next_cursor(client, db):
    ids = [await seed_conversation(db, updated_at=BASE + timedelta(seconds=i)) for i in range(3)]
    body = (await client.get("/api/conversations?limit=3")).json()
    assert [c["id"] for c in body["data"]] == [str(i) for i in reversed(ids)]
    assert body["next_cursor"] is None


async def test_cursor_at_the_end(client, db):
    ids = [await seed_conversation(db, updated_at=BASE + timedelta(seconds=i)) for i in range(3)]
    first = (await client.get("/api/conversations?limit=2")).json()
    assert [c["id"] for c in first["data"]] == [str(ids[2]), str(ids[1])]
    last = (await client.get(f"/api/conversations?limit=2&cursor={first['next_cursor']}")).json()
    assert last == {"data": [last["data"][0]], "next_cursor": None}
    assert last["data"][0]["id"] == str(ids[0])


async def test_walking_25_conversations_by_10(client, db):
    # Groups of three share an updated_at, so page boundaries fall inside ties broken by id.
    seeded = [await seed_conversation(db, updated_at=BASE + timedelta(seconds=i // 3)) for i in range(25)]
    pages = await walk(client, limit=10)
    assert [len(page) for page in pages] == [10, 10, 5]
    walked = [cid for page in pages for cid in page]
    assert len(set(walked)) == 25
    assert set(walked) == {str(cid) for cid in seeded}
    expected = sorted(seeded, key=lambda cid: (seeded.index(cid) // 3, cid.int), reverse=True)
    assert walked == [str(cid) for cid in expected]
    assert walked == await list_ids(client, "?limit=100")


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("garbage!!", id="garbage"),
        pytest.param(b64(["x", "y"]), id="tampered"),
        pytest.param(b64([3]), id="messages-cursor"),
        pytest.param(b64(["2024-01-01T00:00:00", str(uuid.uuid4())]), id="naive-time"),
        pytest.param(b64("text"), id="not-a-list"),
        pytest.param(b64(["9999-12-31T23:59:59-14:00", str(uuid.uuid4())]), id="time-beyond-year-9999-in-utc"),
    ],
)
async def test_bad_list_cursor_is_rejected(client, db, cursor):
    await seed_conversation(db)
    response = await client.get(f"/api/conversations?cursor={cursor}")
    assert response.status_code == 422
    assert error_of(response) == BAD_CURSOR


@pytest.mark.parametrize("limit", [0, 101])
async def test_list_limit_out_of_range_names_limit(client, limit):
    response = await client.get(f"/api/conversations?limit={limit}")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["message"].startswith("limit:")


# --- get one --------------------------------------------------------------------------------------------------------


async def test_get_returns_messages_in_seq_order_with_tool_calls(client, db):
    tool_call = {"id": "call_1", "name": "add_task", "args": {"title": "Buy milk"}, "result": {"id": "t1", "ok": True}}
    cid = await seed_conversation(
        db,
        title="Shopping",
        messages=[
            {"role": "user", "content": "Add milk to my list"},
            {
                "role": "assistant",
                "content": "Done.",
                "tool_calls": [tool_call, {"id": "call_2", "name": "list_tasks"}],
                "usage": {"input_tokens": 12, "output_tokens": 3},
                "items": [{"type": "message", "content": "internal replay data"}],
            },
            {"role": "user", "content": "thanks"},
            {"role": "assistant", "content": "Partial ans", "status": "cancelled"},
            {"role": "assistant", "content": "", "status": "error", "error_code": "model_unavailable"},
        ],
    )
    response = await client.get(f"/api/conversations/{cid}")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == DETAIL_KEYS
    assert body["id"] == str(cid)
    assert body["title"] == "Shopping"
    assert body["next_cursor"] is None
    messages = body["messages"]
    for message in messages:
        assert set(message) == MESSAGE_KEYS  # `items` and `run_state` (model replay data) never leave the server
        uuid.UUID(message["id"])
        when(message["created_at"])
    assert [m["seq"] for m in messages] == [1, 2, 3, 4, 5]
    assert [(m["role"], m["content"], m["status"]) for m in messages] == [
        ("user", "Add milk to my list", "complete"),
        ("assistant", "Done.", "complete"),
        ("user", "thanks", "complete"),
        ("assistant", "Partial ans", "cancelled"),
        ("assistant", "", "error"),
    ]
    assert messages[1]["tool_calls"] == [tool_call, {"id": "call_2", "name": "list_tasks", "args": {}, "result": None}]
    assert messages[1]["usage"] == {"input_tokens": 12, "output_tokens": 3}
    assert messages[0]["tool_calls"] == []
    assert messages[0]["usage"] is None
    assert [m["error_code"] for m in messages] == [None, None, None, None, "model_unavailable"]


async def test_get_orders_by_seq_not_insertion_or_time(client, db):
    cid = await seed_conversation(db)
    await insert_messages(
        db,
        cid,
        [
            {"seq": 3, "content": "three", "created_at": BASE},
            {"seq": 1, "content": "one", "created_at": BASE + timedelta(hours=2)},
            {"seq": 2, "content": "two", "created_at": BASE + timedelta(hours=1)},
        ],
    )
    body = (await client.get(f"/api/conversations/{cid}")).json()
    assert [(m["seq"], m["content"]) for m in body["messages"]] == [(1, "one"), (2, "two"), (3, "three")]


async def test_get_missing_conversation_is_404(client):
    response = await client.get(f"/api/conversations/{uuid.uuid4()}")
    assert response.status_code == 404
    assert error_of(response) == CONVERSATION_NOT_FOUND


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_non_uuid_id_is_a_json_404(client, method):
    response = await client.request(
        method, "/api/conversations/nope", json={"title": "x"} if method == "PATCH" else None
    )
    assert response.status_code == 404
    assert error_of(response) == {"error": {"code": "not_found", "message": "No such resource."}}


# --- messages pagination --------------------------------------------------------------------------------------------


async def walk_messages(client, cid, **params) -> tuple[list[int], list[str]]:
    """Follow `next_cursor` to the end: the size of each page and every message's content, in page order."""
    contents, cursor, sizes = [], None, []
    while True:
        response = await client.get(f"/api/conversations/{cid}", params=params | ({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        body = response.json()
        sizes.append(len(body["messages"]))
        contents += [m["content"] for m in body["messages"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return sizes, contents
        assert len(sizes) < 10


async def test_messages_pages_walk_to_the_end(client, db):
    cid = await seed_conversation(db, messages=[{"content": f"m{i}"} for i in range(1, 8)])
    sizes, contents = await walk_messages(client, cid, limit=3)
    assert sizes == [3, 3, 1]
    assert contents == [f"m{i}" for i in range(1, 8)]


async def test_messages_exactly_one_page(client, db):
    cid = await seed_conversation(db, messages=[{"content": f"m{i}"} for i in range(4)])
    body = (await client.get(f"/api/conversations/{cid}?limit=4")).json()
    assert len(body["messages"]) == 4
    assert body["next_cursor"] is None


async def test_messages_of_an_empty_conversation(client, db):
    cid = await seed_conversation(db)
    body = (await client.get(f"/api/conversations/{cid}")).json()
    assert body["messages"] == []
    assert body["next_cursor"] is None


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("garbage!!", id="garbage"),
        pytest.param(b64(["x"]), id="string"),
        pytest.param(b64([1, 2]), id="two-values"),
        pytest.param(b64([1.5]), id="float"),
        pytest.param(b64(["2024-01-01T00:00:00+00:00", str(uuid.uuid4())]), id="conversation-list-cursor"),
        pytest.param(b64([True]), id="json-true"),  # a boolean is not a sequence number
        pytest.param(b64([2**31]), id="beyond-int32"),  # `seq` is a 32-bit INTEGER column
        pytest.param(b64([10**30]), id="huge-int"),
    ],
)
async def test_bad_messages_cursor_is_422(client, db, cursor):
    cid = await seed_conversation(db, messages=[{"content": "m"}])
    response = await client.get(f"/api/conversations/{cid}?cursor={cursor}")
    assert response.status_code == 422
    assert error_of(response) == BAD_CURSOR


async def test_newest_first_pages_walk_back_to_the_first_message(client, db):
    cid = await seed_conversation(db, messages=[{"content": f"m{i}"} for i in range(1, 8)])
    sizes, contents = await walk_messages(client, cid, order="desc", limit=3)
    assert sizes == [3, 3, 1]
    assert contents == [f"m{i}" for i in range(7, 0, -1)]
    # A message that arrives while paging back does not shift the older pages.
    first = (await client.get(f"/api/conversations/{cid}", params={"order": "desc", "limit": 3})).json()
    await append(db, cid, content="m8")
    older = (
        await client.get(
            f"/api/conversations/{cid}", params={"order": "desc", "limit": 3, "cursor": first["next_cursor"]}
        )
    ).json()
    assert [m["content"] for m in older["messages"]] == ["m4", "m3", "m2"]
    newest = (await client.get(f"/api/conversations/{cid}", params={"order": "desc", "limit": 1})).json()
    assert [m["content"] for m in newest["messages"]] == ["m8"]


async def test_a_cursor_of_one_order_is_refused_by_the_other(client, db):
    cid = await seed_conversation(db, messages=[{"content": f"m{i}"} for i in range(4)])
    asc = (await client.get(f"/api/conversations/{cid}", params={"limit": 2})).json()["next_cursor"]
    desc = (await client.get(f"/api/conversations/{cid}", params={"limit": 2, "order": "desc"})).json()["next_cursor"]
    assert asc and desc
    for params in (
        {"order": "desc", "cursor": asc},
        {"order": "asc", "cursor": desc},
        {"cursor": desc},
        {"order": "desc", "cursor": b64([">", 2])},
        {"order": "desc", "cursor": b64(["<", "2"])},
        {"order": "desc", "cursor": b64(["<", -1])},
    ):
        response = await client.get(f"/api/conversations/{cid}", params=params)
        assert response.status_code == 422, params
        assert error_of(response) == BAD_CURSOR
    response = await client.get(f"/api/conversations/{cid}", params={"order": "newest"})
    assert response.status_code in (400, 422)
    assert response.json()["error"]["message"].startswith("order:")


@pytest.mark.parametrize("limit", [0, 501])
async def test_messages_limit_out_of_range_names_limit(client, db, limit):
    cid = await seed_conversation(db)
    response = await client.get(f"/api/conversations/{cid}?limit={limit}")
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("limit:")


# --- rename ---------------------------------------------------------------------------------------------------------


async def test_rename_trims_the_title(client, db):
    cid = await seed_conversation(db, title="Old", messages=[{"content": "hi"}])
    response = await client.patch(f"/api/conversations/{cid}", json={"title": "  New title \n"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "title", "archived", "created_at", "updated_at"}
    assert (body["id"], body["title"]) == (str(cid), "New title")
    detail = (await client.get(f"/api/conversations/{cid}")).json()
    assert detail["title"] == "New title"
    assert [m["content"] for m in detail["messages"]] == ["hi"]


async def test_rename_accepts_200_characters(client, db):
    cid = await seed_conversation(db)
    response = await client.patch(f"/api/conversations/{cid}", json={"title": "t" * 200})
    assert response.status_code == 200
    assert response.json()["title"] == "t" * 200


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"title": ""}, "title: String should have at least 1 character"),
        ({"title": " \n\t "}, "title: String should have at least 1 character"),
        ({"title": "t" * 201}, "title: String should have at most 200 characters"),
        ({}, "Value error, send a title, archived, or both"),
        ({"title": None}, "Value error, title may be omitted but not null"),
        ({"archived": "yes"}, "archived: Input should be a valid boolean, unable to interpret input"),
    ],
)
async def test_rename_rejects_bad_titles(client, db, payload, message):
    cid = await seed_conversation(db, title="Keep")
    response = await client.patch(f"/api/conversations/{cid}", json=payload)
    assert response.status_code == 422
    assert error_of(response) == {"error": {"code": "validation_error", "message": message}}
    assert (await client.get(f"/api/conversations/{cid}")).json()["title"] == "Keep"


async def test_archived_conversations_leave_the_default_list_and_come_back(client, db):
    kept = await seed_conversation(db, title="kept", updated_at=BASE + timedelta(hours=1))
    old = await seed_conversation(db, title="old", updated_at=BASE)
    archived = await client.patch(f"/api/conversations/{old}", json={"archived": True})
    assert archived.status_code == 200
    assert (archived.json()["archived"], archived.json()["title"]) == (True, "old")
    assert archived.json()["updated_at"].startswith(BASE.isoformat()[:19]), "archiving is not an update"
    listed = (await client.get("/api/conversations")).json()["data"]
    assert [c["id"] for c in listed] == [str(kept)]
    only_archived = (await client.get("/api/conversations?archived=true")).json()["data"]
    assert [(c["id"], c["archived"]) for c in only_archived] == [(str(old), True)]
    assert (await client.get(f"/api/conversations/{old}")).status_code == 200, "an archived conversation still reads"
    restored = await client.patch(f"/api/conversations/{old}", json={"archived": False, "title": "back"})
    assert (restored.json()["archived"], restored.json()["title"]) == (False, "back")
    assert [c["id"] for c in (await client.get("/api/conversations")).json()["data"]] == [str(old), str(kept)]
    theirs = await seed_conversation(db, "someone-else")
    assert (await client.patch(f"/api/conversations/{theirs}", json={"archived": True})).status_code == 404


async def test_rename_missing_conversation_is_404(client):
    response = await client.patch(f"/api/conversations/{uuid.uuid4()}", json={"title": "x"})
    assert response.status_code == 404
    assert error_of(response) == CONVERSATION_NOT_FOUND


# --- delete ---------------------------------------------------------------------------------------------------------


async def test_delete_cascades_to_messages(client, db):
    doomed = await seed_conversation(db, messages=[{"content": f"m{i}"} for i in range(3)])
    kept = await seed_conversation(db, messages=[{"content": "stay"}])
    assert await count_rows(db, Message, Message.conversation_id == doomed) == 3

    response = await client.delete(f"/api/conversations/{doomed}")
    assert response.status_code == 204
    assert response.content == b""

    assert await count_rows(db, Message, Message.conversation_id == doomed) == 0
    assert await count_rows(db, Conversation, Conversation.id == doomed) == 0
    assert await count_rows(db, Message, Message.conversation_id == kept) == 1
    assert await list_ids(client) == [str(kept)]
    assert error_of(await client.get(f"/api/conversations/{doomed}")) == CONVERSATION_NOT_FOUND

    again = await client.delete(f"/api/conversations/{doomed}")
    assert again.status_code == 404
    assert error_of(again) == CONVERSATION_NOT_FOUND
