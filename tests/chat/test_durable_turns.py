"""Durable turns on real uvicorn, the real SDK and LiteLLM, and the fake Gemini, on both databases.

Rejoining with `Last-Event-ID`, following from a second client, `ON_DISCONNECT`, stop, idempotent sends, the batched
event log, text that databases cannot hold, and database outages while a reply ends.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import event, func
from sqlalchemy.engine import make_url
from sqlmodel import select

from backend.app import create_app
from backend.db import libpq_dsn
from backend.models import ClientMessageId, Message
from backend.settings import Settings
from tests.conftest import SECRET, bearer, live, serve
from tests.fakes.gemini import FakeGemini, text_turn
from tests.fakes.tcpproxy import TcpProxy
from tests.sse import Stream, chat, rejoin

pytestmark = pytest.mark.timeout(90)

CHUNKS = [f"w{i} " for i in range(10)]


@pytest.fixture
async def client(gemini_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    """A real uvicorn server on the fake Gemini (local mode)."""
    async with live(gemini_settings()) as http:
        yield http


def assert_well_formed(stream: Stream) -> None:
    assert stream.status == 200, stream.body
    assert stream.types[-1] == "done"
    assert stream.frames[-1].done_sentinel, "the stream must end with data: [DONE]"
    ids = [f.id for f in stream.frames if f.id is not None]
    assert ids == sorted(set(ids)), "event ids are unique and increasing"


async def messages_of(client: httpx.AsyncClient, conversation_id: str, **headers: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/conversations/{conversation_id}", headers=headers or None)
    assert response.status_code == 200, response.text
    return response.json()["messages"]


async def settled(client: httpx.AsyncClient, conversation_id: str, **headers: str) -> list[dict[str, Any]]:
    """The conversation's messages once its last reply is no longer in progress."""
    for _ in range(300):
        messages = await messages_of(client, conversation_id, **headers)
        if messages[-1]["status"] != "in_progress":
            return messages
        await asyncio.sleep(0.05)
    raise AssertionError("the reply never finished")


# --- rejoining -----------------------------------------------------------------------------------------------------


async def test_rejoin_mid_turn_with_last_event_id_has_no_gaps_and_no_duplicates(client, fake):
    fake.script(text_turn(CHUNKS, delay=0.15))
    first = await chat(client, {"message": "tell me"}, stop_after_texts=3)
    message_id = first.events[0]["message_id"]
    assert first.events[0]["status"] == "in_progress"

    rest = await rejoin(client, message_id, last_event_id=first.last_id)

    assert_well_formed(rest)
    assert rest.frames[0].id == first.last_id + 1
    assert first.text + rest.text == "".join(CHUNKS)
    assert rest.events[-1]["finish_reason"] == "stop"
    messages = await settled(client, first.events[0]["conversation_id"])
    assert (messages[1]["status"], messages[1]["content"]) == ("complete", "".join(CHUNKS))


async def test_rejoin_after_the_turn_ended_replays_it_all_and_ends(client, fake):
    fake.script(text_turn(CHUNKS[:4]))
    original = await chat(client, {"message": "short"})
    message_id = original.events[0]["message_id"]

    replay = await rejoin(client, message_id)
    assert_well_formed(replay)
    assert replay.events == original.events
    assert [f.id for f in replay.frames] == [f.id for f in original.frames]

    tail = await rejoin(client, message_id, after=original.last_id - 1)  # for clients that cannot set headers
    assert_well_formed(tail)
    assert tail.types == ["done"]


async def test_a_second_client_follows_the_same_turn_live(client, fake):
    fake.script(text_turn(CHUNKS, delay=0.1))
    first_task = asyncio.create_task(chat(client, {"message": "two tabs"}))
    while not fake.requests:
        await asyncio.sleep(0.02)
    conversation = (await client.get("/api/conversations")).json()["data"][0]
    detail = (await client.get(f"/api/conversations/{conversation['id']}")).json()
    assert detail["messages"][-1]["status"] == "in_progress"
    running = detail["active_message_id"]
    assert running == detail["messages"][-1]["id"]

    second = await rejoin(client, running)
    first = await first_task
    assert_well_formed(second)
    assert second.text == first.text == "".join(CHUNKS)
    after = (await client.get(f"/api/conversations/{conversation['id']}")).json()
    assert after["active_message_id"] is None


async def test_rejoin_is_404_for_another_users_or_an_unknown_message(make_settings, fake):
    settings = make_settings(auth_secret=SECRET, offline_model=False, gemini_api_key="k", gemini_api_base=fake.base_url)
    async with live(settings) as client:
        mine = await chat(client, {"message": "mine"}, headers=bearer("alice"))
        message_id = mine.events[0]["message_id"]
        theirs = await rejoin(client, message_id, headers=bearer("bob"))
        unknown = await rejoin(client, str(uuid.uuid4()), headers=bearer("alice"))
        user_message = (await messages_of(client, mine.events[0]["conversation_id"], **bearer("alice")))[0]
        not_a_reply = await rejoin(client, user_message["id"], headers=bearer("alice"))
    for stream in (theirs, unknown, not_a_reply):
        assert (stream.status, stream.body["error"]["code"]) == (404, "not_found")


# --- disconnects and stop ------------------------------------------------------------------------------------------


async def test_disconnect_with_continue_finishes_and_stores_the_whole_reply(client, fake):
    fake.script(text_turn(CHUNKS, delay=0.05))
    first = await chat(client, {"message": "go on without me"}, stop_after_texts=1)
    messages = await settled(client, first.events[0]["conversation_id"])
    assert (messages[1]["status"], messages[1]["content"]) == ("complete", "".join(CHUNKS))
    assert fake.disconnects == 0 and fake.completed == 1


async def test_stop_cancels_the_running_turn_even_without_its_stream(client, fake):
    fake.script(text_turn([f"w{i} " for i in range(60)], delay=0.1))
    first = await chat(client, {"message": "a long one"}, stop_after_texts=2)
    conversation_id = first.events[0]["conversation_id"]
    message_id = first.events[0]["message_id"]

    stopped = await client.post(f"/api/conversations/{conversation_id}/stop")
    assert stopped.status_code == 200, stopped.text
    assert stopped.json() == {
        "message_id": message_id,
        "status": "cancelled",
        "stopped": True,
        "detail": "The reply was stopped.",
    }
    assert await fake.wait_until(lambda f: f.disconnects == 1, within=5), "the upstream request must be closed"
    messages = await messages_of(client, conversation_id)
    assert messages[1]["status"] == "cancelled" and messages[1]["content"].startswith(first.text)
    replay = await rejoin(client, message_id)
    assert replay.events[-1]["finish_reason"] == "cancelled"

    again = await client.post(f"/api/conversations/{conversation_id}/stop")
    assert again.status_code == 200
    assert again.json()["stopped"] is False and again.json()["status"] == "cancelled"
    assert again.json()["detail"] == "Nothing is running in this conversation."
    fake.script(text_turn("free again"))
    assert (await chat(client, {"message": "next", "thread_id": conversation_id})).text == "free again"


async def test_stop_on_another_users_conversation_is_404(make_settings, fake):
    settings = make_settings(auth_secret=SECRET, offline_model=False, gemini_api_key="k", gemini_api_base=fake.base_url)
    async with live(settings) as client:
        mine = await chat(client, {"message": "mine"}, headers=bearer("alice"))
        conversation_id = mine.events[0]["conversation_id"]
        response = await client.post(f"/api/conversations/{conversation_id}/stop", headers=bearer("bob"))
        missing = await client.post(f"/api/conversations/{uuid.uuid4()}/stop", headers=bearer("alice"))
    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")
    assert missing.status_code == 404


# --- idempotent sends ----------------------------------------------------------------------------------------------


async def test_a_retried_send_attaches_to_the_turn_it_already_started(client, fake, db):
    fake.script(text_turn(CHUNKS, delay=0.1))
    key = str(uuid.uuid4())
    body = {"message": "only once", "client_message_id": key}
    first_task = asyncio.create_task(chat(client, body))
    while not fake.requests:
        await asyncio.sleep(0.02)

    during = await chat(client, body)  # a network retry while the turn runs
    first = await first_task
    after = await chat(client, body)  # and once it has ended

    assert_well_formed(during)
    assert_well_formed(after)
    message_id = first.events[0]["message_id"]
    assert during.events[0]["message_id"] == after.events[0]["message_id"] == message_id
    assert during.text == after.text == first.text == "".join(CHUNKS)
    assert len(fake.requests) == 1, "a repeat never starts a second run"
    async with db.sessions() as session:
        count = (await session.exec(select(func.count()).select_from(Message))).one()  # type: ignore[call-overload]
    assert count == 2, "one user message and one reply"

    conflict = await chat(client, {"message": "something else", "client_message_id": key})
    assert (conflict.status, conflict.body["error"]["code"]) == (409, "idempotency_conflict")


async def test_client_message_ids_are_scoped_to_the_user(make_settings, fake, db):
    settings = make_settings(auth_secret=SECRET, offline_model=False, gemini_api_key="k", gemini_api_base=fake.base_url)
    key = str(uuid.uuid4())
    async with live(settings) as client:
        alice = await chat(client, {"message": "same", "client_message_id": key}, headers=bearer("alice"))
        bob = await chat(client, {"message": "same", "client_message_id": key}, headers=bearer("bob"))
    assert alice.events[0]["message_id"] != bob.events[0]["message_id"]
    async with db.sessions() as session:
        keys = (await session.exec(select(ClientMessageId.user_id))).all()  # type: ignore[call-overload]
    assert sorted(keys) == ["alice", "bob"]


# --- the event log -------------------------------------------------------------------------------------------------


async def test_events_are_logged_in_batches_not_one_statement_per_token(gemini_settings, fake):
    chunks = [f"t{i} " for i in range(40)]
    fake.script(text_turn(chunks, delay=0.02))
    app = create_app(gemini_settings())
    inserts: list[int] = []

    def count(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if "INSERT INTO TURN_EVENTS" in statement.upper():
            # SQLite: one parameter set per row; PostgreSQL: the rows as one JSON array.
            inserts.append(len(parameters) if executemany else len(json.loads(parameters["rows"])))

    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        event.listen(app.state.database.engine.sync_engine, "before_cursor_execute", count)
        stream = await chat(client, {"message": "count my writes"})
    assert_well_formed(stream)
    assert sum(inserts) >= len(stream.events), "every event is logged"
    # 40 deltas over ~0.8 s, batched every 250 ms: a handful of statements, not one per event.
    assert len(inserts) <= len(stream.events) // 4, inserts


async def test_a_batch_of_many_turns_is_logged_and_announced_for_every_one(db, database_url):
    """More turns in one batch than one notification can name: every event is stored, every turn announced."""
    if not database_url.startswith("postgresql"):
        pytest.skip("notifications are PostgreSQL's")
    from backend.chat.store import NOTIFY_CHANNEL, NOTIFY_IDS, ConversationStore, StoredEvent, TurnRequest

    store = ConversationStore(
        db, instance_id=uuid.uuid4(), stale_after_seconds=10, max_turn_seconds=60, history_max_items=10
    )
    turns = [await store.begin_turn(TurnRequest("u", f"m{i}", None)) for i in range(NOTIFY_IDS + 10)]
    batch = {t.message_id: [StoredEvent(1, "text", '{"type":"text","content":"a"}')] for t in turns}
    async with await psycopg.AsyncConnection.connect(libpq_dsn(database_url), autocommit=True) as listener:
        await listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        await store.append_events(batch)
        announced: set[str] = set()
        async for note in listener.notifies(timeout=5, stop_after=2):
            announced.update(note.payload.split(","))
    assert announced == {str(message_id) for message_id in batch}
    for message_id in batch:
        assert [e.id for e in await store.read_events(message_id, 0)] == [1]


async def test_finished_turn_logs_are_pruned_but_messages_stay(client, fake, db):
    fake.script(text_turn(CHUNKS[:3]))
    stream = await chat(client, {"message": "prune me"})
    from datetime import timedelta

    from backend.chat.store import ConversationStore

    store = ConversationStore(
        db, instance_id=uuid.uuid4(), stale_after_seconds=10, max_turn_seconds=60, history_max_items=10
    )
    assert await store.prune_events(timedelta(hours=1)) == 0
    assert await store.prune_events(timedelta(seconds=-1)) > 0
    replay = await rejoin(client, stream.events[0]["message_id"])
    assert_well_formed(replay)  # a turn without a log still ends with done
    assert (await messages_of(client, stream.events[0]["conversation_id"]))[1]["content"] == "".join(CHUNKS[:3])


# --- text the databases cannot hold --------------------------------------------------------------------------------


async def test_nul_and_lone_surrogates_from_the_model_are_stored_and_never_block(client, fake):
    fake.script(text_turn(["a\x00b ", "c\ud800d"]))
    stream = await chat(client, {"message": "odd bytes \x00 here"})
    assert_well_formed(stream)
    assert stream.events[-1]["finish_reason"] == "stop"
    conversation_id = stream.events[0]["conversation_id"]
    user, reply = await messages_of(client, conversation_id)
    assert user["content"] == "odd bytes \ufffd here"
    assert reply["status"] == "complete" and reply["content"] == "a\ufffdb c\ufffdd"
    fake.script(text_turn("fine"))
    assert (await chat(client, {"message": "next", "thread_id": conversation_id})).text == "fine"
    renamed = await client.patch(f"/api/conversations/{conversation_id}", json={"title": "t\x00itle"})
    assert renamed.status_code == 200 and renamed.json()["title"] == "t\ufffditle"
    task = await client.post("/api/tasks", json={"title": "ta\x00sk", "notes": "n\x00"})
    assert task.status_code == 201 and (task.json()["title"], task.json()["notes"]) == ("ta\ufffdsk", "n\ufffd")


# --- the database goes away while a reply ends (PostgreSQL, through a proxy that can be cut) ----------------------


def _through_proxy(url: str, proxy: TcpProxy) -> str:
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


async def _proxied(database_url: str) -> TcpProxy:
    if not database_url.startswith("postgresql"):
        pytest.skip("the outage is simulated with a TCP proxy in front of PostgreSQL")
    target = make_url(database_url)
    return TcpProxy(target.host or "127.0.0.1", target.port or 5432)


async def test_a_short_database_outage_at_the_end_of_a_reply_loses_nothing(
    gemini_settings: Callable[..., Settings], fake: FakeGemini, clean_db: str
):
    async with await _proxied(clean_db) as proxy:
        fake.script(text_turn(CHUNKS, delay=0.1))
        settings = gemini_settings(database_url=_through_proxy(clean_db, proxy))
        async with live(settings) as client:
            stream_task = asyncio.create_task(chat(client, {"message": "survive it"}))
            await fake.wait_until(lambda f: len(f.requests) == 1, within=10)
            await asyncio.sleep(0.5)
            proxy.cut()
            await asyncio.sleep(2.5)  # the reply ends while the database is unreachable
            proxy.restore()
            stream = await stream_task
            assert_well_formed(stream)
            assert stream.events[-1]["finish_reason"] == "stop"
            conversation_id = stream.events[0]["conversation_id"]
            messages = await messages_of(client, conversation_id)
            assert (messages[1]["status"], messages[1]["content"]) == ("complete", "".join(CHUNKS))
            fake.script(text_turn("and after"))
            follow = await chat(client, {"message": "next", "thread_id": conversation_id})
            assert follow.status == 200, "the run lock was released"


async def test_a_long_outage_gives_up_saving_but_frees_the_conversation_soon_after(
    gemini_settings: Callable[..., Settings], fake: FakeGemini, clean_db: str
):
    async with await _proxied(clean_db) as proxy:
        fake.script(text_turn(CHUNKS[:3], delay=0.1))
        settings = gemini_settings(database_url=_through_proxy(clean_db, proxy), save_retry_seconds=1.0)
        async with live(settings) as client:
            first = await chat(client, {"message": "hello"})
            conversation_id = first.events[0]["conversation_id"]
            fake.script(text_turn(CHUNKS, delay=0.1))
            stream_task = asyncio.create_task(chat(client, {"message": "doomed", "thread_id": conversation_id}))
            await fake.wait_until(lambda f: len(f.requests) == 2, within=10)
            proxy.cut()
            stream = await stream_task
            assert_well_formed(stream)
            assert stream.events[-2]["code"] == "internal"
            assert stream.events[-1]["finish_reason"] == "error"
            await asyncio.sleep(1.0)
            proxy.restore()
            fake.script(text_turn("free"))
            for _ in range(100):  # unblocked within a retry interval or two of the database's return
                again = await chat(client, {"message": "again", "thread_id": conversation_id})
                if again.status == 200:
                    break
                assert again.body["error"]["code"] in {"run_in_progress", "database_unavailable"}
                await asyncio.sleep(0.1)
            assert again.status == 200
            messages = await messages_of(client, conversation_id)
            assert messages[3]["status"] == "error"
