"""What a widget action changed, stored: every stored copy of its widgets, and its short reply as a message."""

from __future__ import annotations

import uuid

from sqlalchemy import update
from sqlmodel import col, select

from backend.conversations.service import get_conversation
from backend.db import Database
from backend.models import Conversation, Message, MessageRole, utcnow


class ActionRows:
    """The writes of widget actions (`backend.chat.actions` runs the handlers)."""

    def __init__(self, database: Database, *, history_max_items: int) -> None:
        """Write to `database`; a widget is looked for in the latest `history_max_items` messages."""
        self.database = database
        self.history_max_items = history_max_items

    async def apply_action(
        self, user_id: str, conversation_id: uuid.UUID, widgets: dict[str, dict[str, object]], reply: str | None
    ) -> uuid.UUID | None:
        """Store what a widget action changed: every stored copy of its widgets, and its short reply as a message.

        Returns:
            The id of the assistant message holding the reply, or None without a reply.
        """
        now = utcnow()
        async with self.database.sessions() as session:
            await get_conversation(session, user_id, conversation_id)
            recent = (
                await session.exec(
                    select(Message)
                    .where(Message.conversation_id == conversation_id)
                    .order_by(col(Message.seq).desc())
                    .limit(self.history_max_items)
                )
            ).all()
            for message in recent:
                if not any(p.get("type") == "widget" and p.get("id") in widgets for p in message.parts):
                    continue
                parts = [
                    {**p, "widget": widgets[p["id"]]} if p.get("type") == "widget" and p.get("id") in widgets else p
                    for p in message.parts
                ]
                await session.exec(update(Message).where(col(Message.id) == message.id).values(parts=parts))
            message_id = None
            if reply:
                message_id = uuid.uuid4()
                session.add(
                    Message(
                        id=message_id,
                        conversation_id=conversation_id,
                        seq=(recent[0].seq + 1) if recent else 1,
                        role=MessageRole.ASSISTANT,
                        content=reply,
                        parts=[{"type": "text", "text": reply}],
                        created_at=now,
                    )
                )
                await session.exec(
                    update(Conversation).where(col(Conversation.id) == conversation_id).values(updated_at=now)
                )
            await session.commit()
            return message_id
