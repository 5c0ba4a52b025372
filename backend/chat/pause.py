"""The pause: a turn that waits for the user (a tool approval) or for the browser (a client-side tool), in one place.

Its life, each step here and typed:
1. `pause_of`: a finished stream whose run was interrupted becomes a `Pause`: what it asks (`Ask`: the
   `approval_request` and `client_tool_call` events), its finish reason, and the run's state (`PausedState`), which
   any process can resume.
2. `part_of`: each ask is folded into the reply as a stored part (`approval` or `client_tool`); `waiting` reads the
   asks still unanswered back from stored parts.
3. `answers_to`: the user's approvals and the browser's results, checked against what waits, become `Answers`
   (`Approved`, `Rejected`, `ClientResult`); `answered` folds one into its part, and `Resume` loads the stored state
   and applies the decisions when the resumed run starts (in `backend.chat.turn`).
4. `cancelled`: a new user message cancels whatever still waits (`Cancelled`).

Stored parts (see `backend.chat.reply`): `{"type": "approval", "id", "name", "args", "decision", "reason"}` with
decision null, approved, rejected or cancelled, and `{"type": "client_tool", "id", "name", "args", "result"}`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, assert_never

from agents import Agent, RunContextWrapper, RunResultStreaming
from agents.run_state import RunState

from backend.chat.client_tools import CLIENT_TOOL_NAMES
from backend.chat.context import ChatContext, context_json
from backend.chat.events import ApprovalRequest, ClientToolCall, FinishReason
from backend.chat.translate import parse_json, rejection_output
from backend.errors import ConflictError, InvalidInputError

Part = dict[str, Any]
Ask = ApprovalRequest | ClientToolCall
"""What a paused turn waits for: a tool call to approve, or a tool the browser runs."""

MAX_RESULT_BYTES = 16 * 1024  # a client tool's result, as JSON
NO_RESULT = {"error": "cancelled"}


@dataclass(frozen=True, slots=True)
class Approved:
    """The user lets the tool call `id` run (a reason, if given, is kept with the decision)."""

    id: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """The user refuses the tool call `id`; the model sees `reason` (or a stock sentence) as the tool's result."""

    id: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ClientResult:
    """The browser's result of the client tool call `id` (any JSON)."""

    id: str
    result: object


@dataclass(frozen=True, slots=True)
class Cancelled:
    """Nobody will answer the ask `id`: a new user message went past it."""

    id: str


Answer = Approved | Rejected | ClientResult | Cancelled
Decision = Approved | Rejected


@dataclass(frozen=True, slots=True)
class PausedState:
    """The stored state of a paused run: the SDK's `RunState` JSON and the agent the run started with.

    A resume must load the state from the agent it started with (the SDK checks it), so that agent's name is kept.
    """

    start_agent: str
    state: Mapping[str, Any]

    def to_json(self) -> dict[str, object]:
        """The form stored in the assistant message's `run_state` column."""
        return {"start_agent": self.start_agent, "state": dict(self.state)}

    @classmethod
    def of(cls, stored: Mapping[str, object]) -> PausedState:
        """Read the stored form back (an unknown shape loads as an empty state, which the SDK refuses)."""
        start_agent, state = stored.get("start_agent"), stored.get("state")
        return cls(start_agent if isinstance(start_agent, str) else "", state if isinstance(state, dict) else {})


@dataclass(frozen=True, slots=True)
class Pause:
    """What a paused run waits for, why it finished, and its state."""

    asks: list[Ask]
    state: PausedState

    @property
    def finish(self) -> FinishReason:
        """`approval_required` when any approval waits, else `client_tool`."""
        return "approval_required" if any(isinstance(ask, ApprovalRequest) for ask in self.asks) else "client_tool"


def pause_of(
    result: RunResultStreaming, start_agent: str, client_names: frozenset[str] = CLIENT_TOOL_NAMES
) -> Pause | None:
    """The pause a finished stream ended in: tools waiting for approval or for the browser (None if it completed).

    The SDK marks no pause in the stream; its interruptions say what waits. The run's state is kept (with the name of
    the agent it started with, which a resume must load it from) so any process can resume it. `client_names` are the
    tools the browser runs in this run (`CLIENT_TOOLS` and the client's own tools for the run, if any).
    """
    interruptions = result.interruptions
    if not interruptions:
        return None
    asks: list[Ask] = []
    for item in interruptions:
        name, call_id = item.name or "", item.call_id or ""
        parsed = parse_json(item.arguments or "{}")
        args = parsed if isinstance(parsed, dict) else {"value": parsed}
        asks.append(
            ClientToolCall(call_id, name, args) if name in client_names else ApprovalRequest(call_id, name, args)
        )
    state = result.to_state().to_json(context_serializer=context_json)
    return Pause(asks, PausedState(start_agent, state))


# --- asks and answers as stored parts ------------------------------------------------------------------------------


def part_of(ask: Ask) -> Part:
    """The stored part of an ask, unanswered."""
    match ask:
        case ApprovalRequest(id=call_id, name=name, args=args):
            return {"type": "approval", "id": call_id, "name": name, "args": args, "decision": None}
        case ClientToolCall(id=call_id, name=name, args=args):
            return {"type": "client_tool", "id": call_id, "name": name, "args": args, "result": None}
        case _:
            assert_never(ask)


def waiting(parts: Iterable[Part]) -> list[Ask]:
    """The asks of a reply's stored parts that nobody answered yet, in order."""
    asks: list[Ask] = []
    for part in parts:
        match part:
            case {"type": "approval", "id": str(call_id)} if part.get("decision") is None:
                asks.append(ApprovalRequest(call_id, str(part.get("name", "")), dict(part.get("args") or {})))
            case {"type": "client_tool", "id": str(call_id)} if part.get("result") is None:
                asks.append(ClientToolCall(call_id, str(part.get("name", "")), dict(part.get("args") or {})))
    return asks


def answered(part: Part, answer: Answer) -> Part:
    """The stored part of an ask with its answer folded in (the part itself when the answer is not for it)."""
    if part.get("id") != answer.id:
        return part
    kind = part.get("type")
    match answer:
        case Approved(reason=reason):
            return {**part, "decision": "approved", "reason": reason} if kind == "approval" else part
        case Rejected(reason=reason):
            return {**part, "decision": "rejected", "reason": reason} if kind == "approval" else part
        case ClientResult():
            return part  # the resumed run's `tool_result` event fills it in
        case Cancelled():
            if kind == "approval":
                return {**part, "decision": "cancelled"}
            return {**part, "result": NO_RESULT} if kind == "client_tool" else part
        case _:
            assert_never(answer)


def cancelled(parts: Sequence[Part]) -> list[Part]:
    """A paused reply's parts once a new user message cancelled everything it still waited for."""
    waits = {(type(ask), ask.id) for ask in waiting(parts)}
    return [
        answered(part, Cancelled(part["id"]))
        if (_ASK_OF_PART.get(part.get("type", "")), part.get("id")) in waits
        else part
        for part in parts
    ]


_ASK_OF_PART: dict[str, type[Ask]] = {"approval": ApprovalRequest, "client_tool": ClientToolCall}


# --- answering a pause ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answers:
    """The answers to every ask of a paused reply: the user's decisions and the browser's results, by call id."""

    decisions: dict[str, Decision] = field(default_factory=dict)
    results: dict[str, ClientResult] = field(default_factory=dict)

    def fold(self, parts: Iterable[Part]) -> list[Part]:
        """The reply's parts with the decisions folded in (what the resumed reply starts from)."""
        folded = []
        for part in parts:
            decision = self.decisions.get(part.get("id", "")) if part.get("type") == "approval" else None
            folded.append(answered(part, decision) if decision is not None else dict(part))
        return folded

    def client_results(self) -> dict[str, str]:
        """The browser's results as the client tools return them to the model (JSON text, by call id)."""
        return {call_id: json.dumps(r.result, ensure_ascii=False) for call_id, r in self.results.items()}


def answers_to(
    parts: Sequence[Part],
    decisions: Sequence[Decision],
    results: Sequence[ClientResult],
    *,
    skip_settled: bool = False,
) -> Answers:
    """Check a request's answers against what the paused reply waits for.

    Args:
        parts: The paused reply's stored parts.
        decisions: The user's approvals and refusals.
        results: The browser's client-tool results.
        skip_settled: Drop answers to calls that wait for nothing (a client that resends every tool result it has)
            instead of refusing them.

    Raises:
        ConflictError: An answer names nothing that waits (`not_pending`).
        InvalidInputError: Something that waits has no answer, or a result is over `MAX_RESULT_BYTES`.
    """
    asks = waiting(parts)
    approvals_waiting = {ask.id for ask in asks if isinstance(ask, ApprovalRequest)}
    clients_waiting = {ask.id for ask in asks if isinstance(ask, ClientToolCall)}
    by_id: dict[str, Decision] = {d.id: d for d in decisions if not skip_settled or d.id in approvals_waiting}
    results_by_id = {r.id: r for r in results if not skip_settled or r.id in clients_waiting}
    unknown = (by_id.keys() - approvals_waiting) | (results_by_id.keys() - clients_waiting)
    if unknown:
        raise ConflictError(
            f"Nothing pending has the id {sorted(unknown)[0]!r}, or it was already answered.", code="not_pending"
        )
    missing = (approvals_waiting - by_id.keys()) | (clients_waiting - results_by_id.keys())
    if missing:
        raise InvalidInputError(f"answer every pending item; missing: {', '.join(sorted(missing))}")
    for result in results_by_id.values():
        if len(json.dumps(result.result, ensure_ascii=False).encode()) > MAX_RESULT_BYTES:
            raise InvalidInputError(f"the result of {result.id}: at most {MAX_RESULT_BYTES} bytes as JSON")
    return Answers(by_id, results_by_id)


@dataclass(frozen=True, slots=True)
class Resume:
    """How a paused run continues: its stored state, loaded from its starting agent, with the decisions applied.

    The resumed `TurnRun` calls `state(context)` when it starts, with the context of its own run.
    """

    agent: Agent[ChatContext]
    stored: PausedState
    answers: Answers

    async def state(self, context: ChatContext) -> RunState[ChatContext]:
        """Load the run's state and approve or reject each interruption (a client tool's is approved: it ran)."""
        wrapped = RunContextWrapper(context=context)  # what the SDK builds from a bare context, typed
        state = await RunState.from_json(self.agent, dict(self.stored.state), context_override=wrapped)
        for item in state.get_interruptions():
            decision = self.answers.decisions.get(item.call_id or "")
            match decision:
                case Rejected(reason=reason):
                    state.reject(item, rejection_message=rejection_output(reason))
                case Approved() | None:
                    state.approve(item)
                case _:
                    assert_never(decision)
        return state
