"""Database engine, per-request sessions and migrations, for PostgreSQL (psycopg 3) and SQLite (aiosqlite)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import select
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import psycopg
import sqlmodel
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from litestar.datastructures import State
from sqlalchemy import (
    ColumnClause,
    ColumnElement,
    String,
    Table,
    TableValuedAlias,
    bindparam,
    cast,
    event,
    func,
    text,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from alembic import command
from backend.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

PING_DEADLINE_SECONDS = 1.5
"""`/ready` gives up after this, whatever the connect timeout, so a probe never waits on a frozen server."""
POSTGRES_POOL_TIMEOUT_SECONDS = 10
"""How long a request waits for a free pooled PostgreSQL connection before 503."""
SQLITE_POOL_TIMEOUT_SECONDS = 30
"""SQLite has one writer at a time: requests queue for a connection rather than fail."""

SchemaStatus = Literal["current", "behind", "ahead", "empty"]
"""Where the database's Alembic revision stands against this code's head (see `schema_status`)."""


@dataclass(frozen=True, slots=True)
class Database:
    """The engine and the session factories of one app instance."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    """Sessions for work that writes: each is one transaction, committed explicitly."""
    reads: async_sessionmaker[AsyncSession]
    """Sessions for a read that needs no transaction around it (one statement, or reads that may each see the
    latest commit): on PostgreSQL in autocommit, which saves the `BEGIN` and `ROLLBACK` round trips; on SQLite a
    plain `BEGIN`, so a read does not queue for the writer slot. Never write through one."""
    autocommit: AsyncEngine
    """PostgreSQL: the engine in autocommit, for a write that is one statement (its own transaction, without the
    `BEGIN` and `COMMIT` round trips). SQLite: the engine itself; write through it only on PostgreSQL."""

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def _sqlite_listeners(busy_timeout_ms: int) -> tuple[Any, Any]:
    """The `connect` and `begin` listeners that make SQLite writers queue instead of failing.

    SQLite allows one writer. A transaction that starts as a reader (`BEGIN DEFERRED`, the default) and later writes
    gets `database is locked` at once when another writer committed in between: the busy timeout cannot help it.
    Starting every transaction with `BEGIN IMMEDIATE` takes the writer slot up front, so concurrent transactions wait
    for it (up to the busy timeout) in turn. pysqlite's own transaction handling is switched off so that SQLAlchemy's
    `begin` event is the one place a transaction starts.
    """

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # SQLite ignores ON DELETE CASCADE unless foreign keys are switched on for each connection.
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    def on_begin(connection: Connection) -> None:
        # A connection opened with `execution_options(read_only=True)` (the readiness probe) reads without queueing.
        read_only = connection.get_execution_options().get("read_only", False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return on_connect, on_begin


def _closed_by_server(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """The pool's `checkout` listener for PostgreSQL: replace a connection the server has closed, with no round trip.

    An idle pooled connection never has anything to read: the server only writes to it when it ends the session
    (a restart, `pg_terminate_backend`, `idle_session_timeout`: an error message, then end of file). So a readable
    socket means the connection is dead, and raising `DisconnectionError` makes the pool open a fresh one instead.
    This replaces `pool_pre_ping`, which costs a `SELECT 1` round trip on every checkout (three per chat turn). A
    connection lost without a word (a network partition) is found by its first statement instead; the store retries
    transient errors (see `backend.errors.is_database_unavailable`).
    """
    connection = dbapi_connection.driver_connection  # the psycopg AsyncConnection
    if connection.closed or connection.broken:
        raise DisconnectionError("the pooled connection is closed")
    if _readable(connection.fileno()):
        raise DisconnectionError("the server closed the pooled connection")


def _readable(fd: int) -> bool:
    """Whether the socket has something to read (or has ended), without waiting."""
    if hasattr(select, "poll"):  # any descriptor number (select() stops at 1024)
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])  # Windows


def libpq_dsn(url: str | URL) -> str:
    """The libpq connection string of a PostgreSQL SQLAlchemy URL, for psycopg itself (e.g. a LISTEN connection)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


TCP_KEEPALIVE = {"keepalives": "1", "keepalives_idle": "5", "keepalives_interval": "2", "keepalives_count": "3"}
"""libpq keepalives: an idle connection whose peer vanished (a host gone, a network dropping packets) is found dead
in about 5 + 2 x 3 = 11 s, instead of the kernel's two hours."""


def _with_tcp_bounds(url: URL, settings: Settings) -> URL:
    """Add libpq's keepalive and `tcp_user_timeout` parameters to a PostgreSQL URL.

    Every connection derived from it has them: the pool's and the LISTEN connection's. `tcp_user_timeout` closes a
    connection whose sent data stays unacknowledged that long: a network that drops packets without a reset. A frozen
    server whose kernel still acknowledges (a stopped process, a stalled proxy) is bounded by `BoundedAsyncConnection`.
    """
    user_timeout_ms = math.ceil(settings.db_call_timeout_seconds * 1000)
    return url.update_query_dict({**TCP_KEEPALIVE, "tcp_user_timeout": str(user_timeout_ms)})


_unbounded: ContextVar[bool] = ContextVar("db_unbounded", default=False)
"""Set by `unbounded_calls` (migrations): this task's calls have no call timeout."""


class BoundedAsyncConnection(psycopg.AsyncConnection[Any]):
    """A psycopg connection whose every round trip (statement, fetch, commit, rollback) ends within `call_timeout`.

    psycopg runs each of them through `wait`; past the deadline its own timeout ends the wait at once (no cancel
    request, which against a frozen server would wait seconds more), the connection is closed (its protocol state
    is unknown, and the pool replaces a closed connection at checkout), and the caller gets an `OperationalError`,
    which the app answers with 503 `database_unavailable` (`backend.errors.is_database_unavailable`).
    """

    call_timeout: float | None = None

    async def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """Consume `gen` on the connection, within the call timeout."""
        bound = None if _unbounded.get() else self.call_timeout
        if timeout is None:
            timeout = bound
        try:
            return await super().wait(gen, interval, timeout)
        except psycopg.OperationalError as error:
            if type(error).__name__ != "_WaitTimeout":
                raise
            self.pgconn.finish()
            log.warning("the database did not answer within %s s; connection closed", timeout)
            raise psycopg.OperationalError(f"the database did not answer within {timeout} s") from None


@contextmanager
def unbounded_calls() -> Iterator[None]:
    """Lift the call timeout for this task's database calls (a migration may rewrite a big table)."""
    token = _unbounded.set(True)
    try:
        yield
    finally:
        _unbounded.reset(token)


def _postgres_connector(url: URL, settings: Settings) -> Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]:
    """The pool's connection factory: libpq parameters from the URL, timeouts from the settings."""
    dsn = libpq_dsn(url)
    call_timeout = settings.db_call_timeout_seconds
    connect_timeout = math.ceil(settings.db_connect_timeout_seconds)  # libpq counts whole seconds (and at least 2)
    options = _postgres_options(settings)

    async def connect() -> psycopg.AsyncConnection[Any]:
        connection = await BoundedAsyncConnection.connect(dsn, connect_timeout=connect_timeout, options=options)
        connection.call_timeout = call_timeout
        return connection

    return connect


def _postgres_options(settings: Settings) -> str:
    """Build the libpq `options` setting the server-side statement and lock timeouts (in ms) for each session."""
    statement_ms = math.ceil(settings.db_statement_timeout_seconds * 1000)
    lock_ms = math.ceil(settings.db_lock_timeout_seconds * 1000)
    return f"-c statement_timeout={statement_ms} -c lock_timeout={lock_ms}"


def create_database(settings: Settings) -> Database:
    """Build the engine and session factory for the configured URL.

    Every wait has a bound: opening a connection (`db_connect_timeout_seconds`), a statement and a lock on PostgreSQL
    (`db_statement_timeout_seconds`, `db_lock_timeout_seconds`), the SQLite writer slot (`sqlite_busy_timeout_seconds`)
    and a free pooled connection. SQL parameters are kept out of error messages and logs (`hide_parameters`).

    Args:
        settings: Application settings; the database URL and timeouts are read.

    Returns:
        A `Database`. For SQLite the file's folder is created if missing.
    """
    url = make_url(settings.database_url)
    # No `pool_pre_ping`: SQLite has no connection to lose, and PostgreSQL's is checked without a round trip (see
    # `_closed_by_server`).
    kwargs: dict[str, Any] = {"hide_parameters": True}
    is_sqlite = url.get_backend_name() == "sqlite"
    if is_sqlite:
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        busy_timeout = settings.sqlite_busy_timeout_seconds
        kwargs["connect_args"] = {"timeout": busy_timeout}
        if url.database and url.database != ":memory:":
            kwargs["pool_timeout"] = SQLITE_POOL_TIMEOUT_SECONDS
    else:
        url = _with_tcp_bounds(url, settings)
        kwargs.update(
            pool_size=10,
            max_overflow=20,
            pool_timeout=POSTGRES_POOL_TIMEOUT_SECONDS,
            async_creator=_postgres_connector(url, settings),
        )
    engine = create_async_engine(url, **kwargs)
    if is_sqlite:
        on_connect, on_begin = _sqlite_listeners(math.ceil(settings.sqlite_busy_timeout_seconds * 1000))
        event.listen(engine.sync_engine, "connect", on_connect)
        event.listen(engine.sync_engine, "begin", on_begin)
    else:
        event.listen(engine.sync_engine.pool, "checkout", _closed_by_server)
    read_engine = (
        engine.execution_options(read_only=True)
        if is_sqlite
        else engine.execution_options(isolation_level="AUTOCOMMIT")
    )
    return Database(
        engine=engine,
        autocommit=engine if is_sqlite else read_engine,
        sessions=async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False),
        reads=async_sessionmaker(read_engine, class_=AsyncSession, expire_on_commit=False),
    )


def get_database(state: State) -> Database:
    """Return the app's `Database` from application state."""
    database: Database = state.database
    return database


async def provide_db_session(state: State) -> AsyncIterator[AsyncSession]:
    """Yield one session per request. Never use it inside an SSE body: Litestar closes it before streaming."""
    async with get_database(state).sessions() as session:
        yield session


async def serialize_on(session: AsyncSession, key: str) -> None:
    """Make the session's transaction the only one working on `key` until it commits or rolls back.

    For a check followed by a write that must be one atomic step (a quota: sum, then insert). PostgreSQL takes a
    transaction-level advisory lock on the key's hash (waits count against `lock_timeout`; two keys sharing a hash
    only wait for each other). SQLite needs nothing: every writing transaction starts with `BEGIN IMMEDIATE` and holds
    the one writer slot (see `_sqlite_listeners`), so its check already runs under the lock.

    Args:
        session: A writing session (from `Database.sessions`), before the check's first read.
        key: What to serialise on, e.g. `file-quota:<user id>`.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.exec(sqlmodel.select(advisory_lock(key)))


def advisory_lock(key: str | ColumnElement[str]) -> ColumnElement[None]:
    """PostgreSQL's transaction-level advisory lock on `key`'s hash, as an expression (what `serialize_on` takes)."""
    return func.pg_advisory_xact_lock(func.hashtextextended(key, 0))


def table_of(model: type[sqlmodel.SQLModel]) -> Table:
    """The Core table of a SQLModel table model (SQLModel does not declare `__table__` to type checkers)."""
    table = sa_inspect(model).local_table
    assert isinstance(table, Table), model
    return table


def json_recordset(param: str, name: str, columns: Sequence[ColumnClause[Any]]) -> TableValuedAlias:
    """PostgreSQL's `json_to_recordset(:param) AS name(column type, ...)`: rows sent as one JSON parameter.

    One parameter binds any number of rows, so an INSERT ... SELECT from it is one statement whatever the row count
    (`executemany` binds and sends each row on its own). Encode the rows with `recordset_json`.
    """
    rows = func.json_to_recordset(cast(bindparam(param, type_=String), postgresql.JSON))
    return rows.table_valued(*columns).render_derived(name=name, with_types=True)


def recordset_json(rows: Sequence[Mapping[str, object]]) -> str:
    """The JSON of rows for `json_recordset`: UUIDs, dates and times as PostgreSQL reads them back from text."""
    return json.dumps(rows, ensure_ascii=False, default=_json_scalar)


def _json_scalar(value: object) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a recordset value")


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """Build the Alembic config from `pyproject.toml`, optionally bound to a live connection or a URL.

    Args:
        connection: A sync connection for `env.py` to migrate on.
        url: A database URL, used when no connection is given.

    Returns:
        An Alembic `Config`.
    """
    cfg = Config(toml_file=str(PROJECT_ROOT / "pyproject.toml"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    if url is not None:
        cfg.attributes["database_url"] = url
    return cfg


async def upgrade_to_head(database: Database) -> None:
    """Apply every pending migration on the app's own engine (`alembic upgrade head`)."""

    def _upgrade(sync_conn: Connection) -> None:
        command.upgrade(alembic_config(connection=sync_conn), "head")

    with unbounded_calls():
        await _upgrade_on(database, _upgrade)
    log.info("database schema is at the latest migration")


async def _upgrade_on(database: Database, upgrade: Callable[[Connection], None]) -> None:
    async with database.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # A migration may rewrite a big table: lift the per-statement cap for this transaction only.
            await conn.execute(text("SET LOCAL statement_timeout = 0"))
        await conn.run_sync(upgrade)


@lru_cache(maxsize=1)
def _script_revisions() -> tuple[str, frozenset[str]]:
    """This code's head revision and every revision it knows, read once from `alembic/versions`."""
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    if head is None:
        raise RuntimeError("alembic/versions has no migrations")
    return head, frozenset(revision.revision for revision in script.walk_revisions())


def head_revision() -> str:
    """Return the newest migration this code ships (`alembic heads`)."""
    return _script_revisions()[0]


async def schema_status(database: Database) -> SchemaStatus:
    """Compare the database's Alembic revision with this code's head.

    Args:
        database: The database to look at; a read of `alembic_version`, nothing is changed.

    Returns:
        `current` at head; `behind` at an older revision (run `alembic upgrade head`); `ahead` at a revision this
        code does not know (newer code migrated it); `empty` when it was never migrated.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: When the database cannot be reached.
    """
    head, known = _script_revisions()

    def _current(sync_conn: Connection) -> tuple[str, ...]:
        return tuple(MigrationContext.configure(sync_conn).get_current_heads())

    async with database.engine.connect() as conn:
        await conn.execution_options(read_only=True)
        current = await conn.run_sync(_current)
    if not current:
        return "empty"
    if current == (head,):
        return "current"
    if any(revision not in known for revision in current):
        return "ahead"
    return "behind"


_abandoned: set[asyncio.Task[SchemaStatus]] = set()


async def probe_schema(database: Database, deadline: float = PING_DEADLINE_SECONDS) -> SchemaStatus:
    """`schema_status` with a hard deadline, for the readiness probe.

    `asyncio.timeout` alone is not a deadline here: cancelling a psycopg query makes psycopg send the server a cancel
    request and wait for it, which against a frozen server takes seconds more. So the check runs in its own task;
    past the deadline it is cancelled and left to finish in the background, and the caller gets its answer at once.

    Args:
        database: The database to check.
        deadline: Seconds to wait for an answer.

    Returns:
        The schema status.

    Raises:
        TimeoutError: When the database did not answer within `deadline`.
        sqlalchemy.exc.SQLAlchemyError: When it answered with an error.
    """
    task = asyncio.ensure_future(schema_status(database))
    done, _ = await asyncio.wait({task}, timeout=deadline)
    if not done:
        task.cancel()
        _abandoned.add(task)
        task.add_done_callback(_forget)
        raise TimeoutError(f"the database did not answer within {deadline} s")
    return task.result()


def _forget(task: asyncio.Task[SchemaStatus]) -> None:
    _abandoned.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.debug("abandoned readiness check ended with %s", type(task.exception()).__name__)


class SchemaNotCurrentError(Exception):
    """The database is not migrated to this code's head and start-up migration is off."""


class UnsupportedDatabaseError(Exception):
    """The database cannot run this code (an SQLite library older than `MIN_SQLITE`)."""


MIN_SQLITE = (3, 35, 0)
"""The oldest SQLite this code runs on: `INSERT ... RETURNING` (3.35); FTS5's `remove_diacritics 2` needs 3.27."""


def check_sqlite_version(version: tuple[int, int, int]) -> None:
    """Refuse an SQLite library older than `MIN_SQLITE`, in one line that says what to do.

    Raises:
        UnsupportedDatabaseError: It is older.
    """
    if version < MIN_SQLITE:
        found, needed = ".".join(map(str, version)), ".".join(map(str, MIN_SQLITE))
        raise UnsupportedDatabaseError(
            f"this Python's SQLite is {found}; {needed} or later is needed. Run with a Python linked with a newer "
            "one (PYTHON=/path/to/python3 bash .ci/serve), or use PostgreSQL (DATABASE_URL)"
        )


def describe_schema_status(status: SchemaStatus) -> str:
    """One line for an operator: what is wrong with the schema and what to do about it.

    Args:
        status: A result of `schema_status` other than `current`.

    Returns:
        A sentence naming the head revision and the fix.
    """
    head = head_revision()
    if status == "ahead":
        return f"the database at DATABASE_URL was migrated past this code's head {head} by newer code"
    state = "has never been migrated" if status == "empty" else "is behind"
    return (
        f"the database at DATABASE_URL {state} (this code needs revision {head}); "
        f"run `alembic upgrade head` or set MIGRATE_ON_STARTUP=true"
    )


async def prepare_schema(database: Database, settings: Settings) -> SchemaStatus | None:
    """The start-up step: migrate when configured to, otherwise check that the schema is current.

    Args:
        database: The app's database.
        settings: Read for `should_migrate_on_startup`.

    Returns:
        The schema status, or None when the database could not be reached (`/ready` reports that).

    Raises:
        SchemaNotCurrentError: When the database is behind or empty and start-up migration is off.
        UnsupportedDatabaseError: SQLite, older than `MIN_SQLITE`.
    """
    if database.engine.dialect.name == "sqlite":
        check_sqlite_version(sqlite3.sqlite_version_info)
    if settings.should_migrate_on_startup:
        await upgrade_to_head(database)
        return "current"
    try:
        status = await schema_status(database)
    except (SQLAlchemyError, OSError) as error:
        log.warning("could not check the database schema at start-up: %s", type(error).__name__)
        return None
    if status in ("behind", "empty"):
        message = describe_schema_status(status)
        log.error("refusing to start: %s", message)
        raise SchemaNotCurrentError(message)
    if status == "ahead":
        log.warning("%s; starting anyway", describe_schema_status(status))
    return status
