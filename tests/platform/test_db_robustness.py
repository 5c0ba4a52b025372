"""Database robustness: every wait is bounded (503, never a hang), the schema is checked at start-up and by `/ready`,
and SQLite writers queue for the one writer slot instead of failing. Both databases unless a test says otherwise."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from backend import db as db_module
from backend.app import create_app
from backend.db import (
    MIN_SQLITE,
    SchemaNotCurrentError,
    UnsupportedDatabaseError,
    check_sqlite_version,
    create_database,
    head_revision,
    libpq_dsn,
    schema_status,
)
from backend.models import Conversation, Task, TaskCreate
from backend.settings import PROJECT_ROOT, Settings, load_settings
from backend.tasks import service as task_service
from tests.conftest import error_of, serve
from tests.fakes.tcpproxy import TcpProxy
from tests.seeding import client_for, count_rows, loopback_client
from tests.sse import chat

DB_UNAVAILABLE = {"error": {"code": "database_unavailable", "message": "The database is unavailable."}}
NOT_MIGRATED = {
    "error": {"code": "database_not_migrated", "message": "The database schema is not at this server's migration head."}
}
CONCURRENCY = 200


def is_postgres(url: str) -> bool:
    return url.startswith("postgresql")


@asynccontextmanager
async def table_locked(url: str, table: str) -> AsyncIterator[None]:
    """Hold the strongest lock on `table` (PostgreSQL) or the writer slot (SQLite) from a separate connection."""
    if is_postgres(url):
        conn = await psycopg.AsyncConnection.connect(libpq_dsn(url))
        try:
            await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")  # opens a transaction
            yield
        finally:
            await conn.rollback()
            await conn.close()
    else:
        # The app's own background writers (heartbeat, event log, file sweep) may hold the slot for a moment: wait for
        # it in a thread, so the event loop those writers run on can finish and let go (waiting on the loop would
        # deadlock until the timeout).
        path = url.removeprefix("sqlite+aiosqlite:///")
        conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        try:
            await asyncio.to_thread(conn.execute, "BEGIN IMMEDIATE")
            yield
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()


# --- 5: timeouts and the 503 mapping -------------------------------------------------------------------------------


@pytest.mark.timeout(60)  # the hang this guards against would otherwise run into the default timeout
@pytest.mark.parametrize("expiring", ["lock_timeout", "statement_timeout"])
async def test_a_locked_table_answers_503_then_recovers(make_settings, database_url, expiring):
    if expiring == "statement_timeout" and not is_postgres(database_url):
        pytest.skip("SQLite has no statement timeout; a held writer slot is bounded by the lock timeout")
    short, long = 1.0, 60.0
    settings = make_settings(
        db_lock_timeout_seconds=short if expiring == "lock_timeout" else long,
        db_statement_timeout_seconds=short if expiring == "statement_timeout" else long,
        sqlite_busy_timeout_seconds=short,
    )
    async with client_for(settings) as client:
        assert (await client.post("/api/tasks", json={"title": "before"})).status_code == 201
        async with table_locked(database_url, "tasks"):
            for method, path, payload in [("GET", "/api/tasks", None), ("POST", "/api/tasks", {"title": "during"})]:
                response = await client.request(method, path, json=payload)
                assert response.status_code == 503, (method, path, response.text)
                assert error_of(response) == DB_UNAVAILABLE
        listed = await client.get("/api/tasks")
        assert listed.status_code == 200
        assert [task["title"] for task in listed.json()["data"]] == ["before"]


def _wrapped(orig: Exception) -> OperationalError:
    return OperationalError("SELECT secret_column FROM secret_table", {}, orig)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(lambda: _wrapped(psycopg.errors.ConnectionTimeout("connection timeout expired")), id="connect"),
        pytest.param(lambda: _wrapped(psycopg.errors.QueryCanceled("canceling statement")), id="statement"),
        pytest.param(lambda: _wrapped(psycopg.errors.LockNotAvailable("lock timeout")), id="lock"),
        pytest.param(lambda: _wrapped(sqlite3.OperationalError("database is locked")), id="sqlite-locked"),
        pytest.param(lambda: psycopg.errors.ConnectionTimeout("raw, not wrapped"), id="raw-psycopg"),
    ],
)
async def test_every_database_timeout_is_503(client, monkeypatch, error):
    async def fail(*args: Any, **kwargs: Any) -> Any:
        raise error()

    monkeypatch.setattr(task_service, "list_tasks", fail)
    response = await client.get("/api/tasks")
    assert response.status_code == 503
    assert error_of(response) == DB_UNAVAILABLE
    assert "secret" not in response.text


async def test_sql_parameters_stay_out_of_errors(settings):
    database = create_database(settings)
    task_id = uuid.uuid4()
    try:
        for _ in range(2):
            async with database.sessions() as session:
                session.add(Task(id=task_id, user_id="local", title="secret-parameter-value"))
                try:
                    await session.commit()
                except IntegrityError as error:
                    assert "secret-parameter-value" not in str(error)
                    assert "hidden due to hide_parameters" in str(error)
                    break
        else:
            pytest.fail("the duplicate primary key was accepted")
    finally:
        await database.dispose()


@pytest.mark.timeout(25)  # hang guard: the connect and statement timeouts below are 60 s, so only /ready's deadline
async def test_ready_answers_503_when_the_server_freezes(make_settings, database_url):
    if not is_postgres(database_url):
        pytest.skip("a frozen server is a PostgreSQL failure; SQLite is in-process")
    url = httpx.URL(database_url.replace("postgresql+psycopg", "http"))
    async with TcpProxy(url.host, url.port or 5432) as proxy:
        settings = make_settings(
            database_url=database_url.replace(f"{url.host}:{url.port}", f"127.0.0.1:{proxy.port}"),
            db_connect_timeout_seconds=60,
            db_statement_timeout_seconds=60,
        )
        # Real uvicorn in this event loop: the proxy runs here too (the in-process test client blocks this loop).
        async with serve(create_app(settings)) as base, httpx.AsyncClient(base_url=base, timeout=60) as client:
            assert (await client.get("/ready")).json() == {"status": "ready"}
            proxy.freeze()
            response = await client.get("/ready")
            assert response.status_code == 503
            assert error_of(response) == DB_UNAVAILABLE
            assert (await client.get("/health")).json() == {"status": "ok"}
            proxy.thaw()  # let the app close its connections on shutdown


@pytest.mark.parametrize("with_poll", [True, False], ids=["poll", "select"])
def test_a_socket_is_readable_only_once_its_peer_wrote_or_closed(monkeypatch, with_poll):
    if not with_poll:
        monkeypatch.delattr(db_module.select, "poll")  # the Windows path
    ours, server = socket.socketpair()
    with ours, server:
        assert not db_module._readable(ours.fileno())
        server.sendall(b"E")  # e.g. PostgreSQL's FATAL before it closes the session
        assert db_module._readable(ours.fileno())
        ours.recv(1)
        assert not db_module._readable(ours.fileno())
        server.close()
        assert db_module._readable(ours.fileno())


async def backend_pids(database: Any, count: int) -> list[int]:
    """Check out `count` pooled connections at once and return their PostgreSQL backend pids."""
    held = asyncio.Event()
    pids: list[int] = []

    async def one() -> None:
        async with database.engine.connect() as conn:
            pids.append((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            if len(pids) == count:
                held.set()
            await held.wait()  # hold it, so that the others open connections of their own

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), 10)
    return pids


async def test_pooled_connections_the_server_closed_are_replaced_without_an_error(settings, database_url):
    """A database restart ends every pooled session; the next checkouts notice it (with no ping round trip) and
    open fresh connections, so no request fails."""
    if not is_postgres(database_url):
        pytest.skip("SQLite has no server to close a connection")
    database = create_database(settings)
    try:
        before = await backend_pids(database, 3)
        async with await psycopg.AsyncConnection.connect(libpq_dsn(database_url), autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (before,))
            for _ in range(100):  # the backends end (and close their sockets) a moment after the signal
                gone = await admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (before,))
                if (await gone.fetchone()) == (0,):
                    break
                await asyncio.sleep(0.05)
        after = await backend_pids(database, 3)
        assert not set(after) & set(before)
        async with database.sessions() as session:  # and the ORM path works on the fresh connections
            await task_service.create_task(session, "u", TaskCreate(title="after the restart"))
    finally:
        await database.dispose()


# --- 6: the schema check -------------------------------------------------------------------------------------------


def pretend_head(monkeypatch: pytest.MonkeyPatch, head: str, *, knows_current: bool) -> None:
    """Make this code's head `head`; the database's real revision stays known (behind) or not (ahead)."""
    known = {head, head_revision()} if knows_current else {head}
    monkeypatch.setattr(db_module, "_script_revisions", lambda: (head, frozenset(known)))


async def test_schema_status_current_behind_ahead(settings, monkeypatch):
    database = create_database(settings)
    try:
        assert await schema_status(database) == "current"
        pretend_head(monkeypatch, "f" * 12, knows_current=True)
        assert await schema_status(database) == "behind"
        pretend_head(monkeypatch, "f" * 12, knows_current=False)
        assert await schema_status(database) == "ahead"
    finally:
        await database.dispose()


async def test_schema_status_of_a_never_migrated_database(tmp_path: Path):
    database = create_database(load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"))
    try:
        assert await schema_status(database) == "empty"
    finally:
        await database.dispose()


async def test_app_refuses_to_start_on_a_database_that_is_behind(make_settings, monkeypatch):
    pretend_head(monkeypatch, "f" * 12, knows_current=True)
    with pytest.raises(BaseException) as caught:  # the lifespan's error arrives in an ExceptionGroup
        async with AsyncTestClient(app=create_app(make_settings(migrate_on_startup=False))):
            pass
    assert caught.group_contains(SchemaNotCurrentError, match=r"is behind .*alembic upgrade head.*MIGRATE_ON_STARTUP")


async def test_app_starts_on_a_database_migrated_by_newer_code(make_settings, monkeypatch):
    pretend_head(monkeypatch, "f" * 12, knows_current=False)
    async with loopback_client(create_app(make_settings())) as client:
        assert (await client.get("/ready")).json() == {"status": "ready"}


async def test_ready_says_not_migrated_when_the_schema_falls_behind(client, monkeypatch):
    assert (await client.get("/ready")).json() == {"status": "ready"}
    pretend_head(monkeypatch, "f" * 12, knows_current=True)
    response = await client.get("/ready")
    assert response.status_code == 503
    assert error_of(response) == NOT_MIGRATED


def run_backend(database_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PORT": "1",  # never reached: start-up stops first
        "AUTH_SECRET": "",
        "HOST": "127.0.0.1",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "backend"],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_python_m_backend_refuses_an_unmigrated_database_with_one_line(tmp_path: Path):
    result = run_backend(f"sqlite+aiosqlite:///{tmp_path / 'never.db'}", MIGRATE_ON_STARTUP="false")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: the database at DATABASE_URL has never been migrated (this code needs revision {head_revision()}); "
        "run `alembic upgrade head` or set MIGRATE_ON_STARTUP=true"
    )


# --- 7: SQLite writers wait their turn -----------------------------------------------------------------------------


@pytest.fixture
async def live(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    settings = make_settings(max_turns_per_user=0)  # the 200 streams are one user's: no per-user limit here
    async with serve(create_app(settings)) as base, httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as c:
        yield c


@pytest.mark.timeout(240)
async def test_200_concurrent_task_creations_all_succeed(live, db):
    responses = await asyncio.gather(
        *(live.post("/api/tasks", json={"title": f"task {i}"}) for i in range(CONCURRENCY))
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] * CONCURRENCY, {s: statuses.count(s) for s in set(statuses)}
    assert await count_rows(db, Task) == CONCURRENCY


@pytest.mark.timeout(240)
async def test_200_concurrent_new_conversations_all_succeed(live, db, database_url):
    streams = await asyncio.gather(*(chat(live, {"message": f"add item {i}"}) for i in range(CONCURRENCY)))
    statuses = sorted(stream.status for stream in streams)
    if is_postgres(database_url):
        # 200 open streams outgrow the 30-connection pool: the excess is told so (503), never hangs or 500s.
        assert set(statuses) <= {200, 503}, {s: statuses.count(s) for s in set(statuses)}
        assert all(stream.error_body == DB_UNAVAILABLE for stream in streams if stream.status == 503)
    else:
        assert statuses == [200] * CONCURRENCY, {s: statuses.count(s) for s in set(statuses)}
    completed = [stream for stream in streams if stream.status == 200]
    for stream in completed:
        assert stream.types[0] == "start"
        assert "error" not in stream.types, stream.of("error")
        assert stream.of("done")[0]["finish_reason"] == "stop"
    assert await count_rows(db, Conversation) == len(completed)
    assert await count_rows(db, Task) == len(completed)


async def test_a_nul_character_is_stored_under_the_text_policy_the_same_on_both_databases(client):
    response = await client.post("/api/tasks", json={"title": "nul\u0000byte"})  # PostgreSQL text cannot hold NUL
    assert response.status_code == 201
    assert response.json()["title"] == "nul\ufffdbyte"
    assert (await client.get(f"/api/tasks/{response.json()['id']}")).json()["title"] == "nul\ufffdbyte"


async def test_an_sqlite_older_than_the_floor_is_refused_at_start_up_in_one_line(make_settings, monkeypatch):
    check_sqlite_version(MIN_SQLITE)
    with pytest.raises(UnsupportedDatabaseError, match=r"SQLite is 3\.34\.1; 3\.35\.0 or later is needed"):
        check_sqlite_version((3, 34, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    settings = make_settings()
    if not settings.database_url.startswith("sqlite"):
        return  # PostgreSQL does not care which SQLite this Python has
    with pytest.raises(BaseException) as caught:  # the lifespan's error arrives in an ExceptionGroup
        async with AsyncTestClient(app=create_app(settings)):
            pass
    assert caught.group_contains(UnsupportedDatabaseError, match=r"or use PostgreSQL")
