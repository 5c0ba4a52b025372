"""What the database costs one chat turn in this process, on PostgreSQL (issue 24's "fewer or cheaper statements").

Runs the store's side of the bench's tool turn many times, without a model, and reports this process's CPU (the
loop thread's) and the wall time per turn, medians of `--turns` turns in each of three rounds:
- *begin*: `begin_turn` of a new conversation (the default `MAX_TURNS_PER_USER`: the per-user lock and the count,
  the conversation, the user message and the `in_progress` reply);
- *finish*: `finish_turn` of that reply as the bench's tool turn ends it: a handoff, a tool call with its result, a
  100-token text, three model calls in the usage ledger, the last 20 events of its log;
- *turn*: both.

    .venv/bin/python -m tests.bench.turn_store [--pg URL] [--turns 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid

import uvloop

from backend.chat.events import Agent, Done, Text, ToolCall, ToolResult, Usage
from backend.chat.history import turn_items
from backend.chat.reply import Reply
from backend.chat.store import ConversationStore, Outcome, StoredEvent, TurnRequest
from backend.db import Database, create_database
from backend.models import MessageStatus
from backend.settings import Settings
from backend.usage.ledger import ModelCall, ledger_rows
from tests.bench.dbpath import migrated_database

DB = "chatkit_turn_store_bench"


def fresh(admin: str) -> str:
    return migrated_database(admin, DB)


def _outcome(user_id: str, conversation_id: uuid.UUID, message_id: uuid.UUID) -> tuple[Outcome, list[StoredEvent]]:
    reply = Reply()
    events = [
        Agent("task_assistant"),
        ToolCall("call_1", "list_tasks", {}),
        ToolResult("call_1", "list_tasks", "[]"),
        *(Text(f"word{n} ") for n in range(10)),
    ]
    for event in events:
        reply.add(event)
    reply.agent = "task_assistant"
    usage = Usage(300, 100, 400)
    calls = [ModelCall("triage", "gemini/gemini-2.5-flash", 100, 10, 110, cost_usd=0.0001) for _ in range(3)]
    outcome = Outcome(
        status=MessageStatus.COMPLETE,
        reply=reply,
        usage=usage,
        items=turn_items([], reply.text, MessageStatus.COMPLETE),
        ledger=ledger_rows(user_id, conversation_id, message_id, calls),
    )
    logged = [StoredEvent.of(n + 1, event) for n, event in enumerate(events)]
    logged.append(StoredEvent.of(len(logged) + 1, Done(str(conversation_id), str(message_id), "stop", usage)))
    return outcome, logged[-20:]


async def measure(url: str, turns: int) -> dict[str, tuple[float, float]]:
    settings = Settings(database_url=url)  # type: ignore[call-arg]
    database: Database = create_database(settings)
    store = ConversationStore(
        database, instance_id=uuid.uuid4(), stale_after_seconds=30, max_turn_seconds=600, history_max_items=200
    )
    try:
        await store.heartbeat()
        figures: dict[str, list[tuple[float, float]]] = {"begin": [], "finish": [], "turn": []}
        for _ in range(3):
            got: dict[str, list[tuple[float, float]]] = {name: [] for name in figures}
            for n in range(turns + 20):  # the first 20 warm the pool and the plan caches
                request = TurnRequest(
                    user_id=f"u{n % 50}", message="what are my tasks?", conversation_id=None, max_running=10**6
                )
                c0, w0 = time.thread_time(), time.perf_counter()
                begun = await store.begin_turn(request)
                c1, w1 = time.thread_time(), time.perf_counter()
                assert not isinstance(begun, tuple)
                outcome, events = _outcome(request.user_id, begun.conversation_id, begun.message_id)
                c2, w2 = time.thread_time(), time.perf_counter()
                saved = await store.finish_turn(
                    begun.conversation_id, begun.message_id, outcome, events, retry_seconds=1
                )
                c3, w3 = time.thread_time(), time.perf_counter()
                assert saved == "saved", saved
                if n >= 20:
                    got["begin"].append((c1 - c0, w1 - w0))
                    got["finish"].append((c3 - c2, w3 - w2))
                    got["turn"].append((c1 - c0 + c3 - c2, w1 - w0 + w3 - w2))
            for name, values in got.items():
                figures[name].append((statistics.median(c for c, _ in values), statistics.median(w for _, w in values)))
        return {
            name: (statistics.median(c for c, _ in got) * 1e3, statistics.median(w for _, w in got) * 1e3)
            for name, got in figures.items()
        }
    finally:
        await database.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--turns", type=int, default=300)
    args = parser.parse_args()
    results = uvloop.run(measure(fresh(args.pg), args.turns))  # the server's loop
    out = sys.stdout
    out.write("| part of the turn | CPU ms (median) | wall ms (median) |\n|---|---|---|\n")
    for name, (cpu, wall) in results.items():
        out.write(f"| {name} | {cpu:.3f} | {wall:.3f} |\n")


if __name__ == "__main__":
    main()
