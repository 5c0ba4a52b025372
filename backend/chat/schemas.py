"""Request body of `POST /chatkit`."""

from __future__ import annotations

import uuid

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator


class ChatRequest(BaseModel):
    """A user message, for an existing conversation (`thread_id`, alias `conversation_id`) or a new one."""

    model_config = ConfigDict(extra="ignore")

    message: str = Field(min_length=1, description="The user's message; surrounding whitespace is trimmed.")
    thread_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("thread_id", "conversation_id"),
        description="The conversation to continue; omit to start a new one.",
    )
    client_message_id: uuid.UUID | None = Field(
        default=None,
        description=(
            "A UUID the client generates per message. A repeat with the same id (a network retry) never starts a "
            "second turn: it replays and follows the turn the first request started. Scoped to the user."
        ),
    )

    @field_validator("message", mode="before")
    @classmethod
    def _trim(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value
