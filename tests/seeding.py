"""Test helpers: rows seeded through the service layer (some endpoints have no create route), shared-app clients."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
from litestar import Litestar
from sqlalchemy import func, select, update
from sqlmodel import SQLModel

from backend.app import create_app
from backend.db import Database
from backend.models import Conversation, Message, Task
from backend.settings import Settings


async def create_conversation(session: Any, user_id: str, title: str, **fields: Any) -> Conversation:
    """Insert a conversation row (flushed, not committed)."""
    conversation = Conversation(user_id=user_id, title=title, **fields)
    session.add(conversation)
    await session.flush()
    return conversation


async def append_message(session: Any, conversation_id: uuid.UUID, **fields: Any) -> uuid.UUID:
    """Append a message row after the conversation's last one and move its `updated_at` (not committed)."""
    last = (
        await session.exec(select(func.max(Message.seq)).where(Message.conversation_id == conversation_id))
    ).scalar()
    seq = last or 0
    message = Message(conversation_id=conversation_id, seq=seq + 1, **fields)
    session.add(message)
    await session.flush()
    await session.exec(  # type: ignore[call-overload]
        update(Conversation).where(Conversation.id == conversation_id).values(updated_at=message.created_at)
    )
    return message.id


async def seed_conversation(
    database: Database,
    user_id: str = "local",
    title: str = "A conversation",
    messages: Iterable[dict[str, Any]] = (),
    *,
    updated_at: datetime | None = None,
    **fields: Any,
) -> uuid.UUID:
    """Create a conversation with `messages` appended in order, commit, and return its id.

    `updated_at`, when given, is written after the messages (appending a message moves it to now).
    """
    async with database.sessions() as session:
        conversation = await create_conversation(session, user_id, title, **fields)
        for message in messages:
            await append_message(session, conversation.id, **{"role": "user", **message})
        if updated_at is not None:
            await session.exec(  # type: ignore[call-overload]
                update(Conversation).where(Conversation.id == conversation.id).values(updated_at=updated_at)
            )
        await session.commit()
        return conversation.id


async def append(database: Database, conversation_id: uuid.UUID, **fields: Any) -> None:
    """Append one message in its own transaction through `append_message`."""
    async with database.sessions() as session:
        await append_message(session, conversation_id, **{"role": "user", **fields})
        await session.commit()


async def insert_messages(database: Database, conversation_id: uuid.UUID, messages: Iterable[dict[str, Any]]) -> None:
    """Insert messages with explicit `seq` values, in the given (possibly unsorted) order."""
    async with database.sessions() as session:
        for message in messages:
            session.add(Message(conversation_id=conversation_id, **{"role": "user", **message}))
            await session.flush()
        await session.commit()


async def insert_tasks(database: Database, tasks: Iterable[dict[str, Any]]) -> list[uuid.UUID]:
    """Insert task rows directly (to control `created_at`) and return their ids."""
    ids = []
    async with database.sessions() as session:
        for fields in tasks:
            task = Task(**fields)
            session.add(task)
            ids.append(task.id)
        await session.commit()
    return ids


async def count_rows(database: Database, model: type[SQLModel], *where: Any) -> int:
    """`SELECT count(*) FROM <model's table> WHERE ...`, straight on the database."""
    async with database.engine.connect() as conn:
        query = select(func.count()).select_from(model).where(*where)
        return (await conn.execute(query)).scalar_one()


async def task_owner(database: Database, task_id: uuid.UUID) -> str | None:
    """The `user_id` stored on a task row, or None when there is no such row."""
    async with database.engine.connect() as conn:
        return (await conn.execute(select(Task.user_id).where(Task.id == task_id))).scalar_one_or_none()


_APPS: dict[str, Litestar] = {}


def app_for(settings: Settings) -> Litestar:
    """One app per distinct settings, reused across tests: building one costs ~0.1 s of CPU, a lifespan far less.

    Each `AsyncTestClient` still runs the app's lifespan, so every test gets a fresh engine and session factory.
    """
    key = settings.model_dump_json()
    if key not in _APPS:
        _APPS[key] = create_app(settings)
    return _APPS[key]


@asynccontextmanager
async def loopback_client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process HTTP client for `app`, inside its lifespan, whose requests arrive from and on 127.0.0.1.

    Local mode answers only loopback sockets, and Litestar's `AsyncTestClient` reports its peer as `testclient`, so
    API tests use httpx's ASGI transport with a loopback client address instead. It buffers whole bodies: stream
    through real uvicorn (`tests.conftest.serve`) instead.
    """
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with running(app), httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
        yield client


@asynccontextmanager
async def running(app: Litestar) -> AsyncIterator[None]:
    """Hold `app`'s lifespan open in a task of its own (its task group must start and end in one task)."""
    started, stop = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(hold())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # start-up failed: raise its error
    try:
        yield
    finally:
        stop.set()
        await task


@asynccontextmanager
async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the (shared) app for these settings."""
    async with loopback_client(app_for(settings)) as client:
        yield client


def b64(value: Any) -> str:
    """A cursor-shaped string: unpadded base64url of some JSON."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def when(text: str) -> datetime:
    """Parse an API timestamp, asserting it is UTC."""
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() == timedelta(0), text
    return moment
