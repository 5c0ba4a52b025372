"""Client-chosen chat ids, one rule for every adapter whose clients name their chats.

The AI SDK's `useChat` id and AG-UI's `threadId` follow it, so a user's id names the same conversation whichever
protocol sends it.

An id that is a UUID (one of our conversation ids, from `/api/conversations`) names that conversation; any other id
names `uuid5(CHAT_ID_NAMESPACE, user + id)`, so two users who pick the same id never meet.
"""

from __future__ import annotations

import uuid

from backend.errors import NotFoundError

MAX_CHAT_ID_CHARS = 200
CHAT_ID_NAMESPACE = uuid.UUID("6f1c4a52-0d37-4b8e-9a51-3c8de0a4b7e1")


def conversation_id_of(user_id: str, chat_id: str) -> uuid.UUID:
    """The conversation a user's chat id names: the id itself when it is a UUID, else a UUID derived from both."""
    try:
        return uuid.UUID(chat_id)
    except ValueError:
        return uuid.uuid5(CHAT_ID_NAMESPACE, f"{user_id}\n{chat_id}")


def client_message_id(chat_id: str, message_id: str) -> uuid.UUID:
    """The idempotency key of a client's message: a resend of the same message never starts a second turn."""
    return uuid.uuid5(CHAT_ID_NAMESPACE, f"{chat_id}\n{message_id}")


def checked_chat_id(chat_id: str) -> str:
    """A chat id from a path (resume, stop): one longer than any id we accept names nothing.

    Raises:
        NotFoundError: The id is empty or too long.
    """
    if not 0 < len(chat_id) <= MAX_CHAT_ID_CHARS:
        raise NotFoundError("Conversation not found.")
    return chat_id
