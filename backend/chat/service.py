"""The chat coordinator: start turns, stream and rejoin them, stop them, and keep this process's turns healthy.

It owns no state of a turn itself: the store (`backend.chat.store`) owns every write, a `TurnRun`
(`backend.chat.turn`) runs each turn in the background, and the hub (`backend.chat.live`) carries its events to
whoever follows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import assert_never

import anyio
from agents import Agent, TResponseInputItem

from backend import metrics
from backend.chat import actions, history
from backend.chat.client_tools import CLIENT_TOOL_NAMES, ClientTool, with_client_tools
from backend.chat.commands import AnswerPause, Command, Regenerate, SendMessage, Upload, WidgetAction
from backend.chat.context import ChatContext
from backend.chat.events import DONE_FRAME, Done, Event, Start, Text, Usage, encode, parse_frames
from backend.chat.events import Widget as WidgetEvent
from backend.chat.lease import Lease
from backend.chat.live import Hub
from backend.chat.pause import Ask, PausedState, Resume, answers_to, waiting
from backend.chat.reply import Reply
from backend.chat.store import BegunTurn, ConversationStore, ExistingTurn, TurnRequest
from backend.chat.team import agents_by_name
from backend.chat.titles import TITLE_AGENT, TitleModel, clean_title
from backend.chat.turn import TurnLimits, TurnRun
from backend.chat.widgets import widget_json
from backend.db import Database, libpq_dsn
from backend.errors import InvalidInputError
from backend.files.content import load_attachments
from backend.files.service import check_message_attachments, upload_file
from backend.files.storage import FileStorage, create_storage
from backend.models import MessageStatus
from backend.settings import Settings
from backend.usage.ledger import ModelCall, ledger_rows
from backend.usage.limits import Budget, LimitsService

log = logging.getLogger(__name__)

__all__ = ["ChatService", "StopResult", "Subscription"]

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
    frames: list[bytes] | None = None  # a stream computed up front (a widget action's)
    user_message_id: uuid.UUID | None = None  # the user message this request stored, if it stored one


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
        titles: TitleModel | None = None,
    ) -> None:
        """Create the service.

        Args:
            database: Where conversations, messages and the event log live.
            settings: Limits, intervals and the disconnect policy.
            agent: The starting agent of the team (see `backend.team.agents`): a new conversation starts with it; later
                turns start with the agent that answered last (see `start_agent`).
            instance_id: This process's id for run ownership (random by default).
            file_storage: Where attachment bytes live (built from the settings by default).
            titles: What names a new conversation after its first message (None: it keeps the message's start).
        """
        self.database = database
        self.file_storage = file_storage or create_storage(settings)
        self.settings = settings
        self.agent = agent
        self.agents = agents_by_name(agent)
        self.titles = titles
        self.store = ConversationStore(
            database,
            instance_id=instance_id or uuid.uuid4(),
            stale_after_seconds=settings.stale_after_seconds,
            max_turn_seconds=settings.max_turn_seconds,
            history_max_items=settings.history_max_items,
        )
        self.quotas = LimitsService(database, settings)
        dsn = libpq_dsn(database.engine.url) if self.store.is_postgres else None
        self.lease = Lease(self.store, settings.stale_after_seconds)
        self.lease.on_lost = self._lose_local
        self.hub = Hub(self.store, settings.event_flush_seconds, dsn, self.lease)
        self.hub.on_stop = self._stop_local
        self.limits = TurnLimits(
            max_turns=settings.max_turns,
            max_turn_seconds=settings.max_turn_seconds,
            save_retry_seconds=settings.save_retry_seconds,
        )
        self.runs: dict[uuid.UUID, TurnRun] = {}
        self._background: list[asyncio.Task[None]] = []
        self.leftovers: set[asyncio.Task[None]] = set()
        """Tasks that runs left behind (closing replies whose save failed), cancelled at shutdown."""

    # --- process lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Beat once, load the users' limits, and start the heartbeat, event-log writer, listener and takeover sweep.

        The first beat comes before the server takes any turn: a turn whose process has no heartbeat row yet looks
        stale to every other process (its lock free to take over, and not counted against `MAX_TURNS_PER_USER`).
        """
        try:
            await self.lease.renew()
        except Exception as error:  # a database that is down must not stop the start; the heartbeat retries
            log.warning("could not register this process yet (%s)", type(error).__name__)
        try:
            await self.quotas.refresh()
        except Exception as error:
            log.warning("could not load the users' limits yet (%s)", type(error).__name__)
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
        leftovers = [*self._background, *self.leftovers]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

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
                await self.lease.renew()
                await self.quotas.refresh()
                for message_id in await self.store.cancel_requests():
                    self._stop_local(message_id)
                if beats % SWEEP_EVERY_BEATS == 0:
                    await self.store.recover_stale()
                now = asyncio.get_running_loop().time()
                if now - pruned_at >= PRUNE_EVERY_SECONDS:
                    pruned_at = now
                    await self.store.prune_events(retention)
                    await self.quotas.prune()
            except Exception as error:
                log.warning("turn maintenance failed: %s", type(error).__name__)
            beats += 1
            await asyncio.sleep(self.settings.heartbeat_seconds)

    # --- starting, following and stopping turns ------------------------------------------------------------------

    async def execute(self, user_id: str, command: Command) -> Subscription:
        """Carry out an adapter's command before any byte is streamed; the subscription says what to stream.

        Raises:
            InvalidInputError: The message is over the configured limit, has too many attachments, or answers are
                missing or invalid.
            NotFoundError: The conversation, the reply, or an attached file does not exist or is not the caller's.
            ConflictError: A run is already in progress, the idempotency key was used for another message, or the
                answers name nothing pending.
        """
        match command:
            case SendMessage():
                return await self._send(user_id, command)
            case AnswerPause():
                return await self._answer(user_id, command)
            case WidgetAction():
                return await self._act(user_id, command)
            case Regenerate():
                return await self._regenerate(user_id, command)
            case _:
                assert_never(command)

    async def _send(self, user_id: str, command: SendMessage) -> Subscription:
        if len(command.text) > self.settings.max_message_chars:
            raise InvalidInputError(f"message: must be at most {self.settings.max_message_chars} characters")
        with_client_tools(self.agent, command.client_tools)  # a clash is a bad request, before anything is stored
        if command.attachments or command.uploads:
            async with self.database.reads() as session:
                await check_message_attachments(
                    session,
                    user_id,
                    command.attachments,
                    max_files=self.settings.files_per_message_max,
                    max_bytes=self.settings.message_attachment_bytes,
                    inline_sizes=[len(upload.data) for upload in command.uploads],
                )
        attachments = command.attachments + await self._store_uploads(user_id, command.uploads)
        gate = self.quotas.gate(user_id)  # counted in the turn's transaction: a retry or a refused turn counts nothing
        begun = await self.store.begin_turn(
            TurnRequest(
                user_id=user_id,
                message=command.text,
                conversation_id=command.conversation_id,
                client_message_id=command.client_message_id,
                attachments=attachments,
                create_missing=command.create_missing,
                edit_of=command.edit_of,
                max_running=self.quotas.limits_of(user_id).max_turns_per_user,
                admission=gate,
            )
        )
        if isinstance(begun, ExistingTurn):
            return Subscription(begun.message_id)
        return await self._begin_run(user_id, begun, gate.budget, command.client_tools)

    async def _store_uploads(self, user_id: str, uploads: tuple[Upload, ...]) -> tuple[uuid.UUID, ...]:
        """Store files sent inline with every limit of `POST /api/files` (the sweep removes any a failed turn left)."""
        ids: list[uuid.UUID] = []
        for upload in uploads:
            async with self.database.sessions() as session:
                stored = await upload_file(
                    session, self.file_storage, self.settings, user_id, upload.filename, upload.data
                )
            ids.append(stored.id)
        return tuple(ids)

    async def _regenerate(self, user_id: str, command: Regenerate) -> Subscription:
        gate = self.quotas.gate(user_id)  # a new reply: counted like a message
        begun = await self.store.begin_turn(
            TurnRequest(
                user_id=user_id,
                message="",
                conversation_id=command.conversation_id,
                client_message_id=command.client_message_id,
                regenerate=command.message_id or uuid.UUID(int=0),
                max_running=self.quotas.limits_of(user_id).max_turns_per_user,
                admission=gate,
            )
        )
        if isinstance(begun, ExistingTurn):
            return Subscription(begun.message_id)
        return await self._begin_run(user_id, begun, gate.budget)

    async def _begin_run(
        self, user_id: str, begun: BegunTurn, budget: Budget | None, client_tools: tuple[ClientTool, ...] = ()
    ) -> Subscription:
        try:
            run_input = await self._input_of(begun)
        except Exception:
            await self.store.abandon(begun.conversation_id, begun.message_id)  # free the lock it already holds
            raise
        run = self._run(
            agent=with_client_tools(self.start_agent(begun), client_tools),
            client_tool_names=_client_names(client_tools),
            user_id=user_id,
            conversation_id=begun.conversation_id,
            message_id=begun.message_id,
            title=begun.title,
            run_input=run_input,
            budget=budget,
        )
        if begun.created and self.titles is not None and begun.history and begun.history[-1].content.strip():
            self._name_soon(run, begun.history[-1].content)
        return Subscription(begun.message_id, run=run, user_message_id=begun.user_message_id)

    def _name_soon(self, run: TurnRun, message: str) -> None:
        """Name the new conversation in the background, alongside its first reply (which never waits for it)."""
        task = asyncio.get_running_loop().create_task(self._name(run, message), name=f"title-{run.conversation_id}")
        self.leftovers.add(task)
        task.add_done_callback(self.leftovers.discard)

    async def _name(self, run: TurnRun, message: str) -> None:
        titles = self.titles
        assert titles is not None
        started, answer = time.perf_counter(), None
        try:
            async with asyncio.timeout(self.settings.title_timeout_seconds):
                answer = await titles.title(message)
            await self._keep_title_call(run, answer.call)
            title = clean_title(answer.text)
            if title is None:
                log.warning("title of conversation %s: the model's answer was empty", run.conversation_id)
                return
            if not await self.store.set_generated_title(run.conversation_id, title):
                log.info("conversation %s keeps its title: renamed by the user (or deleted)", run.conversation_id)
                return
        except Exception as error:  # the first-message title stays; never the text, only what went wrong
            log.warning("title of conversation %s failed (%s)", run.conversation_id, type(error).__name__)
            if answer is None and titles.model is not None:  # the call failed: counted, its tokens unknown (0)
                seconds = time.perf_counter() - started
                failed = ModelCall(TITLE_AGENT, titles.model, priced=False, outcome="error", seconds=seconds)
                await self._keep_title_call(run, failed)
            return
        sent = run.show_title(title)
        log.info("conversation %s titled by the model (%s)", run.conversation_id, "streamed" if sent else "stored")

    async def _keep_title_call(self, run: TurnRun, call: ModelCall | None) -> None:
        """A title call in the usage ledger (best effort): the conversation's, no message's (a title is no reply)."""
        if call is not None:
            await self.store.keep_usage(ledger_rows(run.context.user_id, run.conversation_id, None, [call]))

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
        # Base64 of up to MESSAGE_ATTACHMENT_BYTES (in short pieces, see `backend.files.content`): off the event loop.
        return await asyncio.to_thread(
            history.to_agent_input, begun.history, self.settings.history_max_items, attachments
        )

    def _run(
        self,
        *,
        agent: Agent[ChatContext],
        user_id: str,
        conversation_id: uuid.UUID,
        message_id: uuid.UUID,
        title: str,
        run_input: list[TResponseInputItem] | Resume,
        reply: Reply | None = None,
        first_event_id: int = 1,
        client_results: dict[str, str] | None = None,
        budget: Budget | None = None,
        client_tool_names: frozenset[str] = CLIENT_TOOL_NAMES,
    ) -> TurnRun:
        """Start a turn segment in the background of this process (a new turn, or a paused one resuming)."""
        run = TurnRun(
            store=self.store,
            hub=self.hub,
            lease=self.lease,
            agent=agent,
            user_id=user_id,
            database=self.database,
            conversation_id=conversation_id,
            message_id=message_id,
            title=title,
            run_input=run_input,
            limits=self.limits,
            reply=reply,
            first_event_id=first_event_id,
            client_results=client_results,
            budget=budget,
            background=self.leftovers,
            client_tool_names=client_tool_names,
        )
        self.runs[run.message_id] = run
        run.start().add_done_callback(lambda _task: self.runs.pop(run.message_id, None))
        return run

    def _agent_named(self, name: object) -> Agent[ChatContext]:
        """The agent called `name` in the team reachable from the starting agent (the starting agent if unknown)."""
        return self.agents.get(name, self.agent) if isinstance(name, str) else self.agent

    def start_agent(self, begun: BegunTurn) -> Agent[ChatContext]:
        """The agent a new turn starts with: the one that answered the conversation last, else the starting agent.

        The user usually goes on with the specialist that just answered, and every specialist can hand back to
        triage. A stored name that is no longer in the team (the team changed) falls back to the starting agent.
        """
        return self._agent_named(next((m.agent for m in reversed(begun.history) if m.agent), None))

    async def _answer(self, user_id: str, command: AnswerPause) -> Subscription:
        """Resume a paused reply with the user's approvals and the browser's client-tool results."""
        paused = await self.store.paused_turn(user_id, command.conversation_id)
        stored = PausedState.of(paused.run_state)
        start_agent = with_client_tools(self._agent_named(stored.start_agent), command.client_tools)
        answers = answers_to(paused.parts, command.approvals, command.client_results, skip_settled=command.skip_settled)
        admission = await self.quotas.admit(user_id, message=False)
        parts = answers.fold(paused.parts)
        await self.store.resume_turn(paused, parts)  # the decisions are stored before the run starts
        run = self._run(
            agent=start_agent,
            client_tool_names=_client_names(command.client_tools),
            user_id=user_id,
            conversation_id=paused.conversation_id,
            message_id=paused.message_id,
            title=paused.title,
            run_input=Resume(start_agent, stored, answers),
            reply=Reply(parts, paused.agent),
            first_event_id=paused.last_event_id + 1,
            client_results=answers.client_results(),
            budget=admission.budget,
        )
        return Subscription(paused.message_id, after=paused.last_event_id, run=run)

    async def _act(self, user_id: str, command: WidgetAction) -> Subscription:
        """Route a widget action to its handler (never to the model) and stream what it changed."""
        conversation_id = command.conversation_id
        async with self.store.action(user_id, conversation_id) as action:
            result = await actions.dispatch(action.database, user_id, conversation_id, command.action)
            widgets = {widget_id: widget_json(widget) for widget_id, widget in result.widgets.items()}
            message_id = await action.record(widgets, result.reply)
        shown_id = message_id or uuid.UUID(int=0)
        events: list[Event] = [Start(str(conversation_id), str(shown_id), "", status="complete")]
        events += [WidgetEvent(widget_id, widget) for widget_id, widget in widgets.items()]
        if result.reply:
            events.append(Text(result.reply))
        events.append(Done(str(conversation_id), str(shown_id), "stop", Usage()))
        return Subscription(shown_id, frames=[encode(event, i) for i, event in enumerate(events, start=1)])

    async def rejoin(self, user_id: str, message_id: uuid.UUID, after: int) -> Subscription:
        """Follow one of the user's turns from after event `after` (0 for all of it).

        Raises:
            NotFoundError: No such assistant message, or it is another user's.
        """
        await self.store.turn_info(user_id, message_id)
        return Subscription(message_id, after=after)

    async def running(self, user_id: str, conversation_id: uuid.UUID, after: int = 0) -> Subscription | None:
        """The conversation's running turn after event `after` (0: from its start), or None when nothing runs in it.

        A conversation that does not exist yet runs nothing (a client may ask before its first message).

        Raises:
            NotFoundError: The conversation is another user's.
        """
        message_id = await self.store.running_turn(user_id, conversation_id)
        return Subscription(message_id, after=after) if message_id is not None else None

    async def waiting(self, user_id: str, conversation_id: uuid.UUID) -> list[Ask]:
        """What the conversation's paused reply still waits for (approvals, client tools), in order.

        Raises:
            NotFoundError: The conversation does not exist or is not the caller's.
            ConflictError: Nothing waits for an answer (`nothing_pending`).
        """
        paused = await self.store.paused_turn(user_id, conversation_id)
        return waiting(paused.parts)

    async def events(self, subscription: Subscription, shutdown: anyio.Event) -> AsyncIterator[tuple[int, Event]]:
        """The typed events of a subscription with their ids, for adapters that encode their own protocol.

        The same stream as `stream` (same end, same disconnect and shutdown handling), decoded from our frames.
        """
        frames = self.stream(subscription, shutdown)
        try:
            async for data in frames:
                for pair in parse_frames(data):
                    yield pair
        finally:
            await frames.aclose()

    async def stream(self, subscription: Subscription, shutdown: anyio.Event) -> AsyncGenerator[bytes]:
        """The SSE frames of a subscription, ending with `done` and `[DONE]`.

        If the client goes away, the turn goes on (`ON_DISCONNECT=continue`) or is cancelled if this request started
        it (`ON_DISCONNECT=cancel`). A server shutdown cuts every run short, so every open stream ends cleanly.
        """
        if subscription.frames is not None:
            for data in subscription.frames:
                yield data
            yield DONE_FRAME
            return
        watcher = asyncio.create_task(self._on_shutdown(shutdown))
        ended = False
        metrics.ACTIVE_STREAMS.inc()
        try:
            async for data in self.hub.follow(subscription.message_id, subscription.after):
                yield data
            yield DONE_FRAME
            ended = True
        finally:
            metrics.ACTIVE_STREAMS.dec()
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

    def _lose_local(self, message_id: uuid.UUID) -> None:
        run = self.runs.get(message_id)
        if run is not None:
            run.lose()

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


def _client_names(tools: tuple[ClientTool, ...]) -> frozenset[str]:
    """The tools the browser runs in a run: ours and the client's own for that run."""
    return CLIENT_TOOL_NAMES | {tool.name for tool in tools} if tools else CLIENT_TOOL_NAMES
