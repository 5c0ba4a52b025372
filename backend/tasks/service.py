"""The task service: plain async functions over a session, free of HTTP. The REST API and the agent's tools share it."""

from __future__ import annotations

import uuid

from sqlalchemy import insert, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.errors import NotFoundError
from backend.models import Task, TaskCreate, TaskUpdate, utcnow
from backend.ownership import owned
from backend.pagination import DEFAULT_LIMIT, after_time_cursor, encode_time_cursor, page_of

TASK_NOT_FOUND = "Task not found."


async def list_tasks(
    session: AsyncSession,
    user_id: str,
    *,
    completed: bool | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> tuple[list[Task], str | None]:
    """List a user's tasks, oldest first.

    Args:
        session: An open session.
        user_id: The owner.
        completed: Only completed (True) or open (False) tasks; None for all.
        limit: Page size.
        cursor: Where the previous page ended.

    Returns:
        The page and the cursor of the next page (None at the end).
    """
    query = select(Task).where(Task.user_id == user_id)
    if completed is not None:
        query = query.where(Task.completed == completed)
    if cursor:
        query = query.where(after_time_cursor(col(Task.created_at), col(Task.id), cursor, descending=False))
    query = query.order_by(col(Task.created_at), col(Task.id)).limit(limit + 1)
    rows, more = page_of(list((await session.exec(query)).all()), limit)
    next_cursor = encode_time_cursor(rows[-1].created_at, rows[-1].id) if more else None
    return rows, next_cursor


async def get_task(session: AsyncSession, user_id: str, task_id: uuid.UUID) -> Task:
    """Fetch one of the user's tasks.

    Raises:
        NotFoundError: If it does not exist or belongs to another user.
    """
    return await owned(session, Task, task_id, user_id, TASK_NOT_FOUND)


async def create_task(session: AsyncSession, user_id: str, data: TaskCreate) -> Task:
    """Create a task for the user and commit it."""
    task = Task(user_id=user_id, title=data.title, notes=data.notes or None, completed=data.completed)
    # RETURNING gives the row as stored (see backend.storable) in the same round trip; no read-back afterwards.
    stored: Task = (await session.exec(insert(Task).values(task.model_dump()).returning(Task))).scalars().one()
    await session.commit()
    return stored


async def update_task(session: AsyncSession, user_id: str, task_id: uuid.UUID, data: TaskUpdate) -> Task:
    """Apply the fields set in `data` to one of the user's tasks and commit.

    Raises:
        NotFoundError: If it does not exist or belongs to another user.
    """
    changes = data.model_dump(exclude_unset=True)
    if changes.get("title") is None:
        changes.pop("title", None)
    if changes.get("completed") is None:
        changes.pop("completed", None)
    if "notes" in changes:
        changes["notes"] = changes["notes"] or None
    # One statement: the ownership check, the change and the row as stored (see backend.storable), via RETURNING.
    changed = await session.exec(
        update(Task)
        .where(col(Task.id) == task_id, col(Task.user_id) == user_id)
        .values(**changes, updated_at=utcnow())
        .returning(Task)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    task: Task | None = changed.scalars().one_or_none()
    if task is None:
        raise NotFoundError(TASK_NOT_FOUND)
    await session.commit()
    return task


async def delete_task(session: AsyncSession, user_id: str, task_id: uuid.UUID) -> None:
    """Delete one of the user's tasks and commit.

    Raises:
        NotFoundError: If it does not exist or belongs to another user.
    """
    task = await get_task(session, user_id, task_id)
    await session.delete(task)
    await session.commit()


async def find_task(session: AsyncSession, user_id: str, reference: str) -> Task:
    """Find one of the user's tasks by id or by title (exact, then unique partial match, case-insensitive).

    This is what lets a chat user say "complete buy milk" instead of quoting an id.

    Args:
        session: An open session.
        user_id: The owner.
        reference: A task id, or (part of) its title.

    Returns:
        The task.

    Raises:
        NotFoundError: If nothing matches, or a partial title matches several tasks.
    """
    reference = reference.strip()
    try:
        return await get_task(session, user_id, uuid.UUID(reference))
    except ValueError:
        pass
    needle = reference.casefold()
    tasks = list((await session.exec(select(Task).where(Task.user_id == user_id))).all())
    exact = [task for task in tasks if task.title.casefold() == needle]
    partial = exact or [task for task in tasks if needle and needle in task.title.casefold()]
    if len(partial) == 1:
        return partial[0]
    if not partial:
        raise NotFoundError(f"No task matches {reference!r}.")
    raise NotFoundError(f"{len(partial)} tasks match {reference!r}; say which one by its full title or id.")
