"""HTTP routes for the user's tasks. Handlers parse input, call the service and return."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.auth import User
from backend.models import TaskCreate, TaskPublic, TasksPublic, TaskUpdate
from backend.pagination import DEFAULT_LIMIT, MAX_LIMIT
from backend.tasks import service as task_service

Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="Page size.")]


class TaskController(Controller):
    """`/api/tasks`: list, create, read, update and delete the caller's tasks."""

    path = "/api/tasks"
    tags = ["tasks"]

    @get("/", operation_id="ListTasks")
    async def list_tasks(
        self,
        db_session: NamedDependency[AsyncSession],
        user: NamedDependency[User],
        completed: FromQuery[bool | None] = None,
        limit: Limit = DEFAULT_LIMIT,
        cursor: FromQuery[str | None] = None,
    ) -> TasksPublic:
        """List tasks, oldest first, optionally only completed or only open ones."""
        rows, next_cursor = await task_service.list_tasks(
            db_session, user.id, completed=completed, limit=limit, cursor=cursor
        )
        return TasksPublic(data=[TaskPublic.model_validate(row) for row in rows], next_cursor=next_cursor)

    @post("/", operation_id="CreateTask", status_code=HTTP_201_CREATED)
    async def create_task(
        self, db_session: NamedDependency[AsyncSession], user: NamedDependency[User], data: JSONBody[TaskCreate]
    ) -> TaskPublic:
        """Create a task."""
        return TaskPublic.model_validate(await task_service.create_task(db_session, user.id, data))

    @get("/{task_id:uuid}", operation_id="GetTask")
    async def get_task(
        self, db_session: NamedDependency[AsyncSession], user: NamedDependency[User], task_id: FromPath[uuid.UUID]
    ) -> TaskPublic:
        """Read one task."""
        return TaskPublic.model_validate(await task_service.get_task(db_session, user.id, task_id))

    @patch("/{task_id:uuid}", operation_id="UpdateTask")
    async def update_task(
        self,
        db_session: NamedDependency[AsyncSession],
        user: NamedDependency[User],
        task_id: FromPath[uuid.UUID],
        data: JSONBody[TaskUpdate],
    ) -> TaskPublic:
        """Change a task's title, notes or completion."""
        return TaskPublic.model_validate(await task_service.update_task(db_session, user.id, task_id, data))

    @delete("/{task_id:uuid}", operation_id="DeleteTask", status_code=HTTP_204_NO_CONTENT)
    async def delete_task(
        self, db_session: NamedDependency[AsyncSession], user: NamedDependency[User], task_id: FromPath[uuid.UUID]
    ) -> None:
        """Delete a task."""
        await task_service.delete_task(db_session, user.id, task_id)
