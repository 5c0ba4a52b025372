"""Unit tests of the conversation store's modules (`backend.chat.store`, `backend.conversations.store`), both databases.

Each test drives the store directly, without the HTTP layer or a model: the run lock, beginning and finishing turns,
the event log, takeover, stop requests, pauses, widget-action rows, and REST's renames and deletes.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from backend.chat.events import ApprovalRequest, Done, Start, Text, Usage
from backend.chat.pause import Approved, PausedState, answered, part_of
from backend.chat.reply import Reply
from backend.chat.store import ConversationStore, Outcome, StoredEvent, TurnRequest
from backend.chat.store.rows import BegunTurn, ExistingTurn
from backend.conversations.store import ConversationRows
from backend.db import Database
from backend.errors import ConflictError, NotFoundError
from backend.models import Conversation, Instance, Message, MessageStatus, utcnow

USER = "alice"


def make_store(db: Database) -> ConversationStore:
    """A store of a process that has not beaten yet: its locks count as stale until `heartbeat()`."""
    return ConversationStore(
        db, instance_id=uuid.uuid4(), stale_after_seconds=10, max_turn_seconds=60, history_max_items=20
    )


async def alive_store(db: Database) -> ConversationStore:
    store = make_store(db)
    await store.heartbeat()
    return store


async def begun(
    store: ConversationStore, message: str = "hello", conversation_id: uuid.UUID | None = None
) -> BegunTurn:
    turn = await store.begin_turn(TurnRequest(USER, message, conversation_id))
    assert isinstance(turn, BegunTurn)
    return turn


async def message(db: Database, message_id: uuid.UUID) -> Message:
    async with db.sessions() as session:
        row = await session.get(Message, message_id)
        assert row is not None
        return row


async def lock_of(db: Database, conversation_id: uuid.UUID) -> uuid.UUID | None:
    async with db.sessions() as session:
        return (await session.exec(select(Conversation.run_id).where(col(Conversation.id) == conversation_id))).one()


async def stop_beating(db: Database, store: ConversationStore) -> None:
    """Make `store`'s process look dead to the others: its last heartbeat is older than the takeover delay."""
    async with db.sessions() as session:
        await session.exec(
            update(Instance)
            .where(col(Instance.id) == store.instance_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=30))
        )
        await session.commit()


# --- the turn's own rows -------------------------------------------------------------------------------------------


async def test_a_turn_holds_its_conversation_until_it_finishes_once(db):
    store = await alive_store(db)
    turn = await begun(store, "What is   the plan for\ntoday, and tomorrow, and the day after that one?")
    assert turn.created and turn.title == "What is the plan for today, and tomorrow, and the…"
    assert [m.content for m in turn.history][-1].startswith("What is   the plan")
    assert await lock_of(db, turn.conversation_id) == turn.message_id
    with pytest.raises(ConflictError) as busy:
        await begun(store, "again", turn.conversation_id)
    assert busy.value.code == "run_in_progress"

    outcome = Outcome(MessageStatus.COMPLETE, Reply([{"type": "text", "text": "Done."}]))
    log = [StoredEvent.of(1, Start(str(turn.conversation_id), str(turn.message_id), turn.title))]
    assert await store.finish_turn(turn.conversation_id, turn.message_id, outcome, log, retry_seconds=1)
    stored = await message(db, turn.message_id)
    assert (stored.status, stored.content, stored.parts) == (MessageStatus.COMPLETE, "Done.", outcome.reply.parts())
    assert await lock_of(db, turn.conversation_id) is None
    assert [e.id for e in await store.read_events(turn.message_id, 0)] == [1]

    late = Outcome(MessageStatus.ERROR, Reply([{"type": "text", "text": "late"}]))
    assert await store.finish_turn(turn.conversation_id, turn.message_id, late, [], retry_seconds=1)
    assert (await message(db, turn.message_id)).content == "Done."  # a second finish changes nothing
    following = await begun(store, "next", turn.conversation_id)
    assert [m.content for m in following.history] == [turn.history[-1].content, "Done.", "next"]


async def test_a_repeated_client_message_id_returns_the_turn_it_started(db):
    store = await alive_store(db)
    key = uuid.uuid4()
    first = await store.begin_turn(TurnRequest(USER, "once", None, client_message_id=key))
    again = await store.begin_turn(TurnRequest(USER, "once", None, client_message_id=key))
    assert isinstance(first, BegunTurn) and isinstance(again, ExistingTurn)
    assert (again.conversation_id, again.message_id) == (first.conversation_id, first.message_id)
    with pytest.raises(ConflictError) as conflict:
        await store.begin_turn(TurnRequest(USER, "other text", None, client_message_id=key))
    assert conflict.value.code == "idempotency_conflict"


async def test_another_users_conversation_is_not_found(db):
    store = await alive_store(db)
    turn = await begun(store)
    await store.release(turn.conversation_id, turn.message_id)
    with pytest.raises(NotFoundError):
        await store.begin_turn(TurnRequest("mallory", "hi", turn.conversation_id))
    with pytest.raises(NotFoundError):
        await store.turn_info("mallory", turn.message_id)
    with pytest.raises(NotFoundError):
        await store.request_stop("mallory", turn.conversation_id)
    info = await store.turn_info(USER, turn.message_id)
    assert (info.status, info.running) == (MessageStatus.IN_PROGRESS, False)
    assert await store.latest_reply(USER, turn.conversation_id) == (turn.message_id, MessageStatus.IN_PROGRESS)


async def test_abandon_closes_an_unsaved_reply_from_its_log_and_frees_the_lock(db):
    store = await alive_store(db)
    turn = await begun(store)
    start = Start(str(turn.conversation_id), str(turn.message_id), turn.title)
    await store.append_events({turn.message_id: [StoredEvent.of(1, start), StoredEvent.of(2, Text("partial"))]})
    await store.abandon(turn.conversation_id, turn.message_id)
    stored = await message(db, turn.message_id)
    assert (stored.status, stored.content, stored.error_code) == (MessageStatus.ERROR, "partial", "internal")
    assert await lock_of(db, turn.conversation_id) is None
    assert [e.type for e in await store.read_events(turn.message_id, 2)] == ["error", "done"]


# --- pauses --------------------------------------------------------------------------------------------------------


async def paused_turn(store: ConversationStore) -> tuple[BegunTurn, ApprovalRequest]:
    turn = await begun(store, "delete milk")
    ask = ApprovalRequest("call_1", "delete_task", {"task": "milk"})
    reply = Reply()
    reply.add(Text("Sure."))
    reply.add(ask)
    state = PausedState("Task assistant", {"$schemaVersion": "1.21"})
    outcome = Outcome(MessageStatus.REQUIRES_ACTION, reply, run_state=state.to_json())
    log = [StoredEvent.of(1, Start(str(turn.conversation_id), str(turn.message_id), turn.title))]
    assert await store.finish_turn(turn.conversation_id, turn.message_id, outcome, log, retry_seconds=1)
    return turn, ask


async def test_a_paused_turn_resumes_once_with_its_answers_stored(db):
    store = await alive_store(db)
    turn, ask = await paused_turn(store)
    paused = await store.paused_turn(USER, turn.conversation_id)
    assert paused.message_id == turn.message_id and paused.last_event_id == 1
    assert PausedState.of(paused.run_state).start_agent == "Task assistant"
    parts = [answered(part, Approved(ask.id)) for part in paused.parts]
    await store.resume_turn(paused, parts)
    stored = await message(db, turn.message_id)
    assert stored.status == MessageStatus.IN_PROGRESS and stored.parts[1]["decision"] == "approved"
    with pytest.raises(ConflictError) as twice:
        await store.resume_turn(paused, parts)
    assert twice.value.code == "run_in_progress"
    await store.release(turn.conversation_id, turn.message_id)
    with pytest.raises(ConflictError) as answered_twice:
        await store.resume_turn(paused, parts)
    assert answered_twice.value.code == "already_answered"


async def test_a_new_message_cancels_what_a_paused_turn_waits_for(db):
    store = await alive_store(db)
    turn, _ask = await paused_turn(store)
    await begun(store, "never mind", turn.conversation_id)
    stored = await message(db, turn.message_id)
    assert stored.status == MessageStatus.CANCELLED and stored.run_state is None
    assert stored.parts == [{"type": "text", "text": "Sure."}, {**part_of(_ask), "decision": "cancelled"}]
    with pytest.raises(ConflictError) as nothing:
        await store.paused_turn(USER, turn.conversation_id)
    assert nothing.value.code == "nothing_pending"


# --- the event log -------------------------------------------------------------------------------------------------


async def test_the_log_is_read_after_an_id_and_pruned_only_once_finished(db):
    store = await alive_store(db)
    running, done = await begun(store, "one"), await begun(store, "two")
    events = [StoredEvent(i, "text", f'{{"type":"text","content":"{i}"}}') for i in (1, 2, 3)]
    await store.append_events({running.message_id: events, done.message_id: events[:1]})
    assert [e.id for e in await store.read_events(running.message_id, 1)] == [2, 3]
    await store.finish_turn(
        done.conversation_id, done.message_id, Outcome(MessageStatus.COMPLETE, Reply()), [], retry_seconds=1
    )
    assert await store.prune_events(timedelta(seconds=-1)) == 1  # the finished turn's one event
    assert len(await store.read_events(running.message_id, 0)) == 3
    await store.append_events({uuid.uuid4(): events[:1]})  # a deleted turn's events are dropped, not an error


# --- takeover and stopping -----------------------------------------------------------------------------------------


async def test_a_turn_whose_process_stopped_beating_is_taken_over(db):
    dead, alive = make_store(db), make_store(db)
    await dead.heartbeat()
    turn = await begun(dead)
    start = Start(str(turn.conversation_id), str(turn.message_id), turn.title)
    await dead.append_events({turn.message_id: [StoredEvent.of(1, start), StoredEvent.of(2, Text("so far"))]})
    await alive.heartbeat()
    assert await alive.recover_stale() == 0  # its owner still beats
    await stop_beating(db, dead)
    assert await alive.recover_stale() == 1
    stored = await message(db, turn.message_id)
    assert (stored.status, stored.content) == (MessageStatus.INTERRUPTED, "so far")
    assert await lock_of(db, turn.conversation_id) is None
    assert [e.type for e in await alive.read_events(turn.message_id, 2)] == ["error", "done"]


async def test_a_stop_request_reaches_the_owner(db):
    store = await alive_store(db)
    turn = await begun(store)
    assert await store.cancel_requests() == []
    assert await store.request_stop(USER, turn.conversation_id) == turn.message_id
    assert await store.cancel_requests() == [turn.message_id]
    assert await make_store(db).cancel_requests() == []  # another process owns nothing here
    await store.release(turn.conversation_id, turn.message_id)
    assert await store.request_stop(USER, turn.conversation_id) is None


# --- widget actions and REST's rows ----------------------------------------------------------------------------------


async def test_a_widget_action_replaces_every_stored_copy_and_adds_its_reply(db):
    store = await alive_store(db)
    turn = await begun(store)
    widget = {"type": "widget", "id": "tasks", "widget": {"type": "card", "children": []}}
    outcome = Outcome(MessageStatus.COMPLETE, Reply([widget]))
    await store.finish_turn(turn.conversation_id, turn.message_id, outcome, [], retry_seconds=1)
    new = {"type": "card", "children": [{"type": "text", "value": "x"}]}
    async with store.action(USER, turn.conversation_id) as action:
        reply_id = await action.record({"tasks": new}, "Toggled.")
    assert (await message(db, turn.message_id)).parts == [{**widget, "widget": new}]
    assert reply_id is not None and (await message(db, reply_id)).content == "Toggled."
    async with store.action(USER, turn.conversation_id) as action:
        assert await action.record({}, None) is None
    with pytest.raises(NotFoundError):
        async with store.action("mallory", turn.conversation_id):
            pass


async def test_rest_renames_and_deletes_only_the_owners_conversation(db):
    store, rows = await alive_store(db), ConversationRows(db)
    turn = await begun(store)
    with pytest.raises(NotFoundError):
        await rows.update_conversation("mallory", turn.conversation_id, title="mine now")
    assert (await rows.update_conversation(USER, turn.conversation_id, title="Plans")).title == "Plans"
    with pytest.raises(NotFoundError):
        await rows.delete_conversation("mallory", turn.conversation_id)
    await rows.delete_conversation(USER, turn.conversation_id)
    with pytest.raises(NotFoundError):
        await rows.delete_conversation(USER, turn.conversation_id)
    async with db.sessions() as session:
        assert await session.get(Message, turn.message_id) is None  # the messages went with it


async def test_a_resumed_turn_taken_over_before_it_logged_anything_keeps_its_parts_once(db):
    # A process that dies right after resuming a paused turn may not have logged the new segment's `start` yet: the
    # log then ends with the paused segment's `done`, whose events the stored parts already hold.
    dead, alive = make_store(db), make_store(db)
    await dead.heartbeat()
    turn = await begun(dead, "delete milk")
    ask = ApprovalRequest("call_1", "delete_task", {"task": "milk"})
    reply = Reply()
    segment = [Start(str(turn.conversation_id), str(turn.message_id), turn.title), Text("Sure."), ask]
    for event in segment[1:]:
        reply.add(event)
    state = PausedState("Task assistant", {"$schemaVersion": "1.21"})
    end = Done(str(turn.conversation_id), str(turn.message_id), "approval_required", Usage())
    log = [StoredEvent.of(n + 1, event) for n, event in enumerate([*segment, end])]
    outcome = Outcome(MessageStatus.REQUIRES_ACTION, reply, run_state=state.to_json())
    assert await dead.finish_turn(turn.conversation_id, turn.message_id, outcome, log, retry_seconds=1) == "saved"
    paused = await dead.paused_turn(USER, turn.conversation_id)
    await dead.resume_turn(paused, [answered(part, Approved(ask.id)) for part in paused.parts])

    await alive.heartbeat()
    await stop_beating(db, dead)
    assert await alive.recover_stale() == 1
    stored = await message(db, turn.message_id)
    assert stored.status == MessageStatus.INTERRUPTED
    assert stored.content == "Sure."
    assert stored.parts == [{"type": "text", "text": "Sure."}, answered(part_of(ask), Approved(ask.id))]
