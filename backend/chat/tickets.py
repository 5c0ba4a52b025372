"""Stream tickets: rejoin a turn from a browser `EventSource`, which cannot send an `Authorization` header.

`POST /chatkit/{message_id}/ticket` (with the bearer token) mints a ticket bound to the user and that one assistant
message; `GET /chatkit/{message_id}/stream?ticket=...` redeems it instead of a bearer token. A ticket lives
`TICKET_SECONDS` and works once, in whichever process redeems it: only its SHA-256 is stored, and redeeming deletes
the row in the same statement that reads it.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import col, delete

from backend.db import Database
from backend.models import StreamTicket, utcnow

TICKET_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Ticket:
    """A minted ticket and how long it stays valid."""

    ticket: str
    expires_in: int


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode("utf-8", "replace")).hexdigest()


async def mint(database: Database, user_id: str, message_id: uuid.UUID) -> Ticket:
    """Store a new ticket for one of the user's messages (the caller checked that it is theirs).

    Expired tickets nobody redeemed are deleted on the way.
    """
    ticket = secrets.token_urlsafe(32)
    now = utcnow()
    async with database.sessions() as session:
        await session.exec(delete(StreamTicket).where(col(StreamTicket.expires_at) < now))
        session.add(
            StreamTicket(
                id=_digest(ticket),
                user_id=user_id,
                message_id=message_id,
                expires_at=now + timedelta(seconds=TICKET_SECONDS),
            )
        )
        await session.commit()
    return Ticket(ticket, TICKET_SECONDS)


async def redeem(database: Database, ticket: str, message_id: uuid.UUID) -> str | None:
    """Use a ticket once: the user it was minted for, or None (unknown, used, expired or for another message)."""
    async with database.sessions() as session:
        statement = (
            delete(StreamTicket)
            .where(col(StreamTicket.id) == _digest(ticket))
            .returning(col(StreamTicket.user_id), col(StreamTicket.message_id), col(StreamTicket.expires_at))
        )
        row = (await session.exec(statement)).first()
        await session.commit()
    if row is None:
        return None
    user_id, bound_to, expires_at = row
    return user_id if bound_to == message_id and expires_at > utcnow() else None
