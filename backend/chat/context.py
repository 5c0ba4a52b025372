"""The run context every agent tool receives: whose run this is, and where the data lives.

It lives outside `backend.chat.agent` because that module is the one users replace with their own agent.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.db import Database


@dataclass(frozen=True, slots=True)
class ChatContext:
    """What every tool may use: whose run this is, and where the data lives."""

    user_id: str
    database: Database
