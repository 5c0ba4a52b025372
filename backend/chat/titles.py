"""Conversation titles from the model: one small non-streamed LiteLLM call per new conversation.

`ChatService` starts it in the background when a turn creates a conversation, so the reply's `done` never waits for
it; `backend.chat.model.build_title_model` picks this or the offline demo's titles (`TITLES`, `TITLE_MODEL`). The
message and the title are never logged.
"""

from __future__ import annotations

import re
from typing import Protocol

import litellm

from backend.models import TITLE_MAX

TITLE_WORDS = 6
MESSAGE_CHARS = 1000  # the start of the first message is enough to name a conversation
INSTRUCTIONS = (
    f"Write a short title (at most {TITLE_WORDS} words) for a chat that starts with the user's message below. "
    "Answer with the title only: no quotes, no period at the end, in the message's language."
)
_QUOTES = "\"'\u201c\u201d\u2018\u2019`"
_DECORATION = re.compile(f"^[\\s{_QUOTES}*#_-]+|[\\s{_QUOTES}*#_.:;!-]+$")
_LABEL = re.compile(r"^title\s*:\s*", re.IGNORECASE)


class TitleModel(Protocol):
    """Names a conversation from its first message."""

    async def title(self, message: str) -> str:
        """The model's raw answer (cleaned by `clean_title`).

        Raises:
            Exception: Whatever the model call raised; the caller keeps the first-message title.
        """
        ...


def clean_title(answer: str) -> str | None:
    """The model's answer as a title: its first non-empty line, without quotes, markup or a label; None if empty."""
    for line in answer.splitlines():
        text = _DECORATION.sub("", _LABEL.sub("", _DECORATION.sub("", line)))
        text = " ".join(text.split())
        if text:
            return text[:TITLE_MAX]  # what the conversation stores, so the streamed title is the stored one
    return None


class LitellmTitles:
    """Titles from any LiteLLM model string, through LiteLLM's public `acompletion`."""

    def __init__(self, model: str, *, api_key: str | None, api_base: str | None, timeout_seconds: float) -> None:
        """Call `model` (with the chat's key and base URL), giving up after `timeout_seconds`."""
        self.model = model
        self.api_key = api_key
        self.api_base = api_base
        self.timeout_seconds = timeout_seconds

    async def title(self, message: str) -> str:
        """Ask the model for a title of `message` (its first `MESSAGE_CHARS` characters)."""
        response = await litellm.acompletion(
            model=self.model,
            messages=[
                {"role": "system", "content": INSTRUCTIONS},
                {"role": "user", "content": message[:MESSAGE_CHARS]},
            ],
            api_key=self.api_key,
            api_base=self.api_base,
            timeout=self.timeout_seconds,
            num_retries=0,
        )
        content = response.choices[0].message.content  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
        return content if isinstance(content, str) else ""
