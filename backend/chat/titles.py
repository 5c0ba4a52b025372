"""Conversation titles from the model: one small non-streamed LiteLLM call per new conversation.

`ChatService` starts it in the background when a turn creates a conversation, so the reply's `done` never waits for
it; `backend.chat.model.build_title_model` picks this or the offline demo's titles (`TITLES`, `TITLE_MODEL`). Each
call goes into the usage ledger (agent `(title)`, no message) and counts against its user's quota. The message and
the title are never logged.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Protocol

import litellm

from backend.models import TITLE_MAX
from backend.usage.ledger import ModelCall, priced_call

TITLE_WORDS = 6
MESSAGE_CHARS = 1000  # the start of the first message is enough to name a conversation
INSTRUCTIONS = (
    f"Write a short title (at most {TITLE_WORDS} words) for a chat that starts with the user's message below. "
    "Answer with the title only: no quotes, no period at the end, in the message's language."
)
_QUOTES = "\"'\u201c\u201d\u2018\u2019`"
_DECORATION = re.compile(f"^[\\s{_QUOTES}*#_-]+|[\\s{_QUOTES}*#_.:;!-]+$")
_LABEL = re.compile(r"^title\s*:\s*", re.IGNORECASE)


TITLE_AGENT = "(title)"
"""The usage ledger's `agent` of a title call (no agent makes it; the parentheses keep it apart from agent names)."""


@dataclass(frozen=True, slots=True)
class TitleAnswer:
    """A title model's raw answer (cleaned by `clean_title`) and the model call that wrote it (None: no call)."""

    text: str
    call: ModelCall | None = None


class TitleModel(Protocol):
    """Names a conversation from its first message."""

    @property
    def model(self) -> str | None:
        """The model each title call goes to, for the usage ledger (None: titles cost no model call)."""
        ...

    async def title(self, message: str) -> TitleAnswer:
        """The model's raw answer and its call's usage.

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
        self._model = model
        self.api_key = api_key
        self.api_base = api_base
        self.timeout_seconds = timeout_seconds

    @property
    def model(self) -> str:
        """The LiteLLM model string of the title calls."""
        return self._model

    async def title(self, message: str) -> TitleAnswer:
        """Ask the model for a title of `message` (its first `MESSAGE_CHARS` characters), priced like a turn's call."""
        started = time.perf_counter()
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
        usage: litellm.Usage | None = getattr(response, "usage", None)
        call = None
        if usage is not None:
            cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else None
            reasoning = usage.completion_tokens_details.reasoning_tokens if usage.completion_tokens_details else None
            call = priced_call(
                TITLE_AGENT,
                self._model,
                input_tokens=usage.prompt_tokens,
                output_tokens=usage.completion_tokens,
                total_tokens=usage.total_tokens,
                cached_tokens=cached or 0,
                reasoning_tokens=reasoning or 0,
                seconds=time.perf_counter() - started,
            )
        return TitleAnswer(content if isinstance(content, str) else "", call)
