"""How a turn's finish reason (the `done` event's) and its assistant message's stored status map to each other."""

from __future__ import annotations

from backend.chat.events import FinishReason
from backend.models import MessageStatus

STATUS_BY_FINISH: dict[FinishReason, MessageStatus] = {
    "stop": MessageStatus.COMPLETE,
    "cancelled": MessageStatus.CANCELLED,
    "error": MessageStatus.ERROR,
    "max_turns": MessageStatus.ERROR,
    "interrupted": MessageStatus.INTERRUPTED,
    "approval_required": MessageStatus.REQUIRES_ACTION,
    "client_tool": MessageStatus.REQUIRES_ACTION,
}
"""The status a turn's message is stored with, by how the turn finished."""

_FINISH_BY_STATUS: dict[MessageStatus, FinishReason] = {
    status: finish for finish, status in reversed(STATUS_BY_FINISH.items())
}  # a status several reasons share maps back to the first of them (error, approval_required)


def finish_of(status: MessageStatus | None) -> FinishReason:
    """The finish reason to show for a stored message with no logged `done` (`cancelled` if it has no outcome)."""
    return _FINISH_BY_STATUS.get(status, "cancelled") if status is not None else "cancelled"
