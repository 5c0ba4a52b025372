"""Widget actions: a registry of handlers keyed by action type, and the one dispatcher the chat endpoint calls.

A `Button` or `Checkbox` in a widget carries an `Action` (`{type, payload}`). The page posts it as
`POST /chatkit {thread_id, action: {type, payload}}`; the server routes it here, to the handler registered for its
type, never to the model. A handler declares its payload as a pydantic model (the annotation of its second
parameter), acts for the user in `ActionContext` only, and returns the widgets it updated (by widget id) and an
optional short reply.

```python
class ArchivePayload(BaseModel):
    note_id: uuid.UUID

async def archive(context: ActionContext, payload: ArchivePayload) -> ActionResult:
    ...
    return ActionResult(widgets={"notes": notes_widget(...)}, reply="Archived.")

registry.register("notes.archive", archive)
```
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar, get_type_hints

from pydantic import BaseModel, ValidationError

from backend.chat.widgets import Action, Widget
from backend.conversations import service as conversation_service
from backend.db import Database
from backend.errors import InvalidInputError

log = logging.getLogger(__name__)

MAX_REPLY_CHARS = 500

P = TypeVar("P", bound=BaseModel)


class UnknownActionError(InvalidInputError):
    """422: the action type is not registered, or its payload is not what the handler accepts."""

    code = "unknown_action"


@dataclass(frozen=True, slots=True)
class ActionContext:
    """Whose action this is and where: a handler must act for `user_id` only.

    `database.sessions()` join the action's transaction (a handler's `commit` only ends a savepoint): what the handler
    writes commits with the action's stored reply, or not at all. Do not open connections of your own from
    `database.engine` (on SQLite they would wait for this very transaction).
    """

    user_id: str
    database: Database
    conversation_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What a handler changed: replacement widgets keyed by widget id, and an optional short reply text."""

    widgets: dict[str, Widget] = field(default_factory=dict)
    reply: str | None = None

    def __post_init__(self) -> None:
        if self.reply is not None and len(self.reply) > MAX_REPLY_CHARS:
            raise ValueError(f"an action reply is at most {MAX_REPLY_CHARS} characters")
        for widget_id, widget in self.widgets.items():
            if widget.id != widget_id:
                raise ValueError(f"widget {widget_id!r} is keyed under another id ({widget.id!r})")


ActionHandler = Callable[[ActionContext, P], Awaitable[ActionResult]]


@dataclass(frozen=True, slots=True)
class _Registration(Generic[P]):
    handler: ActionHandler[P]
    payload: type[P]

    async def run(self, context: ActionContext, raw: dict[str, object]) -> ActionResult:
        try:
            payload = self.payload.model_validate(raw)
        except ValidationError as error:
            problem = error.errors(include_url=False)[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise UnknownActionError(f"Invalid payload for this action: {where}: {problem['msg']}.") from None
        return await self.handler(context, payload)


def _payload_type(handler: ActionHandler[P]) -> type[P]:
    parameters = list(inspect.signature(handler).parameters)
    hints = get_type_hints(handler)
    payload = hints.get(parameters[1]) if len(parameters) >= 2 else None
    if not (isinstance(payload, type) and issubclass(payload, BaseModel)):
        raise TypeError("an action handler's second parameter must be annotated with a pydantic model")
    return payload  # type: ignore[return-value]


class ActionRegistry:
    """Action handlers keyed by action type."""

    def __init__(self) -> None:
        self._handlers: dict[str, _Registration[BaseModel]] = {}

    def register(self, action_type: str, handler: ActionHandler[P], payload: type[P] | None = None) -> None:
        """Register `handler` for `action_type`. Registering the same handler again is a no-op.

        Args:
            action_type: A short identifier such as `tasks.toggle` (the pattern of `Action.type`).
            handler: `async (context, payload) -> ActionResult`.
            payload: The payload model; by default the annotation of the handler's second parameter.

        Raises:
            ValueError: If the type is malformed or already taken by another handler.
        """
        Action(type=action_type)  # the same identifier rules as on the wire
        registration = _Registration(handler, payload or _payload_type(handler))
        existing = self._handlers.get(action_type)
        if existing is not None and existing.handler is not handler:
            raise ValueError(f"action {action_type!r} already has a handler")
        self._handlers[action_type] = registration  # type: ignore[assignment]

    def types(self) -> list[str]:
        """The registered action types, sorted."""
        return sorted(self._handlers)

    async def dispatch(
        self, database: Database, user_id: str, conversation_id: uuid.UUID, action: Action
    ) -> ActionResult:
        """Run the handler of `action` for the user, in one of their conversations.

        Args:
            database: Where the data lives.
            user_id: The authenticated user.
            conversation_id: The conversation the widget is in; it must be the user's.
            action: The action the page sent.

        Returns:
            The handler's result.

        Raises:
            NotFoundError: If the conversation is missing or another user's (404).
            UnknownActionError: If no handler is registered for the type, or the payload fails its validation (422).
        """
        registration = self._handlers.get(action.type)
        if registration is None:
            raise UnknownActionError(f"Unknown action {action.type!r}.")
        async with database.sessions() as session:
            await conversation_service.get_conversation(session, user_id, conversation_id)
        log.info("action %s in conversation %s", action.type, conversation_id)
        context = ActionContext(user_id=user_id, database=database, conversation_id=conversation_id)
        return await registration.run(context, action.payload)


registry = ActionRegistry()
"""The application's registry: `registry.register(...)` adds a handler, `dispatch` runs one."""

dispatch = registry.dispatch
