"""HTTP routes for the user's conversations. Handlers parse input, call the service and return."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_204_NO_CONTENT
from sqlmodel.ext.asyncio.session import AsyncSession
from sse_starlette import EventSourceResponse

from backend.auth import User
from backend.chat.routes import event_stream, provide_chat_service
from backend.chat.schemas import RegenerateRequest
from backend.chat.service import ChatService
from backend.conversations import service as conversation_service
from backend.conversations.search import MAX_QUERY_CHARS, search_conversations
from backend.conversations.service import MessageOrder
from backend.conversations.store import ConversationRows
from backend.models import (
    BranchSwitch,
    ConversationDetail,
    ConversationPublic,
    ConversationsPublic,
    ConversationUpdate,
    StopPublic,
)
from backend.pagination import DEFAULT_LIMIT, MAX_LIMIT

MESSAGES_DEFAULT_LIMIT = 100
MESSAGES_MAX_LIMIT = 500

Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="Page size.")]
SEARCH_HELP = (
    "Search titles and message text: every word (letters and digits) must match, case and Latin diacritics "
    "ignored; other characters only separate words. Blank: the plain list."
)
ORDER_HELP = "`desc`: the newest messages first; the next cursor pages back in time."
MessageLimit = Annotated[int, QueryParameter(ge=1, le=MESSAGES_MAX_LIMIT, description="Messages per page.")]


def provide_conversation_rows(state: State) -> ConversationRows:
    """Dependency: the app's conversation rows (renames and deletes)."""
    rows: ConversationRows = state.conversation_rows
    return rows


class ConversationController(Controller):
    """`/api/conversations`: list, read, rename and delete the caller's conversations."""

    path = "/api/conversations"
    tags = ["conversations"]
    dependencies = {
        "chat_service": Provide(provide_chat_service, sync_to_thread=False),
        "conversation_rows": Provide(provide_conversation_rows, sync_to_thread=False),
    }

    @get("/", operation_id="ListConversations")
    async def list_conversations(
        self,
        db_session: NamedDependency[AsyncSession],
        user: NamedDependency[User],
        limit: Limit = DEFAULT_LIMIT,
        cursor: FromQuery[str | None] = None,
        archived: Annotated[bool, QueryParameter(description="List the archived conversations instead.")] = False,
        q: Annotated[str | None, QueryParameter(max_length=MAX_QUERY_CHARS, description=SEARCH_HELP)] = None,
    ) -> ConversationsPublic:
        """List conversations, most recently updated first, with a preview of each one's last message.

        Archived conversations are listed only with `?archived=true` (and then only they). With `q`, only the
        conversations whose title or messages contain every word of it, best match first, each with a `snippet`.
        """
        if q is not None and q.strip():
            page, next_cursor = await search_conversations(
                db_session, user.id, q, limit=limit, cursor=cursor, archived=archived
            )
        else:
            page, next_cursor = await conversation_service.list_conversations(
                db_session, user.id, limit=limit, cursor=cursor, archived=archived
            )
        return ConversationsPublic(data=page, next_cursor=next_cursor)

    @get("/{conversation_id:uuid}", operation_id="GetConversation")
    async def get_conversation(
        self,
        db_session: NamedDependency[AsyncSession],
        user: NamedDependency[User],
        conversation_id: FromPath[uuid.UUID],
        limit: MessageLimit = MESSAGES_DEFAULT_LIMIT,
        cursor: FromQuery[str | None] = None,
        order: Annotated[MessageOrder, QueryParameter(description=ORDER_HELP)] = MessageOrder.ASC,
    ) -> ConversationDetail:
        """Read a conversation and one page of its active branch, in order (or newest first), tool calls included.

        Each message says which of its versions it is (`sibling_index` of `sibling_count`, ids in `sibling_ids`).
        """
        return await conversation_service.conversation_detail(
            db_session, user.id, conversation_id, limit=limit, cursor=cursor, order=order
        )

    @put("/{conversation_id:uuid}/branch", operation_id="SwitchBranch", status_code=200)
    async def switch_branch(
        self,
        db_session: NamedDependency[AsyncSession],
        conversation_rows: NamedDependency[ConversationRows],
        user: NamedDependency[User],
        conversation_id: FromPath[uuid.UUID],
        data: JSONBody[BranchSwitch],
        limit: MessageLimit = MESSAGES_DEFAULT_LIMIT,
    ) -> ConversationDetail:
        """Make the branch through `message_id` the active one (shown and replayed to the model); return its first page.

        The branch ends at the newest message under `message_id`. Refused with `409 run_in_progress` while a reply is
        being generated.
        """
        await conversation_rows.switch_branch(user.id, conversation_id, data.message_id)
        return await conversation_service.conversation_detail(db_session, user.id, conversation_id, limit=limit)

    @post(
        "/{conversation_id:uuid}/messages/{message_id:uuid}/regenerate",
        operation_id="RegenerateReply",
        media_type="text/event-stream",
        status_code=200,
    )
    async def regenerate(
        self,
        chat_service: NamedDependency[ChatService],
        user: NamedDependency[User],
        conversation_id: FromPath[uuid.UUID],
        message_id: FromPath[uuid.UUID],
        data: JSONBody[RegenerateRequest],
    ) -> EventSourceResponse:
        """Answer a user message again and stream the new reply, like `POST /chatkit`: `start` ... `done`.

        `message_id` is the user message, or one of its replies. The new reply is a sibling of the earlier ones (which
        stay stored) and becomes the active branch.
        """
        subscription = await chat_service.execute(user.id, data.to_command(conversation_id, message_id))
        return event_stream(chat_service, subscription)

    @patch("/{conversation_id:uuid}", operation_id="RenameConversation")
    async def rename_conversation(
        self,
        conversation_rows: NamedDependency[ConversationRows],
        user: NamedDependency[User],
        conversation_id: FromPath[uuid.UUID],
        data: JSONBody[ConversationUpdate],
    ) -> ConversationPublic:
        """Rename (1 to 200 characters after trimming), archive or unarchive a conversation."""
        conversation = await conversation_rows.update_conversation(
            user.id, conversation_id, title=data.title, archived=data.archived
        )
        return ConversationPublic.model_validate(conversation)

    @delete("/{conversation_id:uuid}", operation_id="DeleteConversation", status_code=HTTP_204_NO_CONTENT)
    async def delete_conversation(
        self,
        conversation_rows: NamedDependency[ConversationRows],
        user: NamedDependency[User],
        conversation_id: FromPath[uuid.UUID],
    ) -> None:
        """Delete a conversation and all its messages."""
        await conversation_rows.delete_conversation(user.id, conversation_id)

    @post("/{conversation_id:uuid}/stop", operation_id="StopConversationRun", status_code=200)
    async def stop(
        self,
        chat_service: NamedDependency[ChatService],
        user: NamedDependency[User],
        conversation_id: FromPath[uuid.UUID],
    ) -> StopPublic:
        """Stop the running reply, wherever it runs; idempotent. The partial reply is stored as `cancelled`."""
        result = await chat_service.stop(user.id, conversation_id)
        return StopPublic(
            message_id=result.message_id, status=result.status, stopped=result.stopped, detail=result.detail
        )
