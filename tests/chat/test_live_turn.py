"""A live turn's followers: every frame once, in order, caught up in one chunk when they fell behind."""

from __future__ import annotations

import asyncio
import uuid

from backend.chat.live import LiveTurn


def _frame(n: int) -> bytes:
    return f'id: {n}\ndata: {{"n":{n}}}\n\n'.encode()


async def test_a_follower_that_fell_behind_catches_up_in_one_chunk_then_follows_frame_by_frame() -> None:
    turn = LiveTurn(uuid.uuid4(), uuid.uuid4(), first_id=1)
    for n in (1, 2, 3):
        turn.publish(_frame(n))
    follower = turn.frames_after(0)
    assert await anext(follower) == _frame(1) + _frame(2) + _frame(3)
    pending = asyncio.ensure_future(anext(follower))
    await asyncio.sleep(0)
    turn.publish(_frame(4))
    assert await pending == _frame(4)
    turn.close()
    assert [chunk async for chunk in follower] == []


async def test_a_follower_resumes_after_the_id_it_has_and_never_gets_a_frame_twice() -> None:
    turn = LiveTurn(uuid.uuid4(), uuid.uuid4(), first_id=5)  # a continuation: ids go on from 5
    for n in (5, 6, 7):
        turn.publish(_frame(n))
    turn.close()
    assert [chunk async for chunk in turn.frames_after(5)] == [_frame(6) + _frame(7)]
    assert [chunk async for chunk in turn.frames_after(7)] == []
    assert b"".join([chunk async for chunk in turn.frames_after(0)]) == _frame(5) + _frame(6) + _frame(7)
