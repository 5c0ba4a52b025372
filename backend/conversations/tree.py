"""The message tree of a conversation, read: the active path, a message's versions, the newest leaf under a message.

Each message has a `parent_id` (null for a first message); versions of a message (an edited user message, a
regenerated reply) are siblings: messages with the same parent. `conversations.active_leaf_id` names the branch that
is shown and replayed to the model: the path from the first message to that leaf. A message's `seq` is still unique
and increasing in its conversation, so the path in `seq` order is the path from the root down.

No transactions here: the stores run these statements (a turn moves the leaf in `backend.chat.store`, a branch
switch in `backend.conversations.store`). A conversation without `active_leaf_id` but with messages (rows written
without the tree) is one flat branch in `seq` order until its next turn chains it (`chain_in_order`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import CTE, ColumnElement, ScalarSelect, Update, literal, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.models import Message

__all__ = ["Versions", "chain_in_order", "last_message", "newest_leaf_under", "on_path", "path_to", "versions"]


def path_to(leaf: uuid.UUID | ColumnElement[uuid.UUID] | ScalarSelect[uuid.UUID], depth: int | None = None) -> CTE:
    """The ids on the path from `leaf` up to its first message (a recursive CTE with columns `id`, `depth`).

    Args:
        leaf: The last message of the path (an id, or a scalar subquery such as `active_leaf`).
        depth: Stop after this many messages from the leaf (None: the whole path).
    """
    path = (
        sa_select(col(Message.id).label("id"), col(Message.parent_id).label("parent_id"), literal(1).label("depth"))
        .where(col(Message.id) == leaf)
        .cte("path", recursive=True)
    )
    up = select(col(Message.id), col(Message.parent_id), (path.c.depth + 1).label("depth")).join(
        path, col(Message.id) == path.c.parent_id
    )
    if depth is not None:
        up = up.where(path.c.depth < depth)
    return path.union_all(up)


def on_path(path: CTE) -> ColumnElement[bool]:
    """The condition that a message is on `path`."""
    return col(Message.id).in_(select(path.c.id))


@dataclass(frozen=True, slots=True)
class Versions:
    """A message's versions: the ids of its siblings (itself included), oldest first."""

    ids: list[uuid.UUID]


async def versions(
    session: AsyncSession, conversation_id: uuid.UUID, messages: Sequence[Message]
) -> dict[uuid.UUID, Versions]:
    """The versions of each of `messages` (one query for a page of messages).

    Returns:
        Message id -> its versions.
    """
    parents = {m.parent_id for m in messages}
    if not parents:
        return {}
    known = [p for p in parents if p is not None]
    same_parent: ColumnElement[bool] = col(Message.parent_id).in_(known)
    if None in parents:
        same_parent = or_(same_parent, col(Message.parent_id).is_(None))
    rows = (
        await session.exec(
            select(Message.id, Message.parent_id)
            .where(col(Message.conversation_id) == conversation_id, same_parent)
            .order_by(col(Message.seq))
        )
    ).all()
    by_parent: dict[uuid.UUID | None, list[uuid.UUID]] = {}
    for message_id, parent_id in rows:
        by_parent.setdefault(parent_id, []).append(message_id)
    return {m.id: Versions(by_parent.get(m.parent_id, [m.id])) for m in messages}


async def newest_leaf_under(session: AsyncSession, conversation_id: uuid.UUID, message_id: uuid.UUID) -> uuid.UUID:
    """The newest message in the subtree of `message_id` (itself if it has no replies): always a leaf.

    The newest message of a subtree has no children (a child is always newer than its parent), so the branch through
    `message_id` that was written last ends there.
    """
    tree = (
        select(col(Message.id).label("id"), col(Message.seq).label("seq"))
        .where(col(Message.id) == message_id, col(Message.conversation_id) == conversation_id)
        .cte("subtree", recursive=True)
    )
    tree = tree.union_all(select(col(Message.id), col(Message.seq)).join(tree, col(Message.parent_id) == tree.c.id))
    newest = (await session.exec(select(tree.c.id).order_by(tree.c.seq.desc()).limit(1))).first()
    return newest if newest is not None else message_id


def chain_in_order(conversation_id: uuid.UUID) -> Update:
    """The statement that makes a flat conversation one branch: each message's parent is the one before it by `seq`.

    For conversations written without a tree (no `active_leaf_id`: rows inserted by hand, or by tools that predate
    it); migration 0007 did the same to every conversation.
    """
    prev = aliased(Message)
    before = (
        select(prev.id)
        .where(col(prev.conversation_id) == col(Message.conversation_id), col(prev.seq) < col(Message.seq))
        .order_by(col(prev.seq).desc())
        .limit(1)
        .scalar_subquery()
    )
    return update(Message).where(col(Message.conversation_id) == conversation_id).values(parent_id=before)


def last_message(conversation_id: uuid.UUID) -> ScalarSelect[uuid.UUID]:
    """The id of the conversation's newest message (by `seq`), as a scalar subquery."""
    return (
        select(Message.id)
        .where(col(Message.conversation_id) == conversation_id)
        .order_by(col(Message.seq).desc())
        .limit(1)
        .scalar_subquery()
    )
