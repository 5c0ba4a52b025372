"""This process's claim on the turns it runs: renewed by its heartbeat, checked before a turn sends or logs more.

Another process takes a turn over once its owner's heartbeat is `STALE_AFTER_SECONDS` old (`recover_stale` in the
store). A process that stalls for longer (stopped, swapped out, starved of CPU) may wake up to find its turns gone,
and must then neither stream nor log another event of them. The lease is the time until which that cannot have
happened: half the takeover delay after its last heartbeat began. Past it, the turn loop and the event-log writer
renew it (a heartbeat, then one query of which turns are still this process's) before they send or write anything
more, and every turn found lost is stopped at once (`on_lost`). The final save checks ownership again, under the
conversation's row lock (`finish_turn`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable

from backend.chat.store import ConversationStore

log = logging.getLogger(__name__)


class Lease:
    """The turns this process runs, and until when no other process can have taken them over."""

    def __init__(self, store: ConversationStore, stale_after_seconds: float) -> None:
        """Create an expired lease (the first `confirm` renews it).

        Args:
            store: Where the heartbeat and the run locks live.
            stale_after_seconds: How old a heartbeat must be before another process takes a turn over.
        """
        self.store = store
        self.seconds = stale_after_seconds / 2
        self.until = -math.inf
        self.held: set[uuid.UUID] = set()
        """Assistant message ids of the turns running in this process."""
        self.on_lost: Callable[[uuid.UUID], None] = lambda _message_id: None
        self._renewal: asyncio.Task[None] | None = None
        self._failed_at = -math.inf

    def valid(self) -> bool:
        """No other process can have taken this process's turns over yet."""
        return time.monotonic() < self.until

    async def confirm(self) -> None:
        """Renew the lease if it ran out, before a turn sends or logs more (a no-op while it is valid).

        A renewal that fails (the database is unreachable) is not tried again for a while, and the turns go on: no
        other process can take them over without the database either, and the final save checks again.
        """
        if self.valid() or time.monotonic() - self._failed_at < self.seconds / 2:
            return
        try:
            await self.renew()
        except Exception as error:
            log.warning("could not confirm this process's turns (%s)", type(error).__name__)

    async def renew(self) -> None:
        """Beat, then check which held turns are still this process's; stop the others (one renewal at a time).

        Raises:
            Exception: The database failed; the lease stays as it was.
        """
        if self._renewal is None or self._renewal.done():
            self._renewal = asyncio.create_task(self._renew(), name="lease-renewal")
        await asyncio.shield(self._renewal)

    async def _renew(self) -> None:
        started = time.monotonic()
        try:
            await self.store.heartbeat()
            held = set(self.held)
            owned = await self.store.owned_turns(held) if held else set()
        except Exception:
            self._failed_at = time.monotonic()
            raise
        self.until = started + self.seconds
        for message_id in held - owned:
            if message_id in self.held:
                self.held.discard(message_id)
                log.warning("turn %s was taken over by another process while this one stalled", message_id)
                self.on_lost(message_id)
