"""The task tools, defined once: name, description, input model and behaviour.

Both the agents' function tools (`backend.team.tools`) and the MCP server at `/mcp` (`backend.mcp.server`) are
generated from `TASK_TOOLS`, so they share names, descriptions and JSON input schemas, and both call the task service.
A tool acts only for the `ToolScope` it is given: the run context's user in chat, the verified token's user over MCP.
The arguments never name a user.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backend.chat.widgets import Widget
from backend.db import Database
from backend.errors import AppError
from backend.models import Task, TaskCreate, TaskPublic, TaskUpdate
from backend.tasks import service as task_service
from backend.tasks.widgets import task_list_widget_of_result

LIST_LIMIT = 100

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolScope:
    """Whose tasks a tool call may touch, and where they live."""

    user_id: str
    database: Database


class AddTaskArgs(BaseModel):
    """Arguments of `add_task`."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(description="What needs doing, in a few words.")
    notes: str | None = Field(default=None, description="Optional details.")


class ListTasksArgs(BaseModel):
    """Arguments of `list_tasks`."""

    model_config = ConfigDict(extra="forbid")

    completed: bool | None = Field(
        default=None, description="True for only finished tasks, False for only open ones; omit for all."
    )


class TaskRefArgs(BaseModel):
    """Arguments of the tools that act on one task."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="The task's id or title.")


class UpdateTaskArgs(BaseModel):
    """Arguments of `update_task`."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="The task's id or current title.")
    title: str | None = Field(default=None, description="The new title, if it changes.")
    notes: str | None = Field(default=None, description="The new notes, if they change.")
    completed: bool | None = Field(default=None, description="The new completion state, if it changes.")


@dataclass(frozen=True, slots=True)
class TaskTool:
    """One tool definition, from which each protocol's tool is generated.

    Attributes:
        name: The tool name the model (or MCP client) calls.
        description: What the tool does, shown to the model.
        args: The pydantic model of the arguments; its JSON schema is the tool's input schema.
        run: The behaviour: validated arguments and the caller's scope in, a JSON object out.
        needs_approval: Whether a person must approve a call before it runs (in chat, the run pauses): always, or
            decided per call once the arguments are known (e.g. only once the target is found, so that nobody
            approves a call that then fails).
        widget: Builds the widget a chat shows for a result (None for no widget); MCP clients get the JSON only.
    """

    name: str
    description: str
    args: type[BaseModel]
    run: Callable[[ToolScope, Any], Awaitable[JsonObject]]
    needs_approval: bool | Callable[[ToolScope, Any], Awaitable[bool]] = False
    widget: Callable[[JsonObject], Widget | None] | None = None

    def input_schema(self) -> JsonObject:
        """The JSON schema of the arguments, published unchanged by every protocol."""
        return self.args.model_json_schema()

    async def approval_needed(self, scope: ToolScope, arguments: Mapping[str, object]) -> bool:
        """Whether this call waits for a person. Invalid arguments need none: the call fails without running.

        Args:
            scope: Whose tasks the call may touch.
            arguments: The raw arguments from the model.
        """
        if isinstance(self.needs_approval, bool):
            return self.needs_approval
        try:
            return await self.needs_approval(scope, self.args.model_validate(arguments))
        except (AppError, ValidationError):
            return False

    async def invoke(self, scope: ToolScope, arguments: Mapping[str, object]) -> JsonObject:
        """Validate the arguments and run the tool; expected failures come back as `{"error": ...}`.

        Args:
            scope: Whose tasks the call may touch.
            arguments: The raw arguments from the model or MCP client.

        Returns:
            The tool's JSON result, or `{"error": message}` for an unknown task or invalid input.
        """
        try:
            return await self.run(scope, self.args.model_validate(arguments))
        except (AppError, ValidationError) as error:
            return {"error": error_message(error)}


def error_message(error: Exception) -> str:
    """Describe an expected tool failure in one line (the first validation problem names its field)."""
    if isinstance(error, ValidationError):
        problem = error.errors()[0]
        return f"{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}"
    return str(error)


def to_json(result: JsonObject) -> str:
    """Encode a tool result the way both protocols send it."""
    return json.dumps(result, ensure_ascii=False)


def _task_json(task: Task) -> JsonObject:
    return TaskPublic.model_validate(task).model_dump(mode="json", exclude={"created_at", "updated_at"})


async def _add(scope: ToolScope, args: AddTaskArgs) -> JsonObject:
    data = TaskCreate(title=args.title, notes=args.notes)
    async with scope.database.sessions() as session:
        task = await task_service.create_task(session, scope.user_id, data)
    return {"task": _task_json(task)}


async def _list(scope: ToolScope, args: ListTasksArgs) -> JsonObject:
    async with scope.database.reads() as session:
        tasks, next_cursor = await task_service.list_tasks(
            session, scope.user_id, completed=args.completed, limit=LIST_LIMIT
        )
    return {"tasks": [_task_json(task) for task in tasks], "truncated": next_cursor is not None}


async def _change(scope: ToolScope, reference: str, update: TaskUpdate) -> JsonObject:
    async with scope.database.sessions() as session:
        found = await task_service.find_task(session, scope.user_id, reference)
        changed = await task_service.update_task(session, scope.user_id, found.id, update)
    return {"task": _task_json(changed)}


async def _complete(scope: ToolScope, args: TaskRefArgs) -> JsonObject:
    return await _change(scope, args.task, TaskUpdate(completed=True))


async def _update(scope: ToolScope, args: UpdateTaskArgs) -> JsonObject:
    fields = args.model_dump(exclude={"task"}, exclude_none=True)
    return await _change(scope, args.task, TaskUpdate(**fields))


async def _target_exists(scope: ToolScope, args: TaskRefArgs) -> bool:
    """Ask for approval only once the task is found: an unknown or ambiguous reference fails without asking."""
    async with scope.database.reads() as session:
        try:
            await task_service.find_task(session, scope.user_id, args.task)
        except AppError:
            return False
    return True


async def _delete(scope: ToolScope, args: TaskRefArgs) -> JsonObject:
    async with scope.database.sessions() as session:
        found = await task_service.find_task(session, scope.user_id, args.task)
        await task_service.delete_task(session, scope.user_id, found.id)
    return {"deleted": _task_json(found)}


TASK_TOOLS: tuple[TaskTool, ...] = (
    TaskTool("add_task", "Add a task to the user's list.", AddTaskArgs, _add),
    TaskTool(
        "list_tasks", "List the user's tasks, oldest first.", ListTasksArgs, _list, widget=task_list_widget_of_result
    ),
    TaskTool("complete_task", "Mark one of the user's tasks as done.", TaskRefArgs, _complete),
    TaskTool("update_task", "Change a task's title, notes or completion.", UpdateTaskArgs, _update),
    TaskTool("delete_task", "Delete one of the user's tasks.", TaskRefArgs, _delete, needs_approval=_target_exists),
)
TASK_TOOL_NAMES = frozenset(tool.name for tool in TASK_TOOLS)
