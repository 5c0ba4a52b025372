"""The chat coordinator: start turns, stream and rejoin them, stop them, and keep this process's turns healthy.

It owns no state of a turn itself: the store (`backend.chat.store`) owns every write, a `TurnRun`
(`backend.chat.turn`) runs each turn in the background, and the hub (`backend.chat.live`) carries its events to
whoever follows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import anyio
from agents import Agent, RunResultStreaming, TResponseInputItem

from backend.chat import history
from backend.chat.context import ChatContext
from backend.chat.events import DONE_FRAME
from backend.chat.live import Hub
from backend.chat.schemas import ChatRequest
from backend.chat.store import BegunTurn, ConversationStore, ExistingTurn, TurnRequest, make_title
from backend.chat.turn import Pause, TurnLimits, TurnRun
from backend.db import Database
from backend.errors import InvalidInputError, NotFoundError
from backend.files.content import load_attachments
from backend.files.service import check_attachment_count
from backend.files.storage import FileStorage, create_storage
from backend.models import MessageStatus
from backend.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["ChatService", "StopResult", "Subscription", "make_title"]

STOP_WAIT_SECONDS = 10.0
SHUTDOWN_WAIT_SECONDS = 10.0
SWEEP_EVERY_BEATS = 2
PRUNE_EVERY_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class Subscription:
    """A stream to send: a turn's events after `after`; `run` is the turn this very request started, if any."""

    message_id: uuid.UUID
    after: int = 0
    run: TurnRun | None = None


@dataclass(frozen=True, slots=True)
class StopResult:
    """The answer to a stop request."""

    message_id: uuid.UUID | None
    status: MessageStatus | None
    stopped: bool
    detail: str


class ChatService:
    """Runs chat turns for one server process."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        agent: Agent[ChatContext],
        *,
        instance_id: uuid.UUID | None = None,
        file_storage: FileStorage | None = None,
    ) -> None:
        """Create the service.

        Args:
            database: Where conversations, messages and the event log live.
            settings: Limits, intervals and the disconnect policy.
            agent: The agent every turn starts with (see `backend.chat.agent`).
            instance_id: This process's id for run ownership (random by default).
            file_storage: Where attachment bytes live (built from the settings by default).
        """
        self.database = database
        self.file_storage = file_storage or create_storage(settings)
        self.settings = settings
        self.agent = agent
        self.store = ConversationStore(
            database,
            instance_id=instance_id or uuid.uuid4(),
            stale_after_seconds=settings.stale_after_seconds,
            max_turn_seconds=settings.max_turn_seconds,
            history_max_items=settings.history_max_items,
            file_storage=self.file_storage,
        )
        url = database.engine.url
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False) if self.store.is_postgres else None
        self.hub = Hub(self.store, settings.event_flush_seconds, dsn)
        self.hub.on_stop = self._stop_local
        self.limits = TurnLimits(
            max_turns=settings.max_turns,
            max_turn_seconds=settings.max_turn_seconds,
            save_retry_seconds=settings.save_retry_seconds,
        )
        self.runs: dict[uuid.UUID, TurnRun] = {}
        self._background: list[asyncio.Task[None]] = []

    # --- process lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the heartbeat, the event-log writer, the listener and the takeover sweep."""
        self._background = [
            asyncio.create_task(self.hub.run_writer(), name="event-log-writer"),
            asyncio.create_task(self.hub.run_listener(), name="event-listener"),
            asyncio.create_task(self._maintain(), name="turn-maintenance"),
        ]

    async def close(self) -> None:
        """Stop every run of this process (each is stored), write what is queued, and stop the background tasks."""
        self.shutdown_runs()
        tasks = [run.task for run in self.runs.values() if run.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT_SECONDS)
        with contextlib.suppress(Exception):
            await self.hub.flush()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def shutdown_runs(self) -> None:
        """The server is going away: cut every run short (each ends with `server_shutdown` and is stored)."""
        for run in list(self.runs.values()):
            run.cancel("shutdown")

    async def _maintain(self) -> None:
        beats = 0
        pruned_at = asyncio.get_running_loop().time()
        retention = timedelta(hours=self.settings.event_retention_hours)
        while True:
            try:
                await self.store.heartbeat()
                for message_id in await self.store.cancel_requests():
                    self._stop_local(message_id)
                if beats % SWEEP_EVERY_BEATS == 0:
                    await self.store.recover_stale()
                now = asyncio.get_running_loop().time()
                if now - pruned_at >= PRUNE_EVERY_SECONDS:
                    pruned_at = now
                    await self.store.prune_events(retention)
            except Exception as error:
                log.warning("turn maintenance failed: %s", type(error).__name__)
            beats += 1
            await asyncio.sleep(self.settings.heartbeat_seconds)

    # --- starting, following and stopping turns ------------------------------------------------------------------

    async def send(self, user_id: str, request: ChatRequest) -> Subscription:
        """Begin a turn (or find the one a repeated `client_message_id` began) before any byte is streamed.

        Raises:
            InvalidInputError: The message is over the configured limit, or has too many attachments.
            NotFoundError: The conversation, or an attached file, does not exist or is not the caller's.
            ConflictError: A run is already in progress, or the idempotency key was used for another message.
        """
        if request.message is None:
            raise InvalidInputError("actions and answers to paused replies are not supported yet")
        if len(request.message) > self.settings.max_message_chars:
            raise InvalidInputError(f"message: must be at most {self.settings.max_message_chars} characters")
        check_attachment_count(request.attachments, self.settings.files_per_message_max)
        begun = await self.store.begin_turn(
            TurnRequest(
                user_id=user_id,
                message=request.message,
                conversation_id=_conversation_id(request.thread_id),
                client_message_id=request.client_message_id,
                attachments=tuple(request.attachments),
            )
        )
        if isinstance(begun, ExistingTurn):
            return Subscription(begun.message_id)
        try:
            run_input = await self._input_of(begun)
        except Exception:
            await self.store.abandon(begun.conversation_id, begun.message_id)  # free the lock it already holds
            raise
        run = self._run(begun, run_input)
        return Subscription(begun.message_id, run=run)

    async def _input_of(self, begun: BegunTurn) -> list[TResponseInputItem]:
        if begun.created and not begun.files:  # its whole history is this message
            return [{"role": "user", "content": begun.history[-1].content}]
        attachments = await load_attachments(
            self.database,
            self.file_storage,
            begun.files,
            begun.user_message_id,
            self.settings.history_attachment_bytes,
        )
        return history.to_agent_input(begun.history, self.settings.history_max_items, attachments)  # type: ignore[return-value]

    def _run(self, begun: BegunTurn, run_input: list[TResponseInputItem]) -> TurnRun:
        run = TurnRun(
            store=self.store,
            hub=self.hub,
            agent=self.agent,
            context=ChatContext(user_id=begun.user_id, database=self.database),
            conversation_id=begun.conversation_id,
            message_id=begun.message_id,
            title=begun.title,
            run_input=run_input,
            limits=self.limits,
            pause_check=self._pause_of,
        )
        self.runs[begun.message_id] = run
        run.start().add_done_callback(lambda _task: self.runs.pop(begun.message_id, None))
        return run

    def _pause_of(self, result: RunResultStreaming) -> Pause | None:
        return None

    async def rejoin(self, user_id: str, message_id: uuid.UUID, after: int) -> Subscription:
        """Follow one of the user's turns from after event `after` (0 for all of it).

        Raises:
            NotFoundError: No such assistant message, or it is another user's.
        """
        await self.store.turn_info(user_id, message_id)
        return Subscription(message_id, after=after)

    async def stream(self, subscription: Subscription, shutdown: anyio.Event) -> AsyncIterator[bytes]:
        """The SSE frames of a subscription, ending with `done` and `[DONE]`.

        If the client goes away, the turn goes on (`ON_DISCONNECT=continue`) or is cancelled if this request started
        it (`ON_DISCONNECT=cancel`). A server shutdown cuts every run short, so every open stream ends cleanly.
        """
        watcher = asyncio.create_task(self._on_shutdown(shutdown))
        ended = False
        try:
            async for data in self.hub.follow(subscription.message_id, subscription.after):
                yield data
            yield DONE_FRAME
            ended = True
        finally:
            watcher.cancel()
            run = subscription.run
            if not ended and run is not None and self.settings.on_disconnect == "cancel":
                run.cancel("disconnected")

    async def _on_shutdown(self, shutdown: anyio.Event) -> None:
        await shutdown.wait()
        self.shutdown_runs()

    def _stop_local(self, message_id: uuid.UUID) -> None:
        run = self.runs.get(message_id)
        if run is not None:
            run.cancel("stopped")

    async def stop(self, user_id: str, conversation_id: uuid.UUID) -> StopResult:
        """Stop the conversation's running turn, wherever it runs; idempotent.

        Raises:
            NotFoundError: The conversation does not exist or is not the caller's.
        """
        message_id = await self.store.request_stop(user_id, conversation_id)
        if message_id is None:
            latest = await self.store.latest_reply(user_id, conversation_id)
            return StopResult(
                message_id=latest[0] if latest else None,
                status=latest[1] if latest else None,
                stopped=False,
                detail="Nothing is running in this conversation.",
            )
        run = self.runs.get(message_id)
        if run is not None and run.task is not None:
            run.cancel("stopped")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(run.task), STOP_WAIT_SECONDS)
        status = await self._settled_status(message_id)
        stopped = status != MessageStatus.IN_PROGRESS
        return StopResult(
            message_id=message_id,
            status=status,
            stopped=stopped,
            detail="The reply was stopped." if stopped else "The reply is still stopping.",
        )

    async def _settled_status(self, message_id: uuid.UUID) -> MessageStatus | None:
        """Wait (bounded) for another process to finish a stopped turn; take it over if that process is gone."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_WAIT_SECONDS
        status = await self.store.message_status(message_id)
        while status == MessageStatus.IN_PROGRESS and loop.time() < deadline:
            await asyncio.sleep(0.1)
            status = await self.store.message_status(message_id)
        if status == MessageStatus.IN_PROGRESS:
            await self.store.recover_stale()
            status = await self.store.message_status(message_id)
        return status


def _conversation_id(reference: str | None) -> uuid.UUID | None:
    if reference is None:
        return None
    try:
        return uuid.UUID(reference)
    except ValueError:
        raise NotFoundError("Conversation not found.") from None
