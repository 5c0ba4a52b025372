"""The example agent: a task assistant.

Replace this module with your own agent and tools; the streaming code only needs `build_agent(model,
model_settings)` returning an `Agent[ChatContext]`.

The tools take the user from the run context, never from the model's arguments, so no conversation can reach
another user's tasks whatever the model says.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from agents import Agent, FunctionTool, Model, ModelSettings, RunContextWrapper, Tool, function_tool
from pydantic import ValidationError

from backend.chat.context import ChatContext
from backend.errors import AppError
from backend.models import Task, TaskCreate, TaskPublic, TaskUpdate
from backend.tasks import service as task_service

INSTRUCTIONS = """You are a concise task assistant inside a chat app. You manage the user's to-do list with your
tools: add_task, list_tasks, complete_task, update_task and delete_task. Tasks may be referred to by title or id.
Call list_tasks when you need to know what exists. After a tool runs, confirm what changed in one short sentence.
For anything unrelated to tasks, answer briefly and helpfully."""

LIST_LIMIT = 100


def _task_json(task: Task) -> dict[str, Any]:
    return TaskPublic.model_validate(task).model_dump(mode="json", exclude={"created_at", "updated_at"})


def _ok(**payload: Any) -> str:
    return json.dumps(payload, ensure_ascii=False)


def _failed(error: Exception) -> str:
    if isinstance(error, ValidationError):
        problem = error.errors()[0]
        message = f"{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}"
    else:
        message = str(error)
    return json.dumps({"error": message}, ensure_ascii=False)


def task_tool(function: Callable[..., Awaitable[str]]) -> FunctionTool:
    """Make a task tool: expected failures (unknown task, invalid title) go back to the model as `{"error": ...}`.

    Args:
        function: An async tool function taking the run context first and returning JSON text.

    Returns:
        The Agents SDK function tool.
    """

    @functools.wraps(function)
    async def reporting_errors(*args: Any, **kwargs: Any) -> str:
        try:
            return await function(*args, **kwargs)
        except (AppError, ValidationError) as error:
            return _failed(error)

    return function_tool(reporting_errors)


@task_tool
async def add_task(ctx: RunContextWrapper[ChatContext], title: str, notes: str | None = None) -> str:
    """Add a task to the user's list.

    Args:
        ctx: The run context; it carries the user.
        title: What needs doing, in a few words.
        notes: Optional details.
    """
    data = TaskCreate(title=title, notes=notes)
    async with ctx.context.database.sessions() as session:
        task = await task_service.create_task(session, ctx.context.user_id, data)
    return _ok(task=_task_json(task))


@task_tool
async def list_tasks(ctx: RunContextWrapper[ChatContext], completed: bool | None = None) -> str:
    """List the user's tasks, oldest first.

    Args:
        ctx: The run context; it carries the user.
        completed: True for only finished tasks, False for only open ones; omit for all.
    """
    async with ctx.context.database.sessions() as session:
        tasks, next_cursor = await task_service.list_tasks(
            session, ctx.context.user_id, completed=completed, limit=LIST_LIMIT
        )
    return _ok(tasks=[_task_json(task) for task in tasks], truncated=next_cursor is not None)


async def _change(ctx: RunContextWrapper[ChatContext], task: str, update: TaskUpdate) -> str:
    async with ctx.context.database.sessions() as session:
        found = await task_service.find_task(session, ctx.context.user_id, task)
        changed = await task_service.update_task(session, ctx.context.user_id, found.id, update)
    return _ok(task=_task_json(changed))


@task_tool
async def complete_task(ctx: RunContextWrapper[ChatContext], task: str) -> str:
    """Mark one of the user's tasks as done.

    Args:
        ctx: The run context; it carries the user.
        task: The task's id or title.
    """
    return await _change(ctx, task, TaskUpdate(completed=True))


@task_tool
async def update_task(
    ctx: RunContextWrapper[ChatContext],
    task: str,
    title: str | None = None,
    notes: str | None = None,
    completed: bool | None = None,
) -> str:
    """Change a task's title, notes or completion.

    Args:
        ctx: The run context; it carries the user.
        task: The task's id or current title.
        title: The new title, if it changes.
        notes: The new notes, if they change.
        completed: The new completion state, if it changes.
    """
    fields = {"title": title, "notes": notes, "completed": completed}
    return await _change(ctx, task, TaskUpdate.model_validate({k: v for k, v in fields.items() if v is not None}))


@task_tool
async def delete_task(ctx: RunContextWrapper[ChatContext], task: str) -> str:
    """Delete one of the user's tasks.

    Args:
        ctx: The run context; it carries the user.
        task: The task's id or title.
    """
    async with ctx.context.database.sessions() as session:
        found = await task_service.find_task(session, ctx.context.user_id, task)
        await task_service.delete_task(session, ctx.context.user_id, found.id)
    return _ok(deleted=_task_json(found))


TOOLS: list[Tool] = [add_task, list_tasks, complete_task, update_task, delete_task]


def build_agent(model: Model, model_settings: ModelSettings) -> Agent[ChatContext]:
    """Build the task assistant.

    Args:
        model: The model to run (LiteLLM or the offline demo model), from `backend.chat.model`.
        model_settings: Settings such as usage reporting and retries, from `backend.chat.model`.

    Returns:
        The agent every chat turn runs.
    """
    return Agent[ChatContext](
        name="Task assistant", instructions=INSTRUCTIONS, tools=TOOLS, model=model, model_settings=model_settings
    )
