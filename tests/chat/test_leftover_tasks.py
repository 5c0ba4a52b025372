"""Tasks a run leaves behind (closing a reply whose save failed) are kept by the service and cancelled at shutdown."""

from __future__ import annotations

import asyncio

from backend.chat.model import build_model
from backend.chat.service import ChatService
from backend.team.agents import build_agent


async def test_close_cancels_what_runs_left_behind(settings, db):
    service = ChatService(db, settings, build_agent(*build_model(settings)))
    leftover = asyncio.create_task(asyncio.sleep(3600))
    service.leftovers.add(leftover)
    await service.close()
    assert leftover.cancelled()
