"""What a protocol adapter asks the turn engine to do: typed commands, one per kind of request.

An adapter (our native `/chatkit` body, the AI SDK's `POST /api/chat`, ...) parses its protocol's request into one of
these and calls `ChatService.execute(user_id, command)`; the engine knows no protocol. Every field is already checked
for shape by the adapter; the engine checks everything that needs the database (ownership, limits, what is pending).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from backend.chat.client_tools import ClientTool
from backend.chat.pause import Approved, ClientResult, Decision, Rejected
from backend.chat.widgets import Action

__all__ = [
    "AnswerPause",
    "Approved",
    "ClientResult",
    "ClientTool",
    "Command",
    "Decision",
    "Regenerate",
    "Rejected",
    "SendMessage",
    "Upload",
    "WidgetAction",
    "decision",
]


@dataclass(frozen=True, slots=True)
class Upload:
    """A file that comes with a message as bytes (not uploaded before); stored like `POST /api/files` stores it."""

    filename: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class SendMessage:
    """A new user message, to an existing conversation, a new one, or one whose id the client chose.

    Attributes:
        text: The message (trimmed, not empty).
        conversation_id: The conversation to continue; None starts a new one.
        client_message_id: An idempotency key: a repeat never starts a second turn.
        attachments: Ids of the caller's uploaded files.
        uploads: Files sent inline; each is checked and stored like an upload, then attached.
        create_missing: With a `conversation_id`: create the conversation under that id if it does not exist yet
            (a client that names its chats itself, like the AI SDK's `useChat`). Another user's id is still 404.
        edit_of: A user message of the conversation that this one is a new version of: the new message becomes its
            sibling (after the same parent) and the active branch; everything after the old version stays stored.
        client_tools: Tools the client defines for this run (AG-UI's frontend tools): offered to the agents besides
            the server's own, they pause the run like `CLIENT_TOOLS` and are answered with `AnswerPause`.
    """

    text: str
    conversation_id: uuid.UUID | None = None
    client_message_id: uuid.UUID | None = None
    attachments: tuple[uuid.UUID, ...] = ()
    uploads: tuple[Upload, ...] = ()
    create_missing: bool = False
    edit_of: uuid.UUID | None = None
    client_tools: tuple[ClientTool, ...] = ()


def decision(call_id: str, approve: bool, reason: str | None = None) -> Decision:
    """The user's answer to the approval of tool call `call_id`."""
    return Approved(call_id, reason) if approve else Rejected(call_id, reason)


@dataclass(frozen=True, slots=True)
class AnswerPause:
    """Answers to what a paused reply waits for (approvals and client-tool results); the reply continues.

    Attributes:
        conversation_id: The conversation whose last reply is paused.
        approvals: The user's decisions (`Approved`, `Rejected`; see `backend.chat.pause`).
        client_results: The browser's results (`ClientResult`).
        skip_settled: Ignore answers to calls that wait for nothing (a client that resends its whole message, with
            the tool results it already had, like the AI SDK). Without it such an answer is a `not_pending` conflict.
        client_tools: The client's own tools for the resumed run (as in `SendMessage`): a paused call to one of them
            can only run when the resumed run has it again.
    """

    conversation_id: uuid.UUID
    approvals: tuple[Decision, ...] = ()
    client_results: tuple[ClientResult, ...] = ()
    skip_settled: bool = False
    client_tools: tuple[ClientTool, ...] = ()


@dataclass(frozen=True, slots=True)
class WidgetAction:
    """A widget's button or checkbox was used; its handler runs (never the model)."""

    conversation_id: uuid.UUID
    action: Action


@dataclass(frozen=True, slots=True)
class Regenerate:
    """Answer a user message again: a new reply, a sibling of its earlier replies (which stay stored).

    Attributes:
        conversation_id: The conversation.
        message_id: The user message to answer again, or a reply whose user message is answered again; None: the
            active branch's last message (the last reply, or a user message left without one).
        client_message_id: An idempotency key, as for `SendMessage`: a repeat follows the reply the first started.
    """

    conversation_id: uuid.UUID
    message_id: uuid.UUID | None = None
    client_message_id: uuid.UUID | None = None


Command = SendMessage | AnswerPause | WidgetAction | Regenerate
