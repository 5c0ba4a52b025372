"""The run context every agent tool receives: whose run this is, and where the data lives.

The turn runtime builds it for every run (`backend.chat.turn`), so it lives with the runtime, not with the replaceable
example team (`backend.team`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from backend.db import Database


class WidgetSink(Protocol):
    """Where a tool shows a widget while it runs (the running turn streams it as a `widget` event)."""

    def show_widget(self, widget_id: str, widget: dict[str, object]) -> None:
        """Validate and show a widget; a later call with the same id replaces it.

        Raises:
            backend.chat.widgets.WidgetError: The widget is invalid (the tool reports it as its error).
        """


@dataclass(frozen=True, slots=True)
class ChatContext:
    """What every tool may use: whose run this is, and where the data lives.

    `client_results` holds the browser's answers to client-side tools (by tool call id) when a paused run resumes.
    A paused run stores only `user_id` (see `context_json`); the rest is rebuilt when it resumes.
    """

    user_id: str
    database: Database
    client_results: dict[str, str] = field(default_factory=dict)
    ui: WidgetSink | None = None


def context_json(context: ChatContext) -> dict[str, str]:
    """What a stored RunState keeps of the context: ids only, never connections or secrets."""
    return {"user_id": context.user_id}
