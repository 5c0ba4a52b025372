"""The turn's own rows: begin a turn under its conversation's run lock, pause and resume it, finish or abandon it.

A turn goes through three steps, each its own transaction:
1. `begin_turn`: create or lock the conversation, append the user message and an assistant message `in_progress`.
2. its events, appended in batches by the hub (`backend.chat.store.event_log`, never one statement per token);
3. `finish_turn`: the outcome, once, from whichever path ends the turn, with the lock's release in the same
   transaction (on PostgreSQL the whole save is one statement); only when the save fails is the lock released in a
   statement (and transaction) of its own.

On PostgreSQL a new conversation's first turn begins with two statements and ends with one (`_NEW_CONVERSATION`,
`_FINISH`): each round trip costs this process about half a millisecond of CPU (`tests/bench/turn_store.py`).

A paused turn (`requires_action`) holds no lock; `resume_turn` takes it again. Turns whose process died are taken over
by `backend.chat.store.takeover`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    Insert,
    ScalarSelect,
    Select,
    bindparam,
    case,
    column,
    exists,
    false,
    func,
    insert,
    or_,
    update,
)
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.chat.events import Usage
from backend.chat.pause import Part, cancelled
from backend.chat.reply import Reply
from backend.chat.store.event_log import EventLog, log_cte, log_params, notify_changed
from backend.chat.store.lock import RUNNING_TURNS, RunLock, release_cte, released
from backend.chat.store.rows import (
    UNSAVED,
    BegunTurn,
    ExistingTurn,
    Outcome,
    PausedTurn,
    Saved,
    StoredEvent,
    TurnInfo,
    TurnLostError,
    TurnRequest,
    retrying,
)
from backend.chat.store.takeover import Takeover
from backend.conversations import tree
from backend.conversations.service import CONVERSATION_NOT_FOUND, MESSAGE_NOT_FOUND, get_conversation
from backend.db import Database, advisory_lock, json_recordset, recordset_json, serialize_on, table_of
from backend.errors import ConflictError, InvalidInputError, NotFoundError, RateLimitedError
from backend.files import service as file_service
from backend.files.models import MessageFile
from backend.files.service import StoredFile
from backend.models import (
    ClientMessageId,
    Conversation,
    Message,
    MessageRole,
    MessageStatus,
    TurnEvent,
    utcnow,
)
from backend.storable import storable_json, storable_text
from backend.usage.models import UsageRecord
from backend.usage.records import ledger_ctes, ledger_params, write_ledger

log = logging.getLogger(__name__)

TURN_RETRY_AFTER_SECONDS = 5
"""The `Retry-After` of a turn refused for `MAX_TURNS_PER_USER`: about how long a short reply runs."""

TITLE_CHARS = 50


UNTITLED = "New conversation"


def make_title(message: str) -> str:
    """A conversation title from its first message: one line, about 50 characters, cut at a word boundary."""
    flat = " ".join(message.split())
    if not flat:
        return UNTITLED  # attachments without text
    if len(flat) <= TITLE_CHARS:
        return flat
    cut = flat[:TITLE_CHARS].rsplit(" ", 1)[0] if " " in flat[:TITLE_CHARS] else flat[:TITLE_CHARS]
    return cut.rstrip(" ,.;:-") + "…"


_MESSAGES_INSERT = insert(Message)


def _message_row(
    message_id: uuid.UUID,
    conversation_id: uuid.UUID,
    seq: int,
    role: MessageRole,
    content: str,
    now: datetime,
    parent_id: uuid.UUID | None,
) -> dict[str, object]:
    """A new message's row for a Core INSERT: a user message is complete, an assistant message `in_progress`."""
    status = MessageStatus.COMPLETE if role == MessageRole.USER else MessageStatus.IN_PROGRESS
    return {
        "id": message_id,
        "conversation_id": conversation_id,
        "seq": seq,
        "parent_id": parent_id,
        "role": role,
        "content": content,
        "tool_calls": [],
        "parts": [],
        "status": status,
        "created_at": now,
    }


def _outcome_values(outcome: Outcome) -> dict[str, object]:
    """The columns of an assistant message that an outcome sets."""
    reply = outcome.reply
    return {
        "status": outcome.status,
        "content": reply.text,
        "parts": reply.parts(),
        "tool_calls": reply.tool_calls(),
        "agent": reply.agent,
        "error_code": outcome.error_code,
        "usage": _usage_json(outcome.usage),
        "items": outcome.items,
        "run_state": outcome.run_state,
    }


def _usage_json(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def _finish_statement() -> Select[uuid.UUID, None]:
    """PostgreSQL: the whole final save as one statement, in autocommit (no BEGIN and COMMIT round trips).

    The reply's UPDATE comes first (it returns a row only while the message is `in_progress`); the ledger, the last
    events and the lock's release are written only if it did, and every process is notified of the events. What
    `_write_outcome` does on SQLite in one transaction of several statements. A data-modifying WITH runs to
    completion whatever the outer query reads; all of it commits or none. No parameter is named after a column of
    `messages` but the reply's own values: SQLAlchemy would add it to the UPDATE's SET.
    """
    messages = table_of(Message)
    reply = (
        update(messages)
        .where(messages.c.id == bindparam("message_id"), messages.c.status == MessageStatus.IN_PROGRESS)
        .values({name: bindparam(name) for name in _OUTCOME_COLUMNS})
        .returning(messages.c.id)
        .cte("reply")
    )
    written = [*ledger_ctes(reply), log_cte(reply), release_cte(reply)]
    return sa_select(reply.c.id, notify_changed()).add_cte(*written)


def _new_conversation_statement() -> Select[int]:
    """PostgreSQL: a new conversation and its first two messages, if its user runs fewer than `:max_running` turns.

    One statement after the per-user lock's (a statement of its own, so that this one's snapshot sees every turn
    that committed while it waited): the count of the user's running turns, the conversation with its lock taken by
    the reply, and the messages (as the JSON parameter `messages`), written only if the count is under the limit. It
    returns the count.
    """
    conversations = table_of(Conversation)
    messages = table_of(Message)
    running = RUNNING_TURNS.cte("running")
    count = next(iter(running.c))
    values = [bindparam(f"new_{name}", type_=conversations.c[name].type) for name in _NEW_CONVERSATION_COLUMNS]
    conversation = (
        insert(conversations)
        .from_select(
            list(_NEW_CONVERSATION_COLUMNS),
            sa_select(*values).where(count < bindparam("max_running")),
            include_defaults=False,  # a statement inside a WITH gets no Python-side defaults: every column is given
        )
        .returning(conversations.c.id)
        .cte("conversation")
    )
    rows = json_recordset("messages", "m", [column(name, messages.c[name].type) for name in _NEW_MESSAGE_COLUMNS])
    added = insert(messages).from_select(
        list(_NEW_MESSAGE_COLUMNS), sa_select(*rows.c).where(exists(conversation.select()))
    )
    return sa_select(count).add_cte(conversation, added.cte("added"))


_NEW_CONVERSATION_COLUMNS = (
    "id",
    "user_id",
    "title",
    "created_at",
    "updated_at",
    "active_leaf_id",
    "run_id",
    "run_owner",
    "run_expires_at",
    "run_cancel_requested",
    "archived",
    "title_source",
)
_NEW_MESSAGE_COLUMNS = (
    "id",
    "conversation_id",
    "seq",
    "parent_id",
    "role",
    "content",
    "tool_calls",
    "parts",
    "status",
    "created_at",
)
_TITLE_SOURCE: str = Conversation.model_fields["title_source"].default  # a title from the first message
_NEW_CONVERSATION = _new_conversation_statement()
_OUTCOME_COLUMNS = tuple(_outcome_values(Outcome(MessageStatus.COMPLETE, Reply())))  # what every outcome sets
_FINISH = _finish_statement()


_NO_LIMIT = 2**31 - 1


def _running_turns_refusal(running: int, limit: int, now: datetime) -> RateLimitedError:
    """The 429 of a turn refused for `MAX_TURNS_PER_USER`."""
    return RateLimitedError(
        f"You already have {running} replies running; wait for one to finish.",
        retry_after_seconds=TURN_RETRY_AFTER_SECONDS,
        details={
            "limit_name": "max_turns_per_user",
            "limit": limit,
            "usage": running,
            "reset_at": (now + timedelta(seconds=TURN_RETRY_AFTER_SECONDS)).isoformat(),
        },
    )


def _client_message_id(
    request: TurnRequest, user_message_id: uuid.UUID, message_id: uuid.UUID, now: datetime
) -> Insert:
    """The row that makes a repeat of the request (same `client_message_id`) find this turn."""
    return insert(ClientMessageId).values(
        user_id=request.user_id,
        client_message_id=request.client_message_id,
        user_message_id=user_message_id,
        assistant_message_id=message_id,
        created_at=now,
    )


BRANCH_RETRIES = 5
"""How often a new turn re-reads a conversation whose active branch moved under it (no run held it)."""


def running_turns_key(user_id: str) -> str:
    """What a new turn serialises on while it counts its user's running turns (`serialize_on`)."""
    return f"turns:{user_id}"


class _BranchMovedError(Exception):
    """The conversation's active leaf changed between reading it and locking it, and no run holds it."""


class TurnRows:
    """The rows of turns: their conversation's lock, their messages, their pauses and their outcomes."""

    def __init__(
        self,
        database: Database,
        lock: RunLock,
        events: EventLog,
        takeover: Takeover,
        *,
        history_max_items: int,
    ) -> None:
        """Write turns to `database` under `lock`, logging their last events in `events`.

        Args:
            database: Where conversations live.
            lock: This process's run lock.
            events: The event log (a turn's last events go in the transaction of its outcome).
            takeover: Closes a stale turn found when a new one begins.
            history_max_items: How many recent messages to load as model input.
        """
        self.database = database
        self.lock = lock
        self.events = events
        self.takeover = takeover
        self.history_max_items = history_max_items

    async def release(self, conversation_id: uuid.UUID, message_id: uuid.UUID) -> None:
        """Free the lock if this turn still holds it (its own transaction)."""
        async with self.database.engine.begin() as conn:
            await conn.execute(released(conversation_id, message_id))

    # --- beginning a turn ----------------------------------------------------------------------------------------

    async def begin_turn(self, request: TurnRequest) -> BegunTurn | ExistingTurn:
        """Lock (or create) the conversation and record the user message and the `in_progress` reply, atomically.

        Raises:
            NotFoundError: The conversation does not exist or is not the caller's.
            ConflictError: A run is in progress (`run_in_progress`), or the `client_message_id` was already used
                with another message (`idempotency_conflict`).
        """
        if request.client_message_id is not None:
            existing = await self._existing(request)
            if existing is not None:
                return existing
        try:
            for _ in range(BRANCH_RETRIES):
                try:
                    return await self._begin(request)
                except _BranchMovedError:
                    continue  # read the conversation again and follow its branch as it is now
            raise ConflictError("The conversation kept changing; try again.", code="run_in_progress")
        except IntegrityError:
            if request.create_missing:  # two first messages to one new chat id: the other one created it
                raise ConflictError(
                    "A reply is already being generated in this conversation.", code="run_in_progress"
                ) from None
            if request.client_message_id is None:
                raise
            existing = await self._existing(request)  # a concurrent repeat won the race
            if existing is None:
                raise
            return existing

    async def _existing(self, request: TurnRequest) -> ExistingTurn | None:
        async with self.database.sessions() as session:
            row = (
                await session.exec(
                    select(ClientMessageId, Message.content, Message.conversation_id)
                    .join(Message, col(Message.id) == col(ClientMessageId.user_message_id))
                    .where(
                        col(ClientMessageId.user_id) == request.user_id,
                        col(ClientMessageId.client_message_id) == request.client_message_id,
                    )
                )
            ).first()
        if row is None:
            return None
        key, content, conversation_id = row
        if request.regenerate is not None:
            same = request.conversation_id == conversation_id and await self._answers(key, request.regenerate)
        else:
            same = content == storable_text(request.message) and (
                request.conversation_id is None or request.conversation_id == conversation_id
            )
        if not same:
            raise ConflictError(
                "This client_message_id was already used for a different message.", code="idempotency_conflict"
            )
        return ExistingTurn(conversation_id=conversation_id, message_id=key.assistant_message_id)

    async def _answers(self, key: ClientMessageId, regenerate: uuid.UUID) -> bool:
        """Whether a regeneration of `regenerate` is the one that key started (it answered the same user message)."""
        if regenerate.int == 0 or regenerate in (key.user_message_id, key.assistant_message_id):
            return True
        async with self.database.sessions() as session:
            parent = (await session.exec(select(Message.parent_id).where(col(Message.id) == regenerate))).first()
        return parent == key.user_message_id

    async def _check_running_turns(
        self, session: AsyncSession, request: TurnRequest, now: datetime, *, serialized: bool
    ) -> None:
        """Refuse a turn while the user has `request.max_running` turns running (in any process).

        The count and the lock the caller then takes are one step per user: the transaction is serialised on the
        user (`serialize_on`, unless the admission already did it in its own statement), so concurrent requests see
        each other's turns.

        Raises:
            RateLimitedError: 429 `rate_limited`, with a `Retry-After`.
        """
        if not serialized:
            await serialize_on(session, running_turns_key(request.user_id))
        conn = await session.connection()
        running = (await conn.execute(RUNNING_TURNS, self.lock.running_params(request.user_id, now))).scalar_one()
        if running >= request.max_running:
            raise _running_turns_refusal(running, request.max_running, now)

    async def _begin(self, request: TurnRequest) -> BegunTurn:
        if (
            self.events.is_postgres
            and request.conversation_id is None
            and request.edit_of is None
            and request.regenerate is None
            and not request.attachments
        ):
            return await self._begin_new(request)
        now = utcnow()
        message_id, user_message_id = uuid.uuid4(), uuid.uuid4()
        history: list[Message] = []
        files: dict[uuid.UUID, list[StoredFile]] = {}
        parent_id: uuid.UUID | None = None
        async with self.database.sessions() as session:
            try:
                conn = await session.connection()  # Core statements in the session's transaction
                serialized = False
                if request.admission is not None:
                    key = running_turns_key(request.user_id) if request.max_running else None
                    serialized = await request.admission.admit(conn, key)
                attached = await file_service.resolve_attachments(session, request.user_id, request.attachments)
                if request.max_running:
                    await self._check_running_turns(session, request, now, serialized=serialized)
                created = request.conversation_id is None or (
                    request.create_missing and await session.get(Conversation, request.conversation_id) is None
                )
                if created and (request.edit_of is not None or request.regenerate is not None):
                    raise NotFoundError(MESSAGE_NOT_FOUND)  # a new conversation has no message to edit or answer
                if created:
                    conversation_id, title = request.conversation_id or uuid.uuid4(), make_title(request.message)
                    await conn.execute(
                        insert(Conversation).values(
                            id=conversation_id,
                            user_id=request.user_id,
                            title=title,
                            created_at=now,
                            active_leaf_id=message_id,
                            **self.lock.taken(message_id, now),
                        )
                    )
                    seq = 1
                else:
                    assert request.conversation_id is not None
                    conversation = await get_conversation(session, request.user_id, request.conversation_id)
                    conversation_id, title = conversation.id, conversation.title
                    prior_run, leaf = conversation.run_id, conversation.active_leaf_id
                    locked = await session.exec(
                        update(Conversation)
                        .where(
                            col(Conversation.id) == conversation.id,
                            col(Conversation.user_id) == request.user_id,
                            self.lock.is_free(now),
                            # the branch read above is still the active one (a switch or a turn did not just move it)
                            col(Conversation.active_leaf_id).is_not_distinct_from(leaf),
                        )
                        .values(**self.lock.taken(message_id, now), active_leaf_id=message_id)
                        .execution_options(synchronize_session=False)
                    )
                    if locked.rowcount != 1:
                        free = await session.exec(
                            select(func.count())
                            .select_from(Conversation)
                            .where(col(Conversation.id) == conversation.id, self.lock.is_free(now))
                        )
                        if free.one():  # not a run: the branch moved (a widget action's reply, a switch)
                            raise _BranchMovedError
                        raise ConflictError(
                            "A reply is already being generated in this conversation.", code="run_in_progress"
                        )
                    if prior_run is not None:
                        await self.takeover.interrupt(session, prior_run)
                    if leaf is None:  # written without the tree: make it one branch first
                        await conn.execute(tree.chain_in_order(conversation_id))
                    base = await self._base(session, conversation_id, leaf, request)
                    history, files, pending, seq = await self._history(session, conversation_id, base)
                    await self._cancel_pending_actions(session, pending)
                    parent_id = history[-1].id if history else None
                if request.regenerate is not None:
                    user_message = history.pop()  # the user message to answer again: the new reply is its child
                    user_message_id = user_message.id
                    reply_row = _message_row(
                        message_id, conversation_id, seq, MessageRole.ASSISTANT, "", now, parent_id=user_message_id
                    )
                    await conn.execute(_MESSAGES_INSERT, [reply_row])
                else:
                    user_row = _message_row(
                        user_message_id, conversation_id, seq, MessageRole.USER, request.message, now, parent_id
                    )
                    reply_row = _message_row(
                        message_id, conversation_id, seq + 1, MessageRole.ASSISTANT, "", now, user_message_id
                    )
                    # Core INSERTs in order (no unit of work to sort out): the messages, then what references them.
                    await conn.execute(_MESSAGES_INSERT, [user_row, reply_row])
                    user_message = Message.model_validate(user_row)  # model input only, not added to the session
                if attached:
                    await file_service.attach(session, user_message_id, attached)
                    files[user_message_id] = attached
                if request.client_message_id is not None:
                    await conn.execute(_client_message_id(request, user_message_id, message_id, now))
                await session.commit()
            except BaseException:
                await session.rollback()
                raise
            return BegunTurn(
                user_id=request.user_id,
                conversation_id=conversation_id,
                title=title,
                user_message_id=user_message_id,
                message_id=message_id,
                history=[*history, user_message],
                created=created,
                files=files,
            )

    async def _begin_new(self, request: TurnRequest) -> BegunTurn:
        """`_begin` of a new conversation without attachments, on PostgreSQL: Core statements, no ORM session.

        The admission (if any) and the per-user lock, then `_NEW_CONVERSATION` (the count of running turns and the
        three rows), then the idempotency key if there is one; one transaction.

        Raises:
            RateLimitedError: The user already runs `request.max_running` turns.
        """
        now = utcnow()
        conversation_id, message_id, user_message_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        title = make_title(request.message)
        user_row = _message_row(user_message_id, conversation_id, 1, MessageRole.USER, request.message, now, None)
        reply_row = _message_row(message_id, conversation_id, 2, MessageRole.ASSISTANT, "", now, user_message_id)
        taken = self.lock.taken(message_id, now)
        params: dict[str, object] = {
            **{f"new_{name}": value for name, value in taken.items()},
            "new_id": conversation_id,
            "new_user_id": request.user_id,
            "new_title": title,
            "new_created_at": now,
            "new_active_leaf_id": message_id,
            "new_archived": False,
            "new_title_source": _TITLE_SOURCE,
            "messages": recordset_json([storable_json(user_row), reply_row]),
            "max_running": request.max_running or _NO_LIMIT,
            **self.lock.running_params(request.user_id, now),
        }
        async with self.database.engine.begin() as conn:
            serialized = False
            key = running_turns_key(request.user_id) if request.max_running else None
            if request.admission is not None:
                serialized = await request.admission.admit(conn, key)
            if key is not None and not serialized:
                await conn.execute(sa_select(advisory_lock(key)))
            running = (await conn.execute(_NEW_CONVERSATION, params)).scalar_one()
            if request.max_running and running >= request.max_running:
                raise _running_turns_refusal(running, request.max_running, now)
            if request.client_message_id is not None:
                await conn.execute(_client_message_id(request, user_message_id, message_id, now))
        return BegunTurn(
            user_id=request.user_id,
            conversation_id=conversation_id,
            title=title,
            user_message_id=user_message_id,
            message_id=message_id,
            history=[Message.model_validate(user_row)],
            created=True,
        )

    async def _base(
        self, session: AsyncSession, conversation_id: uuid.UUID, leaf: uuid.UUID | None, request: TurnRequest
    ) -> uuid.UUID | ScalarSelect[uuid.UUID] | None:
        """The message the new one follows: the end of the path the model is given (None: the path is empty).

        A new message follows the active leaf; an edit follows the edited message's parent (the new version is its
        sibling); a regeneration ends at the user message it answers again (the new reply is a sibling of its old
        replies). `message_id` of a regeneration may name that user message or one of its replies; the nil UUID
        names the active leaf.

        Raises:
            NotFoundError: The message to edit or regenerate is not in this conversation (or not a user message, for
                an edit).
            InvalidInputError: The reply to regenerate answers no user message (a widget action's reply).
        """
        current = leaf if leaf is not None else tree.last_message(conversation_id)
        if request.edit_of is not None:
            edited = (
                await session.exec(
                    select(Message.id, Message.parent_id).where(
                        col(Message.id) == request.edit_of,
                        col(Message.conversation_id) == conversation_id,
                        col(Message.role) == MessageRole.USER,
                    )
                )
            ).first()
            if edited is None:
                raise NotFoundError(MESSAGE_NOT_FOUND)
            return edited[1]
        if request.regenerate is None:
            return current
        target = current if request.regenerate.int == 0 else request.regenerate
        parent = aliased(Message)
        row = (
            await session.exec(
                select(Message.id, Message.role, parent.id, parent.role)
                .outerjoin(parent, col(parent.id) == col(Message.parent_id))
                .where(col(Message.id) == target, col(Message.conversation_id) == conversation_id)
            )
        ).first()
        if row is None:
            raise NotFoundError(MESSAGE_NOT_FOUND)
        message_id, role, parent_id, parent_role = row
        if role == MessageRole.USER:
            return message_id
        if parent_id is None or parent_role != MessageRole.USER:
            raise InvalidInputError("message_id: this reply answers no user message, so it cannot be regenerated")
        return parent_id

    async def _history(
        self, session: AsyncSession, conversation_id: uuid.UUID, base: uuid.UUID | ScalarSelect[uuid.UUID] | None
    ) -> tuple[list[Message], dict[uuid.UUID, list[StoredFile]], list[Message], int]:
        """The path ending at `base` (its latest messages, oldest first) and their attachments, in one query.

        The same query returns the conversation's replies that wait for the user, on any branch (a new message
        cancels them), and the conversation's highest `seq`. Whether a message has attachments comes with it (an
        EXISTS on the link table's primary key), so a conversation without any costs no extra query.

        Returns:
            The path, its attachments by message id, the replies that wait, and the `seq` of the next message.
        """
        has_files = exists().where(col(MessageFile.message_id) == col(Message.id))
        last_seq = select(func.max(Message.seq)).where(col(Message.conversation_id) == conversation_id)
        if base is None:
            on_path: ColumnElement[bool] = false()
        else:
            on_path = tree.on_path(tree.path_to(base, depth=self.history_max_items))
        rows = (
            await session.exec(
                select(Message, has_files, on_path, last_seq.scalar_subquery())
                .where(
                    col(Message.conversation_id) == conversation_id,
                    or_(on_path, col(Message.status) == MessageStatus.REQUIRES_ACTION),
                )
                .order_by(col(Message.seq))
            )
        ).all()
        top = rows[0][3] if rows else (await session.exec(last_seq)).first()
        history = [message for message, _, shown, _ in rows if shown]
        pending = [message for message, _, _, _ in rows if message.status == MessageStatus.REQUIRES_ACTION]
        with_files = [message.id for message, flagged, shown, _ in rows if flagged and shown]
        if not with_files:
            return history, {}, pending, (top or 0) + 1
        by_message = await file_service.files_of_messages(session, with_files)
        files = {message_id: by_message[message_id] for message_id in with_files if message_id in by_message}
        return history, files, pending, (top or 0) + 1

    async def _cancel_pending_actions(self, session: AsyncSession, pending: Sequence[Message]) -> None:
        """A new message cancels the approvals and client tools a paused reply still waits for, on any branch."""
        for message in pending:
            parts = cancelled(message.parts)
            await session.exec(
                update(Message)
                .where(col(Message.id) == message.id)
                .values(status=MessageStatus.CANCELLED, parts=parts, run_state=None)
            )
            message.status, message.parts, message.run_state = MessageStatus.CANCELLED, parts, None

    # --- resuming a paused turn ---------------------------------------------------------------------------------

    async def paused_turn(self, user_id: str, conversation_id: uuid.UUID) -> PausedTurn:
        """The conversation's reply that waits for approvals or client-tool results.

        Found by its status, not its place: it is the last message unless an action landed while its turn still ran.

        Raises:
            NotFoundError: The conversation does not exist or is not the caller's.
            ConflictError: Nothing waits for an answer (`nothing_pending`).
        """
        async with self.database.sessions() as session:
            conversation = await get_conversation(session, user_id, conversation_id)
            message = (
                await session.exec(
                    select(Message)
                    .where(
                        Message.conversation_id == conversation_id,
                        Message.role == MessageRole.ASSISTANT,
                        Message.status == MessageStatus.REQUIRES_ACTION,
                    )
                    .order_by(col(Message.seq).desc())
                    .limit(1)
                )
            ).first()
            if message is None or not message.run_state:
                raise ConflictError("Nothing in this conversation waits for an answer.", code="nothing_pending")
            last_event = (
                await session.exec(
                    select(TurnEvent.id)
                    .where(col(TurnEvent.message_id) == message.id)
                    .order_by(col(TurnEvent.id).desc())
                    .limit(1)
                )
            ).first()
            return PausedTurn(
                user_id=user_id,
                conversation_id=conversation_id,
                message_id=message.id,
                title=conversation.title,
                parts=list(message.parts),
                agent=message.agent,
                run_state=dict(message.run_state),
                last_event_id=last_event or 0,
            )

    async def resume_turn(self, paused: PausedTurn, parts: list[Part]) -> None:
        """Take the run lock for a paused reply and mark it `in_progress` again with its answered parts, atomically.

        The parts carry the user's decisions from now on, so a takeover of the resumed run (its process died) keeps
        them.

        Raises:
            ConflictError: Another run holds the conversation (`run_in_progress`), or another request answered first
                (`already_answered`).
        """
        now = utcnow()
        async with self.database.sessions() as session:
            try:
                locked = await session.exec(
                    update(Conversation)
                    .where(col(Conversation.id) == paused.conversation_id, self.lock.is_free(now))
                    .values(
                        **self.lock.taken(paused.message_id, now),
                        # answering a reply on another branch makes its branch the active one again
                        active_leaf_id=case(
                            (col(Conversation.active_leaf_id).is_(None), None), else_=paused.message_id
                        ),
                    )
                    .execution_options(synchronize_session=False)
                )
                if locked.rowcount != 1:
                    raise ConflictError(
                        "A reply is already being generated in this conversation.", code="run_in_progress"
                    )
                flipped = await session.exec(
                    update(Message)
                    .where(col(Message.id) == paused.message_id, col(Message.status) == MessageStatus.REQUIRES_ACTION)
                    .values(status=MessageStatus.IN_PROGRESS, parts=parts)
                )
                if flipped.rowcount != 1:
                    raise ConflictError("These answers were already given.", code="already_answered")
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    # --- ending a turn -------------------------------------------------------------------------------------------

    async def finish_turn(
        self,
        conversation_id: uuid.UUID,
        message_id: uuid.UUID,
        outcome: Outcome,
        events: Sequence[StoredEvent],
        *,
        retry_seconds: float,
    ) -> Saved:
        """Write a turn's outcome and its last events once, then release its lock, whatever happens to the save.

        Idempotent: only a message still `in_progress` is written, so a second call (from another path) is a no-op.
        Transient database failures are retried with backoff for up to `retry_seconds` while the reply waits in
        memory.

        Returns:
            `saved` (or the conversation was deleted meanwhile: nothing to keep); `lost` if the turn is no longer this
            process's (another process took it over: nothing was written); `unsaved` if the outcome could not be
            stored (the caller tells the user and closes the message with `close_unsaved`).
        """
        result: Saved = "unsaved"
        try:
            await retrying(
                lambda: self._write_outcome(conversation_id, message_id, outcome, events),
                retry_seconds,
                "save the reply",
            )
            result = "saved"  # the release is the last statement of the same transaction
        except TurnLostError:
            await self.keep_usage(outcome.ledger)  # the calls were made (and paid for) whoever stores the message
            if not await self._conversation_exists(conversation_id):
                log.info("conversation %s was deleted during its run; the reply was dropped", conversation_id)
                return "saved"
            log.warning("turn %s was taken over by another process; its outcome was not stored", message_id)
            return "lost"
        except IntegrityError as error:
            if not await self._conversation_exists(conversation_id):
                log.info("conversation %s was deleted during its run; the reply was dropped", conversation_id)
                return "saved"
            log.error("could not save the reply of conversation %s: %s", conversation_id, type(error).__name__)
        except Exception as error:
            log.error("could not save the reply of conversation %s: %s", conversation_id, type(error).__name__)
        finally:
            if result != "saved":  # whatever happened to the save, in a statement (and transaction) of its own
                try:
                    await retrying(lambda: self.release(conversation_id, message_id), 2.0, "release the run lock")
                except Exception as error:
                    log.warning("could not release the run lock of %s: %s", conversation_id, type(error).__name__)
        return result

    async def _conversation_exists(self, conversation_id: uuid.UUID) -> bool:
        """Whether the conversation is still there (True when that cannot be read: assume it is)."""
        try:
            async with self.database.sessions() as session:
                found = await session.exec(select(Conversation.id).where(col(Conversation.id) == conversation_id))
                return found.first() is not None
        except Exception:
            return True

    async def _write_outcome(
        self, conversation_id: uuid.UUID, message_id: uuid.UUID, outcome: Outcome, events: Sequence[StoredEvent]
    ) -> None:
        """The final save, in one transaction: the message first, then its last events, then the lock's release.

        A takeover interrupts the message in the transaction that takes the lock, so a message no longer `in_progress`
        means the turn is not this process's any more (nothing is written); on PostgreSQL the UPDATE waits for a
        takeover that is committing and then sees its result.

        Raises:
            TurnLostError: The message is no longer `in_progress` (taken over, or deleted with its conversation).
        """
        if self.events.is_postgres:
            await self._write_outcome_at_once(conversation_id, message_id, outcome, events)
            return
        async with self.database.engine.begin() as conn:  # Core: no unit of work on the hot path
            written = await conn.execute(
                update(Message)
                .where(col(Message.id) == message_id, col(Message.status) == MessageStatus.IN_PROGRESS)
                .values(**_outcome_values(outcome))
            )
            if written.rowcount != 1:
                raise TurnLostError(message_id)
            if outcome.ledger:
                await write_ledger(conn, outcome.ledger)
            if events:
                await self.events.write(conn, {message_id: list(events)})
            await conn.execute(released(conversation_id, message_id))

    async def _write_outcome_at_once(
        self, conversation_id: uuid.UUID, message_id: uuid.UUID, outcome: Outcome, events: Sequence[StoredEvent]
    ) -> None:
        """`_write_outcome` on PostgreSQL: one statement (`_FINISH`), in autocommit."""
        logged, _ = log_params({message_id: list(events)}, utcnow())  # one message id: one notification
        params = {
            **_outcome_values(outcome),
            **ledger_params(outcome.ledger),
            **logged,
            "message_id": message_id,
            "freed_conversation_id": conversation_id,
        }
        async with self.database.autocommit.connect() as conn:
            written = (await conn.execute(_FINISH, params)).first()
        if written is None:
            raise TurnLostError(message_id)

    async def keep_usage(self, ledger: Sequence[dict[str, object]]) -> None:
        """Store ledger rows outside a turn's final save: a lost turn's, or a conversation's title call.

        A turn is lost when its message is no longer this process's to write (taken over, deleted).

        Idempotent on the rows' ids, so a save whose commit was acknowledged late never counts a call twice. Best
        effort: a failure is logged (the rows are then missing from the ledger, never counted twice).
        """
        if not ledger:
            return

        async def write() -> None:
            async with self.database.engine.begin() as conn:
                ids = [row["id"] for row in ledger]
                have = set((await conn.execute(select(UsageRecord.id).where(col(UsageRecord.id).in_(ids)))).scalars())
                missing = [row for row in ledger if row["id"] not in have]
                if missing:
                    await write_ledger(conn, missing)

        try:
            await retrying(write, 5.0, "keep usage outside a turn's save")
        except Exception as error:
            log.error("could not store %d ledger rows: %s", len(ledger), type(error).__name__)

    async def close_unsaved(
        self, conversation_id: uuid.UUID, message_id: uuid.UUID, outcome: Outcome, events: Sequence[StoredEvent]
    ) -> None:
        """Close a reply whose final save failed, with the whole reply held in memory, and free its lock.

        In one transaction: the message gets the reply, the log the events its clients were sent that it does not
        hold yet, and the run lock is released. Nothing is written to a message that is no longer `in_progress`
        (another process took it over).
        """
        async with self.database.engine.begin() as conn:
            closed = await conn.execute(
                update(Message)
                .where(col(Message.id) == message_id, col(Message.status) == MessageStatus.IN_PROGRESS)
                .values(**_outcome_values(outcome))
            )
            if closed.rowcount == 1 and outcome.ledger:
                await write_ledger(conn, outcome.ledger)
            if closed.rowcount == 1 and events:
                logged = await conn.execute(
                    select(TurnEvent.id).where(
                        col(TurnEvent.message_id) == message_id, col(TurnEvent.id) >= min(e.id for e in events)
                    )
                )
                have = set(logged.scalars().all())
                await self.events.write(conn, {message_id: [e for e in events if e.id not in have]})
            await conn.execute(released(conversation_id, message_id))

    async def abandon(self, conversation_id: uuid.UUID, message_id: uuid.UUID) -> None:
        """Finish a turn whose outcome could not be saved: keep its logged text, mark it failed, free the lock."""
        async with self.database.sessions() as session:
            await self.takeover.interrupt(session, message_id, status=MessageStatus.ERROR, error=UNSAVED)
            await session.commit()
        await self.release(conversation_id, message_id)

    # --- reading turns -------------------------------------------------------------------------------------------

    async def turn_info(self, user_id: str, message_id: uuid.UUID) -> TurnInfo:
        """Where one of the user's assistant messages stands.

        Raises:
            NotFoundError: No such assistant message, or it is another user's.
        """
        async with self.database.sessions() as session:
            row = (
                await session.exec(
                    select(Message.conversation_id, Message.status, Conversation.run_id)
                    .join(Conversation, col(Conversation.id) == col(Message.conversation_id))
                    .where(
                        col(Message.id) == message_id,
                        col(Message.role) == MessageRole.ASSISTANT,
                        col(Conversation.user_id) == user_id,
                    )
                )
            ).first()
        if row is None:
            raise NotFoundError(MESSAGE_NOT_FOUND)
        conversation_id, status, run_id = row
        return TurnInfo(conversation_id, message_id, MessageStatus(status), running=run_id == message_id)

    async def running_turn(self, user_id: str, conversation_id: uuid.UUID) -> uuid.UUID | None:
        """The assistant message the conversation's turn is generating now, or None (also for no such conversation).

        Raises:
            NotFoundError: The conversation is another user's.
        """
        async with self.database.sessions() as session:
            conversation = await session.get(Conversation, conversation_id)
        if conversation is None:
            return None
        if conversation.user_id != user_id:
            raise NotFoundError(CONVERSATION_NOT_FOUND)
        return conversation.run_id

    async def message_status(self, message_id: uuid.UUID) -> MessageStatus | None:
        """The status of a message (None if it was deleted)."""
        async with self.database.sessions() as session:
            status = (await session.exec(select(Message.status).where(col(Message.id) == message_id))).first()
        return MessageStatus(status) if status is not None else None

    async def latest_reply(self, user_id: str, conversation_id: uuid.UUID) -> tuple[uuid.UUID, MessageStatus] | None:
        """The conversation's newest assistant message and its status, or None if it has none."""
        async with self.database.sessions() as session:
            await get_conversation(session, user_id, conversation_id)
            row = (
                await session.exec(
                    select(Message.id, Message.status)
                    .where(col(Message.conversation_id) == conversation_id, col(Message.role) == MessageRole.ASSISTANT)
                    .order_by(col(Message.seq).desc())
                    .limit(1)
                )
            ).first()
        return (row[0], MessageStatus(row[1])) if row is not None else None
