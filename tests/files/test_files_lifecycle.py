"""File lifecycle and chat seams on both databases: sweep, conversation cleanup, resolve/attach, attachment count."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from backend.db import Database
from backend.errors import InvalidInputError, NotFoundError
from backend.files import service as file_service
from backend.files.lifecycle import run_sweeper
from backend.files.models import File, FileBlob, MessageFile
from backend.files.service import StoredFile
from backend.files.storage import BlobMissingError, DatabaseStorage, FileStorage, LocalStorage
from backend.models import Conversation, utcnow
from backend.settings import Settings
from tests import files_samples as samples
from tests.seeding import append_message, count_rows, create_conversation

DAY = 24 * 3600.0


def storage_for(kind: str, root: Path) -> FileStorage:
    return LocalStorage(root) if kind == "local" else DatabaseStorage()


async def upload(database: Database, storage: FileStorage, settings: Settings, user: str = "local", **kw) -> StoredFile:
    async with database.sessions() as session:
        return await file_service.upload_file(
            session, storage, settings, user, kw.get("name", "a.txt"), kw.get("data", samples.TEXT)
        )


async def age(database: Database, file_ids: Sequence[uuid.UUID], seconds: float) -> None:
    """Move files' `created_at` into the past."""
    async with database.sessions() as session:
        await session.exec(  # type: ignore[call-overload]
            update(File).where(col(File.id).in_(file_ids)).values(created_at=utcnow() - timedelta(seconds=seconds))
        )
        await session.commit()


async def message_with(database: Database, conversation_id: uuid.UUID, files: Sequence[StoredFile]) -> uuid.UUID:
    """Append a user message to the conversation with `files` attached, through the chat seams."""
    async with database.sessions() as session:
        message_id = await append_message(session, conversation_id, role="user", content="see attached")
        resolved = await file_service.resolve_attachments(session, "local", [f.id for f in files])
        await file_service.attach(session, message_id, resolved)
        await session.commit()
        return message_id


async def new_conversation(database: Database, user_id: str = "local") -> uuid.UUID:
    async with database.sessions() as session:
        conversation = await create_conversation(session, user_id, "c")
        await session.commit()
        return conversation.id


async def remaining(database: Database) -> set[uuid.UUID]:
    async with database.sessions() as session:
        return set((await session.exec(select(File.id))).all())


@pytest.mark.parametrize("kind", ["local", "database"])
async def test_sweep_removes_only_old_unattached_uploads(db: Database, settings: Settings, kind: str) -> None:
    storage = storage_for(kind, settings.file_storage_dir)
    old_loose = await upload(db, storage, settings)
    old_attached = await upload(db, storage, settings)
    fresh = await upload(db, storage, settings)
    await message_with(db, await new_conversation(db), [old_attached])
    await age(db, [old_loose.id, old_attached.id], DAY + 60)

    async with db.sessions() as session:
        deleted = await file_service.sweep_unattached(session, storage, DAY)

    assert deleted == [old_loose.id]
    assert await remaining(db) == {old_attached.id, fresh.id}
    async with db.sessions() as session:
        with pytest.raises(BlobMissingError):
            await storage.read(session, old_loose.id)
        assert await storage.read(session, fresh.id) == samples.TEXT
    if kind == "database":
        assert await count_rows(db, FileBlob) == 2


async def test_two_concurrent_sweeps_delete_each_file_once(db: Database, settings: Settings) -> None:
    storage = DatabaseStorage()
    files = [await upload(db, storage, settings) for _ in range(12)]
    await age(db, [f.id for f in files], DAY + 60)

    async def sweep() -> list[uuid.UUID]:
        async with db.sessions() as session:
            return await file_service.sweep_unattached(session, storage, DAY)

    first, second = await asyncio.gather(sweep(), sweep())
    assert not set(first) & set(second)
    assert set(first) | set(second) == {f.id for f in files}
    assert await remaining(db) == set()
    assert await count_rows(db, FileBlob) == 0


async def test_run_sweeper_sweeps_until_stopped(db: Database, make_settings, tmp_path: Path) -> None:
    settings = make_settings(file_unattached_ttl_seconds=60, file_sweep_interval_seconds=0.05, file_storage="local")
    storage = LocalStorage(settings.file_storage_dir)
    stale = await upload(db, storage, settings)
    await age(db, [stale.id], 120)
    stop = asyncio.Event()
    task = asyncio.create_task(run_sweeper(db, settings, stop, storage))
    async with asyncio.timeout(10):
        while stale.id in await remaining(db):
            await asyncio.sleep(0.05)
    assert not storage.path_for(stale.id).exists()
    stop.set()
    await asyncio.wait_for(task, 10)
    assert task.done() and task.exception() is None


async def test_local_orphans_without_a_row_are_removed(db: Database, settings: Settings) -> None:
    storage = LocalStorage(settings.file_storage_dir)
    kept = await upload(db, storage, settings)
    orphan = uuid.uuid4()
    async with db.sessions() as session:
        await storage.write(session, orphan, b"left behind by a crash")
        assert await storage.remove_orphans(session, 3600) == 0  # too young: it could belong to an upload in flight
        assert await storage.remove_orphans(session, -1) == 1
    assert not storage.path_for(orphan).exists()
    assert storage.path_for(kept.id).exists()


async def test_delete_files_only_used_by_a_conversation(db: Database, settings: Settings) -> None:
    storage = DatabaseStorage()
    only_here, shared, loose = [await upload(db, storage, settings) for _ in range(3)]
    doomed, other = await new_conversation(db), await new_conversation(db)
    await message_with(db, doomed, [only_here, shared])
    await message_with(db, doomed, [only_here])
    await message_with(db, other, [shared])

    async with db.sessions() as session:
        deleted = await file_service.delete_files_only_used_by(session, doomed)
        await session.delete(await session.get(Conversation, doomed))
        await session.commit()

    assert deleted == [only_here.id]
    assert await remaining(db) == {shared.id, loose.id}
    assert await count_rows(db, MessageFile) == 1
    assert await count_rows(db, FileBlob) == 2


async def test_resolve_attach_and_list_attachments(db: Database, settings: Settings) -> None:
    storage = DatabaseStorage()
    a, b = (
        await upload(db, storage, settings, name="a.txt"),
        await upload(db, storage, settings, name="b.png", data=samples.png()),
    )
    foreign = await upload(db, storage, settings, user="someone-else")
    conversation = await new_conversation(db)
    first = await message_with(db, conversation, [b, a, b])
    second = await message_with(db, conversation, [a])  # already attached elsewhere: allowed

    async with db.sessions() as session:
        listed = await file_service.files_of_messages(session, [first, second, uuid.uuid4()])
        assert [f.name for f in listed[first]] == ["b.png", "a.txt"]
        assert [f.id for f in listed[second]] == [a.id]
        assert set(listed) == {first, second}
        for bad in ([a.id, foreign.id], [uuid.uuid4()]):
            with pytest.raises(NotFoundError):
                await file_service.resolve_attachments(session, "local", bad)
        assert await file_service.resolve_attachments(session, "local", []) == []


async def test_check_message_attachments(db: Database) -> None:
    async with db.sessions() as session:
        files = [File(user_id="local", name=f"{i}.txt", content_type="text/plain", size=400) for i in range(3)]
        session.add_all([*files, File(user_id="other", name="x.txt", content_type="text/plain", size=10_000)])
        await session.commit()
        ids = [f.id for f in files]
        await file_service.check_message_attachments(session, "local", ids, max_files=3, max_bytes=1200)
        with pytest.raises(InvalidInputError) as raised:
            await file_service.check_message_attachments(session, "local", ids, max_files=2, max_bytes=1200)
        assert raised.value.status_code == 422 and raised.value.code == "too_many_attachments"
        with pytest.raises(file_service.PayloadTooLargeError) as too_big:
            await file_service.check_message_attachments(session, "local", ids, max_files=3, max_bytes=1199)
        assert too_big.value.status_code == 413 and too_big.value.code == "attachments_too_large"
