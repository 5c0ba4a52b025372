"""The generated title's one write: it replaces a conversation's first-message title, never a user's rename."""

from __future__ import annotations

import uuid

from sqlalchemy import update
from sqlmodel import col

from backend.db import Database
from backend.models import TITLE_MAX, Conversation


class TitleRows:
    """Writes a generated title, if the conversation still has the title of its first message."""

    def __init__(self, database: Database) -> None:
        """Write to `database`."""
        self.database = database

    async def set_generated_title(self, conversation_id: uuid.UUID, title: str) -> bool:
        """Replace the first-message title with `title` (cut to `TITLE_MAX`); `updated_at` does not move.

        One conditional UPDATE, so a rename committed at any moment before it wins, and one after it replaces it.

        Returns:
            Whether the title was written (False: renamed by the user, or the conversation is gone).
        """
        async with self.database.sessions() as session:
            result = await session.exec(
                update(Conversation)
                .where(col(Conversation.id) == conversation_id, col(Conversation.title_source) == "message")
                .values(title=title[:TITLE_MAX], title_source="model")
            )
            await session.commit()
            return bool(result.rowcount)
