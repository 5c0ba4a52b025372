"""A chat turn: validate and record the user message, run the agent, stream our events, and save the reply.

The reply is saved whatever happens — normal end, provider error, client disconnect, server shutdown — in a fresh
session under a cancellation shield, and never in the per-token path.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from agents import Agent, Runner
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.chat import history, lock
from backend.chat.context import ChatContext
from backend.chat.events import DONE_FRAME, Done, Error, FinishReason, Start, Text, ToolCall, ToolResult, Usage, encode
from backend.chat.translate import StreamTranslator, classify_error
from backend.conversations import service as conversation_service
from backend.db import Database
from backend.errors import ConflictError, InvalidInputError, NotFoundError
from backend.models import Message, MessageRole, MessageStatus, utcnow
from backend.settings import Settings

log = logging.getLogger(__name__)

TITLE_CHARS = 50
SHUTDOWN_ERROR = Error("server_shutdown", "The server is restarting. Send the message again.", retryable=True)
_STATUS_BY_FINISH: dict[FinishReason, MessageStatus] = {
    "stop": MessageStatus.COMPLETE,
    "cancelled": MessageStatus.CANCELLED,
    "error": MessageStatus.ERROR,
    "max_turns": MessageStatus.ERROR,
}


def make_title(message: str) -> str:
    """A conversation title from its first message: one line, about 50 characters, cut at a word boundary."""
    flat = " ".join(message.split())
    if len(flat) <= TITLE_CHARS:
        return flat
    cut = flat[:TITLE_CHARS].rsplit(" ", 1)[0] if " " in flat[:TITLE_CHARS] else flat[:TITLE_CHARS]
    return cut.rstrip(" ,.;:-") + "…"


@dataclass(slots=True)
class Turn:
    """Everything a started turn needs to run and be saved."""

    user_id: str
    conversation_id: uuid.UUID
    title: str
    run_id: uuid.UUID
    assistant_message_id: uuid.UUID
    input_items: list[dict[str, Any]]
    settled: bool = False
    shutting_down: bool = False


@dataclass(slots=True)
class Reply:
    """What the user has been shown so far, folded from our events."""

    text_parts: list[str] = field(default_factory=list)
    tool_calls: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """All text deltas joined."""
        return "".join(self.text_parts)


class ChatService:
    """Runs chat turns for one app instance."""

    def __init__(self, database: Database, settings: Settings, agent: Agent[ChatContext]) -> None:
        """Create the service.

        Args:
            database: Where conversations, messages and the run lock live.
            settings: Limits, TTLs and turn caps.
            agent: The agent every turn runs (see `backend.chat.agent`).
        """
        self.database = database
        self.settings = settings
        self.agent = agent

    async def start_turn(self, session: AsyncSession, user_id: str, message: str, conversation_ref: str | None) -> Turn:
        """Validate the request, take the run lock and commit the user message, before any byte is streamed.

        Args:
            session: The request's session.
            user_id: The caller.
            message: The trimmed, non-empty user message.
            conversation_ref: The conversation id to continue, or None for a new conversation.

        Returns:
            The started turn, holding the conversation's run lock.

        Raises:
            InvalidInputError: The message is over the configured limit.
            NotFoundError: The conversation does not exist or is not the caller's.
            ConflictError: A run is already in progress on the conversation (`run_in_progress`).
        """
        if len(message) > self.settings.max_message_chars:
            raise InvalidInputError(f"message: must be at most {self.settings.max_message_chars} characters")
        run_id = uuid.uuid4()
        ttl = self.settings.run_lock_ttl_seconds
        created = conversation_ref is None
        try:
            if created:
                conversation = await conversation_service.create_conversation(
                    session, user_id, make_title(message), run_id=run_id, run_expires_at=utcnow() + lock.ttl_delta(ttl)
                )
            else:
                conversation = await conversation_service.get_conversation(
                    session, user_id, _parse_id(conversation_ref)
                )
                if not await lock.acquire(session, conversation.id, user_id, run_id, ttl):
                    raise ConflictError(
                        "A reply is already being generated in this conversation.", code="run_in_progress"
                    )
            await conversation_service.append_message(
                session, conversation.id, seq=1 if created else None, role=MessageRole.USER, content=message
            )
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        if created:  # its whole history is this message
            input_items = [{"role": "user", "content": message}]
        else:
            recent = await session.exec(
                select(Message)
                .where(Message.conversation_id == conversation.id)
                .order_by(col(Message.seq).desc())
                .limit(self.settings.history_max_items)
            )
            input_items = history.to_agent_input(list(reversed(recent.all())), self.settings.history_max_items)
        return Turn(
            user_id=user_id,
            conversation_id=conversation.id,
            title=conversation.title,
            run_id=run_id,
            assistant_message_id=uuid.uuid4(),
            input_items=input_items,
        )

    async def stream(self, turn: Turn, shutdown: anyio.Event | None = None) -> AsyncIterator[bytes]:
        """Run the agent and yield SSE frames: `start`, deltas and tool events, maybe `error`, `done`, `[DONE]`.

        Args:
            turn: A turn from `start_turn`.
            shutdown: Set when the server is shutting down: the run is cancelled and the stream ends cleanly.

        Yields:
            Encoded SSE frames.
        """
        reply = Reply()
        result = Runner.run_streamed(
            self.agent,
            turn.input_items,  # type: ignore[arg-type]
            context=ChatContext(user_id=turn.user_id, database=self.database),
            max_turns=self.settings.max_turns,
        )
        supervisor = asyncio.create_task(self._supervise(turn, result, shutdown or anyio.Event()))
        try:
            yield encode(Start(str(turn.conversation_id), str(turn.assistant_message_id), turn.title))
            finish: FinishReason = "stop"
            error: Error | None = None
            translator = StreamTranslator()
            try:
                async for sdk_event in result.stream_events():
                    event = translator.translate(sdk_event)
                    if event is None:
                        continue
                    _fold(reply, event)
                    yield encode(event)
            except Exception as exc:
                error = classify_error(exc)
                finish = "max_turns" if error.code == "max_turns" else "error"
            if turn.shutting_down:
                error, finish = SHUTDOWN_ERROR, "cancelled"
            usage = _usage(result)
            if not await self._save(turn, reply, finish, error, usage, result):
                error, finish = Error("internal", "The reply could not be saved.", retryable=True), "error"
            if error is not None:
                yield encode(error)
            yield encode(Done(str(turn.conversation_id), str(turn.assistant_message_id), finish, usage))
            yield DONE_FRAME
        finally:
            supervisor.cancel()
            if not result.is_complete:
                result.cancel()  # stops the run and closes the upstream model stream
            if not turn.settled:  # the client went away, or the server is shutting down
                await self._save(turn, reply, "cancelled", None, _usage(result), result)

    async def settle(self, turn: Turn) -> None:
        """Save an empty cancelled reply and free the lock if the stream never got to run (client gone at once)."""
        if not turn.settled:
            await self._save(turn, Reply(), "cancelled", None, Usage(), None)

    async def _save(
        self,
        turn: Turn,
        reply: Reply,
        finish: FinishReason,
        error: Error | None,
        usage: Usage,
        result: Any,
    ) -> bool:
        turn.settled = True
        status = _STATUS_BY_FINISH[finish]
        text = reply.text
        new_items = result.new_items if result is not None else []
        try:
            # Often called from a task that is being cancelled (client disconnect): without the shield, the
            # first await below would raise CancelledError and the reply would be lost.
            with anyio.CancelScope(shield=True):
                await self._write_reply(turn, reply, text, status, error, usage, new_items)
        except IntegrityError:
            log.info("conversation %s was deleted during its run; the reply was dropped", turn.conversation_id)
        except (SQLAlchemyError, OSError):
            log.exception("could not save the reply of conversation %s", turn.conversation_id)
            return False
        return True

    async def _write_reply(
        self,
        turn: Turn,
        reply: Reply,
        text: str,
        status: MessageStatus,
        error: Error | None,
        usage: Usage,
        new_items: Any,
    ) -> None:
        async with self.database.sessions() as session:
            await conversation_service.append_message(
                session,
                turn.conversation_id,
                id=turn.assistant_message_id,
                role=MessageRole.ASSISTANT,
                content=text,
                tool_calls=list(reply.tool_calls.values()),
                status=status,
                error_code=error.code if error is not None else None,
                usage={
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "total_tokens": usage.total_tokens,
                },
                items=history.turn_items(new_items, text, status),
            )
            await lock.release(session, turn.conversation_id, turn.run_id)
            await session.commit()

    async def _supervise(self, turn: Turn, result: Any, shutdown: anyio.Event) -> None:
        """Keep the run lock fresh while the run lasts, and cancel the run when the server shuts down."""
        ttl = self.settings.run_lock_ttl_seconds
        while True:
            with anyio.move_on_after(ttl / 3):
                await shutdown.wait()
                turn.shutting_down = True
                result.cancel()
                return
            try:
                async with self.database.sessions() as session:
                    held = await lock.refresh(session, turn.conversation_id, turn.run_id, ttl)
                    await session.commit()
                if not held:
                    log.warning("run lock of conversation %s was lost", turn.conversation_id)
            except (SQLAlchemyError, OSError):
                log.warning("could not refresh the run lock of conversation %s", turn.conversation_id)


def _parse_id(reference: str) -> uuid.UUID:
    try:
        return uuid.UUID(reference)
    except ValueError:
        raise NotFoundError(conversation_service.CONVERSATION_NOT_FOUND) from None


def _fold(reply: Reply, event: Any) -> None:
    if isinstance(event, Text):
        reply.text_parts.append(event.content)
    elif isinstance(event, ToolCall):
        reply.tool_calls[event.id] = {"id": event.id, "name": event.name, "args": event.args, "result": None}
    elif isinstance(event, ToolResult) and event.id in reply.tool_calls:
        reply.tool_calls[event.id]["result"] = event.result


def _usage(result: Any) -> Usage:
    usage = result.context_wrapper.usage
    return Usage(usage.input_tokens, usage.output_tokens, usage.total_tokens)
