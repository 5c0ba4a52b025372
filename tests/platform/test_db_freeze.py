"""Issue 18 §7: a frozen PostgreSQL cannot hang a request or a reply.

A TCP proxy in front of PostgreSQL stops passing bytes without closing anything (`TcpProxy.freeze`): what a stopped
server process, or a network that drops packets without a reset, looks like. Requests that hold a pooled connection
must answer 503 `database_unavailable` (each round trip is bounded by `DB_CALL_TIMEOUT_SECONDS`, a new connection by
`DB_CONNECT_TIMEOUT_SECONDS`), a running reply must still end with `done` (its save gives up after
`SAVE_RETRY_SECONDS`), and everything must work again once the proxy thaws. Nothing here asserts a duration: the
proxy stays frozen until every answer is in, so an answer that only came because the database came back fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.engine import make_url

from backend.db import BoundedAsyncConnection, create_database, libpq_dsn
from backend.settings import Settings
from tests.conftest import live
from tests.fakes.gemini import FakeGemini, text_turn
from tests.fakes.tcpproxy import TcpProxy
from tests.sse import chat

pytestmark = pytest.mark.timeout(180)

FROZEN_FOR_AT_MOST = 90.0
"""A hang guard, not a measurement: without the bounds the answers only come once the proxy thaws."""


async def test_requests_answer_503_and_a_reply_ends_while_the_database_is_frozen_and_all_recovers(
    gemini_settings: Callable[..., Settings], fake: FakeGemini, clean_db: str
) -> None:
    if not clean_db.startswith("postgresql"):
        pytest.skip("a frozen server is a PostgreSQL failure; SQLite is in-process")
    target = make_url(clean_db)
    async with TcpProxy(target.host or "127.0.0.1", target.port or 5432) as proxy:
        settings = gemini_settings(
            database_url=make_url(clean_db).set(host="127.0.0.1", port=proxy.port).render_as_string(False),
            db_call_timeout_seconds=2.0,
            db_statement_timeout_seconds=1.0,
            db_lock_timeout_seconds=1.0,
            db_connect_timeout_seconds=2.0,
            save_retry_seconds=2.0,
        )
        async with live(settings) as client:
            for title in ("one", "two"):  # the pool holds open connections when the freeze comes
                assert (await client.post("/api/tasks", json={"title": title})).status_code == 201
            fake.script(text_turn([f"w{i} " for i in range(30)], delay=0.2))
            reply = asyncio.create_task(chat(client, {"message": "a long reply"}))
            await fake.wait_until(lambda f: len(f.requests) == 1, within=10)
            await asyncio.sleep(0.5)

            proxy.freeze()
            thawed = False
            calls = [
                client.get("/api/tasks"),
                client.post("/api/tasks", json={"title": "during"}),
                client.get("/api/conversations"),
                client.get("/api/tasks"),
            ]
            outcome = asyncio.gather(asyncio.gather(*calls), reply)
            done, _ = await asyncio.wait({asyncio.ensure_future(outcome)}, timeout=FROZEN_FOR_AT_MOST)
            proxy.thaw()
            thawed = True
            assert done, "requests and the reply hung for as long as the database was frozen"
            responses, stream = await outcome

            for response in responses:
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "database_unavailable"
            assert stream.status == 200 and stream.types[-1] == "done", stream.types[-3:]
            assert stream.events[-1]["finish_reason"] in {"error", "stop"}
            assert thawed

            for _ in range(100):  # the pool replaces the connections the freeze closed
                listed = await client.get("/api/tasks")
                if listed.status_code == 200:
                    break
                await asyncio.sleep(0.2)
            assert listed.status_code == 200, listed.text
            assert {task["title"] for task in listed.json()["data"]} >= {"one", "two"}
            fake.script(text_turn("back"))
            again = await chat(client, {"message": "and now"})
            assert again.status == 200 and again.events[-1]["finish_reason"] == "stop", again.events[-2:]
            assert (await client.get("/ready")).status_code == 200


async def test_every_postgres_connection_has_keepalives_and_a_tcp_user_timeout(
    make_settings: Callable[..., Settings], clean_db: str
) -> None:
    """The pool's connections and the LISTEN connection (built from `libpq_dsn` of the engine's URL) alike."""
    if not clean_db.startswith("postgresql"):
        pytest.skip("libpq parameters")
    database = create_database(make_settings(db_call_timeout_seconds=7.5))
    try:
        expected = {
            "keepalives": "1",
            "keepalives_idle": "5",
            "keepalives_interval": "2",
            "keepalives_count": "3",
            "tcp_user_timeout": "7500",
        }
        listen = conninfo_to_dict(libpq_dsn(database.engine.url))
        assert {key: listen.get(key) for key in expected} == expected
        async with database.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert isinstance(raw, BoundedAsyncConnection) and raw.call_timeout == 7.5
            pooled = conninfo_to_dict(raw.info.dsn)
        assert {key: pooled.get(key) for key in expected} == expected
    finally:
        await database.dispose()
