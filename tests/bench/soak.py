"""A soak: concurrent streams with rejoins against a real server process, for minutes (not in CI).

    .venv/bin/python -m tests.bench.soak --database sqlite --minutes 10
    TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench .venv/bin/python -m tests.bench.soak \
        --database postgres --minutes 10

A server process (`python -m backend`, as in production) on a fresh SQLite file or on the given PostgreSQL database
(migrated, then emptied), and the fake Gemini in this process. `--streams` clients loop until the time is up: each
sends a message to its conversation, and either reads the reply to its end or drops the connection after a few
events and rejoins with `Last-Event-ID`; every few turns it also rejoins the finished turn from the start right after
its end (the moment issue 18 found gaps at). Checked for every turn:

* replies lost: the stored message is not `complete` with the whole reply, or a stream did not end with `done` and
  `[DONE]`;
* rejoins with gaps: a rejoin's event ids are not exactly the ones after its `Last-Event-ID`, to the end.

Reported: turns, rejoins, both counts, and the server's RSS and open file descriptors (its whole process tree) after
a warm-up and at the end. Nothing is asserted; the figures go to stdout, the last line as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import command
from backend.db import alembic_config
from backend.settings import normalize_database_url
from tests.bench.procstat import tree, tree_rss
from tests.conftest import TABLES
from tests.fakes.gemini import FakeGemini, text_turn
from tests.servers import server_env, server_process
from tests.sse import Stream, chat, rejoin

WORDS = [f"word{i} " for i in range(60)]
REPLY = "".join(WORDS)


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@dataclass
class Figures:
    """What the soak counted and measured."""

    database: str
    minutes: float
    streams: int
    turns: int = 0
    rejoins: int = 0
    replies_lost: int = 0
    rejoins_with_gaps: int = 0
    errors: int = 0
    rss_start_mib: float = 0.0
    rss_end_mib: float = 0.0
    fds_start: int = 0
    fds_end: int = 0


def _fds(pids: list[int]) -> int:
    count = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            count += len(os.listdir(f"/proc/{pid}/fd"))
    return count


def _ids(stream: Stream) -> list[int]:
    return [f.id for f in stream.frames if f.id is not None]


def _ends_well(stream: Stream) -> bool:
    return (
        stream.status == 200 and bool(stream.events) and stream.types[-1] == "done" and stream.frames[-1].done_sentinel
    )


class Soak:
    """The client side: `streams` loops of turns and rejoins until a deadline."""

    def __init__(self, client: httpx.AsyncClient, figures: Figures, deadline: float) -> None:
        self.client = client
        self.figures = figures
        self.deadline = deadline

    def _gap(self, stream: Stream, after: int) -> bool:
        ids = _ids(stream)
        return not _ends_well(stream) or ids != list(range(after + 1, after + 1 + len(ids)))

    async def _rejoin(self, message_id: str, after: int) -> Stream:
        stream = await rejoin(self.client, message_id, last_event_id=after)
        self.figures.rejoins += 1
        if self._gap(stream, after):
            self.figures.rejoins_with_gaps += 1
        return stream

    async def _turn(self, rng: random.Random, conversation_id: str | None) -> str | None:
        body: dict[str, object] = {"message": "tell me more"}
        if conversation_id is not None:
            body["thread_id"] = conversation_id
        drop = rng.random() < 0.5
        first = await chat(self.client, body, stop_after_texts=rng.randint(1, 20) if drop else None)
        if first.status != 200 or not first.events:
            self.figures.errors += 1
            return conversation_id
        self.figures.turns += 1
        conversation_id = first.events[0]["conversation_id"]
        message_id = first.events[0]["message_id"]
        if drop:
            rest = await self._rejoin(message_id, first.last_id)
            text = first.text + rest.text
        else:
            text = first.text
            if not _ends_well(first):
                self.figures.replies_lost += 1
        if rng.random() < 0.3:
            await self._rejoin(message_id, 0)  # right after the end
        detail = (await self.client.get(f"/api/conversations/{conversation_id}")).json()
        stored = next((m for m in detail["messages"] if m["id"] == message_id), None)
        if stored is None or stored["status"] != "complete" or stored["content"] != REPLY or text != REPLY:
            self.figures.replies_lost += 1
        return conversation_id

    async def loop(self, seed: int) -> None:
        rng = random.Random(seed)
        conversation_id: str | None = None
        turns = 0
        while time.monotonic() < self.deadline:
            try:
                conversation_id = await self._turn(rng, conversation_id)
            except (httpx.HTTPError, KeyError, ValueError):
                self.figures.errors += 1
                await asyncio.sleep(0.5)
            turns += 1
            if turns % 20 == 0:
                conversation_id = None  # a new conversation now and then: histories stay short


async def _prepare(database: str, url: str | None, workdir: Path) -> str:
    if database == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'soak.db'}"
    elif url is None:
        raise SystemExit("--database postgres needs --database-url or TEST_DATABASE_URL")
    url = normalize_database_url(url)
    await asyncio.to_thread(command.upgrade, alembic_config(url=url), "head")
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        for table in TABLES:
            await conn.execute(text(f"DELETE FROM {table}"))
    await engine.dispose()
    return url


# `--limits`: every quota and rate limit on, set high enough never to refuse, so each turn's admission (usage read,
# message counted, running-turns lock and count) runs under the soak's load.
LIMITS_ON = {
    "TOKENS_PER_DAY": str(10**12),
    "TOKENS_PER_MONTH": str(10**12),
    "USD_PER_MONTH": str(10**9),
    "MESSAGES_PER_MINUTE": str(10**9),
    "MAX_TURNS_PER_USER": str(10**6),
}


async def run(database: str, url: str | None, minutes: float, streams: int, *, limits: bool = False) -> Figures:
    figures = Figures(database=database, minutes=minutes, streams=streams)
    with tempfile.TemporaryDirectory() as workdir:
        url = await _prepare(database, url, Path(workdir))
        async with FakeGemini(default_turn=text_turn(WORDS, delay=0.02)) as fake:
            env = server_env(
                url,
                fake.base_url,
                FILE_STORAGE_DIR=str(Path(workdir) / "files"),
                **(LIMITS_ON if limits else {"MAX_TURNS_PER_USER": "0"}),  # every stream is the one local user
            )
            async with (
                server_process(env) as server,
                httpx.AsyncClient(base_url=server.base_url, timeout=60) as client,
            ):
                pid = server.process.pid
                warm = Soak(client, figures, time.monotonic() + 5)
                await asyncio.gather(*(warm.loop(-i) for i in range(streams)))
                figures.turns = figures.rejoins = figures.replies_lost = figures.rejoins_with_gaps = 0
                figures.errors = 0
                pids = tree(pid)
                figures.rss_start_mib = round(tree_rss(pids) / 2**20, 1)
                figures.fds_start = _fds(pids)
                _out(f"after warm-up: RSS {figures.rss_start_mib} MiB, {figures.fds_start} open descriptors")
                soak = Soak(client, figures, time.monotonic() + minutes * 60)
                reporter = asyncio.create_task(_report(figures))
                await asyncio.gather(*(soak.loop(i) for i in range(streams)))
                reporter.cancel()
                await asyncio.sleep(1.0)  # the last turns' background work settles
                pids = tree(pid)
                figures.rss_end_mib = round(tree_rss(pids) / 2**20, 1)
                figures.fds_end = _fds(pids)
    return figures


async def _report(figures: Figures) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(30)
        _out(
            f"{(time.monotonic() - started) / 60:.1f} min: {figures.turns} turns, {figures.rejoins} rejoins, "
            f"{figures.replies_lost} lost, {figures.rejoins_with_gaps} with gaps, {figures.errors} errors"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--limits", action="store_true", help="every quota and rate limit on (none refusing)")
    args = parser.parse_args()
    figures = asyncio.run(run(args.database, args.database_url, args.minutes, args.streams, limits=args.limits))
    _out(
        f"{figures.database}, {figures.minutes} min, {figures.streams} streams: {figures.turns} turns, "
        f"{figures.rejoins} rejoins; replies lost {figures.replies_lost}, rejoins with gaps "
        f"{figures.rejoins_with_gaps}, errors {figures.errors}; RSS {figures.rss_start_mib} -> "
        f"{figures.rss_end_mib} MiB, open descriptors {figures.fds_start} -> {figures.fds_end}"
    )
    _out(json.dumps(asdict(figures)))


if __name__ == "__main__":
    main()
