"""The service's own lifecycle: a started process is alive in the database before its first turn, and tasks a run
leaves behind (closing a reply whose save failed) are cancelled at shutdown."""

from __future__ import annotations

import asyncio

from backend.chat.model import build_model
from backend.chat.service import ChatService
from backend.models import Instance
from backend.team.agents import build_agent


async def test_close_cancels_what_runs_left_behind(settings, db):
    service = ChatService(db, settings, build_agent(*build_model(settings)))
    leftover = asyncio.create_task(asyncio.sleep(3600))
    service.leftovers.add(leftover)
    await service.close()
    assert leftover.cancelled()


async def test_a_started_process_is_alive_in_the_database_before_it_takes_a_turn(settings, db):
    """Its heartbeat row exists when `start` returns: until it does, the process's turns look stale to the others (free
    to take over, and not counted against `MAX_TURNS_PER_USER`), which let 6 of 8 concurrent turns past a limit of 3
    on a loaded machine."""
    service = ChatService(db, settings, build_agent(*build_model(settings)))
    await service.start()
    try:
        async with db.sessions() as session:
            instance = await session.get(Instance, service.store.instance_id)
        assert instance is not None
    finally:
        await service.close()
