"""One turn run: the agent's stream, translated, folded into the reply, published live and logged, then finished once.

A `TurnRun` lives in a background task of its process, so a turn outlasts the HTTP response that started it: a client
that disconnects, reloads or follows from another tab or process sees the same events. It ends in exactly one of
these ways, and every way ends the stream with `done`:
- the run completes, fails, hits `max_turns` or times out (`MAX_TURN_SECONDS`);
- it is stopped (`POST /api/conversations/{id}/stop`), cancelled because its client left (`ON_DISCONNECT=cancel`), or
  cut short by a server shutdown;
- it pauses for the user (a tool approval or a client-side tool); see `backend.chat.pause`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from dataclasses import dataclass, replace
from typing import Literal

from agents import Agent as SdkAgent
from agents import Runner, RunResultStreaming, TResponseInputItem
from opentelemetry import context as otel_context
from opentelemetry import trace

from backend import tracing
from backend.chat import history
from backend.chat.client_tools import CLIENT_TOOL_NAMES
from backend.chat.context import ChatContext
from backend.chat.events import (
    Done,
    Error,
    Event,
    FinishReason,
    Start,
    Usage,
    Widget,
    frame,
    payload,
)
from backend.chat.finish import STATUS_BY_FINISH
from backend.chat.lease import Lease
from backend.chat.live import Hub, LiveTurn
from backend.chat.pause import Pause, Resume, pause_of
from backend.chat.reply import Reply
from backend.chat.store import INTERRUPTED, UNSAVED, ConversationStore, Outcome, Saved, StoredEvent
from backend.chat.translate import StreamTranslator, classify_error
from backend.chat.turn_metrics import TurnMetrics
from backend.chat.widgets import WidgetError, validate_widget, widget_json
from backend.db import Database
from backend.memory import collect_soon
from backend.models import MessageStatus
from backend.usage.ledger import QuotaExceededError, UsageHooks, ledger_rows
from backend.usage.limits import Budget

log = logging.getLogger(__name__)

CancelReason = Literal["stopped", "disconnected", "shutdown", "lost"]
SHUTDOWN_ERROR = Error("server_shutdown", "The server is restarting. Send the message again.", retryable=True)
TIMEOUT_ERROR = Error("turn_timeout", "The reply took too long and was stopped.", retryable=True)


@dataclass(frozen=True, slots=True)
class TurnLimits:
    """The bounds a run works within."""

    max_turns: int
    max_turn_seconds: float
    save_retry_seconds: float


class _TurnSink:
    """The run context's widget sink: a weak reference to its turn.

    The Agents SDK's run result sits in reference cycles that hold the run context until a full garbage collection;
    a strong reference from the context would keep the whole turn (its live fan-out and every frame) alive with it.
    """

    __slots__ = ("_turn",)

    def __init__(self, turn: TurnRun) -> None:
        self._turn = weakref.ref(turn)

    def show_widget(self, widget_id: str, widget: dict[str, object]) -> None:
        """Show the widget in the turn, if it still runs."""
        turn = self._turn()
        if turn is None:
            raise WidgetError("The reply this widget belongs to has ended.")
        turn.show_widget(widget_id, widget)


class TurnRun:
    """One segment of an assistant message's turn, run in this process."""

    def __init__(
        self,
        *,
        store: ConversationStore,
        hub: Hub,
        lease: Lease,
        agent: SdkAgent[ChatContext],
        user_id: str,
        database: Database,
        conversation_id: uuid.UUID,
        message_id: uuid.UUID,
        title: str,
        run_input: list[TResponseInputItem] | Resume,
        limits: TurnLimits,
        reply: Reply | None = None,
        first_event_id: int = 1,
        client_results: dict[str, str] | None = None,
        background: set[asyncio.Task[None]] | None = None,
        budget: Budget | None = None,
        client_tool_names: frozenset[str] = CLIENT_TOOL_NAMES,
    ) -> None:
        """Prepare the run; `start()` begins it.

        `background` keeps the tasks the run leaves behind (closing a reply whose save failed) until they end; its
        owner cancels them at shutdown. `budget` is what its user may still spend (None: no quota).
        `client_tool_names`: the tools the browser runs in this run (`CLIENT_TOOLS` and the client's own, if any).
        """
        self.store = store
        self.hub = hub
        self.agent = agent
        self.context = ChatContext(
            user_id=user_id, database=database, client_results=client_results or {}, ui=_TurnSink(self)
        )
        self.conversation_id = conversation_id
        self.message_id = message_id
        self.title = title
        self.run_input = run_input
        self.limits = limits
        self.reply = reply or Reply()
        self.next_id = first_event_id
        self.live: LiveTurn = hub.open(conversation_id, message_id, first_event_id)
        self.result: RunResultStreaming | None = None
        self.cancel_reason: CancelReason | None = None
        self.task: asyncio.Task[None] | None = None
        self.background = background if background is not None else set()
        self.lease = lease
        self.finishing = False
        self.usage = UsageHooks(budget)
        self.metrics: TurnMetrics | None = None
        self.client_tool_names = client_tool_names

    def start(self) -> asyncio.Task[None]:
        """Run in a background task of this process."""
        self.lease.held.add(self.message_id)
        self.task = asyncio.create_task(self._run(), name=f"turn-{self.message_id}")
        return self.task

    def cancel(self, reason: CancelReason) -> None:
        """Stop the run (the first reason wins); it still ends with `done` and is stored as cancelled."""
        if self.cancel_reason is not None or self.task is None or self.task.done():
            return
        self.cancel_reason = reason
        if self.result is not None:
            self.result.cancel()  # stops the run and closes the upstream model stream
        else:
            self.task.cancel()

    def lose(self) -> None:
        """Another process took the turn over (this one stalled): stop at once, and send or log nothing more of it.

        The run is cancelled and its upstream model request closed; its clients get `error interrupted` and `done
        interrupted`, as the other process stored it. A run that is already finishing learns it from its final save.
        """
        if self.finishing or self.task is None or self.task.done():
            return
        already_cancelled = self.cancel_reason is not None
        self.cancel_reason = "lost"
        if already_cancelled:
            return
        if self.result is not None:
            self.result.cancel()
        else:
            self.task.cancel()

    def show_widget(self, widget_id: str, widget: dict[str, object]) -> None:
        """Validate a widget a tool shows and stream it (a `WidgetSink` for the run context).

        Raises:
            backend.chat.widgets.WidgetError: The widget is invalid; the tool reports it as its error.
        """
        event = Widget(widget_id, widget_json(validate_widget(widget)))
        self.reply.add(event)
        self._emit(event)

    def _emit(self, event: Event) -> None:
        if self.cancel_reason == "lost":
            return  # another process runs this turn now
        if self.metrics is not None:
            self.metrics.observe(event)
        event_id = self.next_id
        self.next_id += 1
        data = payload(event)
        self.live.publish(frame(event_id, data))
        self.hub.record(self.message_id, StoredEvent(event_id, event.__struct_config__.tag, data.decode()))  # type: ignore[arg-type]

    async def _run(self) -> None:
        finish: FinishReason = "stop"
        error: Error | None = None
        pause: Pause | None = None
        self.metrics = TurnMetrics()
        span = tracing.tracer.start_span(
            "chat turn",
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": self.agent.name,
                "gen_ai.conversation.id": str(self.conversation_id),
                "chat.message_id": str(self.message_id),
            },
        )
        attached = otel_context.attach(trace.set_span_in_context(span))  # the run's tasks inherit it
        try:
            self._emit(Start(str(self.conversation_id), str(self.message_id), self.title))
            translator = StreamTranslator(hide_calls=self.client_tool_names, known_calls=self.reply.call_names())
            async with asyncio.timeout(self.limits.max_turn_seconds):
                given = self.run_input
                run_input = await given.state(self.context) if isinstance(given, Resume) else given
                self.result = Runner.run_streamed(
                    self.agent, run_input, context=self.context, max_turns=self.limits.max_turns, hooks=self.usage
                )
                async for sdk_event in self.result.stream_events():
                    if not self.lease.valid():
                        await self.lease.confirm()  # this process may have stalled: is the turn still its own?
                    if self.cancel_reason == "lost":
                        break
                    event = translator.translate(sdk_event)
                    if event is not None:
                        self.reply.add(event)
                        self._emit(event)
            if self.cancel_reason is None:
                pause = pause_of(self.result, self.agent.name, self.client_tool_names)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self.cancel_reason is None or current is None:
                raise
            current.uncancel()
        except TimeoutError:
            error, finish = TIMEOUT_ERROR, "error"
        except QuotaExceededError as exc:  # the call that crossed the quota is done; its reply so far is kept
            error, finish = Error("quota_exceeded", exc.refusal.message, retryable=False), "error"
        except Exception as exc:
            error = classify_error(exc)
            finish = "max_turns" if error.code == "max_turns" else "error"
        finally:
            if self.result is not None and not self.result.is_complete:
                self.result.cancel()
        if self.cancel_reason is not None:
            finish = "cancelled"
            error = SHUTDOWN_ERROR if self.cancel_reason == "shutdown" else None
        elif pause is not None:
            for event in pause.asks:
                self.reply.add(event)
                self._emit(event)
            finish = pause.finish
        try:
            await self._finish(finish, error, pause)
        finally:
            span.set_attribute("chat.finish_reason", finish)
            tracing.end_span(span, error.code if error is not None else None)
            otel_context.detach(attached)

    async def _finish(self, finish: FinishReason, error: Error | None, pause: Pause | None) -> None:
        self.finishing = True
        usage = self._usage()
        status = STATUS_BY_FINISH[finish]
        items: list[dict[str, object]] | None = None
        if self.result is not None and pause is None:
            try:
                items = history.turn_items(self.result.new_items, self.reply.text, status)
            except Exception:  # the reply is still stored; only its model replay falls back to its text
                log.exception("could not build the replay items of %s", self.message_id)
        self.usage.close("cancelled" if finish == "cancelled" else "error")
        if self.metrics is not None:
            self.metrics.finish(finish, error.code if error is not None else None, self.usage.calls)
        outcome = Outcome(
            status=status,
            reply=self.reply,
            error_code=error.code if error is not None else None,
            usage=usage,
            items=items,
            run_state=pause.state.to_json() if pause is not None else None,
            ledger=ledger_rows(self.context.user_id, self.conversation_id, self.message_id, self.usage.calls),
        )
        log.info("reply %s ended: %s%s", self.message_id, finish, f" ({error.code})" if error is not None else "")
        finals: list[Event] = [error] if error is not None else []
        finals.append(Done(str(self.conversation_id), str(self.message_id), finish, usage))
        stored = [self._stored(event) for event in finals]
        pending: list[StoredEvent] = []
        saved: Saved = "unsaved"
        try:
            pending = await self.hub.take_pending(self.message_id)
            if self.cancel_reason == "lost":
                saved = "lost"  # its events are no longer this process's to log, its calls' usage still is
                await self.store.keep_usage(outcome.ledger)
            else:
                saved = await self.store.finish_turn(
                    self.conversation_id,
                    self.message_id,
                    outcome,
                    [*pending, *stored],
                    retry_seconds=self.limits.save_retry_seconds,
                )
        finally:
            if saved != "saved":
                self.next_id = stored[0].id  # what the clients see instead of the unsaved finals
            if saved == "lost":
                # Another process took the turn over and stored it as interrupted: the clients hear the same.
                stored = [self._stored(INTERRUPTED), self._stored(Done(*self._ids(), "interrupted", usage))]
            elif saved == "unsaved":
                # Tell the user, and keep trying to close the message (with the whole reply) and free the conversation
                # once the database is back (the lock must not outlive an outage by more than a retry interval).
                stored = [self._stored(UNSAVED), self._stored(Done(*self._ids(), "error", usage))]
                unsaved = replace(outcome, status=MessageStatus.ERROR, error_code=UNSAVED.code, run_state=None)
                closing = asyncio.get_running_loop().create_task(
                    self._close_unsaved(unsaved, [*pending, *stored]), name=f"close-unsaved-{self.message_id}"
                )
                self.background.add(closing)
                closing.add_done_callback(self.background.discard)
            for event in stored:
                self.live.publish(frame(event.id, event.data.encode()), end=event.type == "done")
            self.hub.close(self.live)
            self.lease.held.discard(self.message_id)
            if isinstance(self.run_input, list) and history.carries_files(self.run_input):
                self.run_input, self.result = [], None  # the run is over; nothing reads them again
                collect_soon()  # the SDK's and LiteLLM's copies are held in reference cycles: see backend.memory

    def _ids(self) -> tuple[str, str]:
        return str(self.conversation_id), str(self.message_id)

    def _stored(self, event: Event) -> StoredEvent:
        event_id = self.next_id
        self.next_id += 1
        return StoredEvent.of(event_id, event)

    async def _close_unsaved(self, outcome: Outcome, events: list[StoredEvent]) -> None:
        delay = 1.0
        while True:
            try:
                await self.store.close_unsaved(self.conversation_id, self.message_id, outcome, events)
                return
            except Exception as error:
                log.warning("could not close unsaved reply %s yet (%s)", self.message_id, type(error).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 3.0)

    def _usage(self) -> Usage:
        if self.result is None:
            return Usage()
        usage = self.result.context_wrapper.usage
        return Usage(usage.input_tokens, usage.output_tokens, usage.total_tokens)
