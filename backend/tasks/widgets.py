"""The task-list widget and its `tasks.toggle` action: checkboxes that complete and reopen tasks.

`task_list_widget(tasks)` builds a Card with a List of the tasks, each a Checkbox bound to `tasks.toggle` with the
payload `{task_id, completed}` (the state the click asks for). The handler applies it through the task service, for
the acting user only (another user's task is a 404), and returns the refreshed widget.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from backend.chat.actions import ActionContext, ActionRegistry, ActionResult, registry
from backend.chat.widgets import Action, Card, Checkbox, ListItem, ListView, Text, Widget
from backend.models import TaskUpdate
from backend.tasks import service as task_service

TASK_LIST_WIDGET_ID = "task-list"
TOGGLE_ACTION = "tasks.toggle"
WIDGET_TASK_LIMIT = 50


class TogglePayload(BaseModel):
    """The payload of `tasks.toggle`: which task, and the state the user asked for."""

    model_config = ConfigDict(extra="forbid")

    task_id: uuid.UUID
    completed: bool


class TaskView(Protocol):
    """What the task-list widget shows of a task."""

    @property
    def id(self) -> uuid.UUID: ...  # noqa: D102
    @property
    def title(self) -> str: ...  # noqa: D102
    @property
    def completed(self) -> bool: ...  # noqa: D102


@dataclass(frozen=True, slots=True)
class _ListedTask:
    id: uuid.UUID
    title: str
    completed: bool


def task_list_widget_of_result(result: Mapping[str, object]) -> Widget | None:
    """The task-list widget for a `list_tasks` tool result (None when the result is an error)."""
    tasks = result.get("tasks")
    if not isinstance(tasks, list):
        return None
    return task_list_widget(
        [_ListedTask(uuid.UUID(str(t["id"])), str(t["title"]), bool(t["completed"])) for t in tasks]
    )


def task_list_widget(tasks: Sequence[TaskView]) -> Widget:
    """A card listing tasks as checkboxes; ticking one completes it, unticking reopens it.

    Args:
        tasks: The tasks to show, in order (at most `WIDGET_TASK_LIMIT` are shown).

    Returns:
        The widget, with id `task-list`.
    """
    shown = list(tasks)[:WIDGET_TASK_LIMIT]
    items = [
        ListItem(
            id=f"task-{task.id}",
            children=[
                Checkbox(
                    label=task.title,
                    checked=task.completed,
                    action=Action(
                        type=TOGGLE_ACTION, payload={"task_id": str(task.id), "completed": not task.completed}
                    ),
                )
            ],
        )
        for task in shown
    ]
    open_count = sum(not task.completed for task in shown)
    children: list[Text | ListView] = [
        Text(value=f"{open_count} open, {len(shown) - open_count} done", size="sm", tone="secondary")
    ]
    if items:
        children.append(ListView(label="Tasks", children=items))
    else:
        children.append(Text(value="No tasks yet.", tone="secondary"))
    return Card(id=TASK_LIST_WIDGET_ID, title="Tasks", children=children)


async def toggle_task(context: ActionContext, payload: TogglePayload) -> ActionResult:
    """Complete or reopen one of the user's tasks, and return the refreshed task list.

    Raises:
        NotFoundError: If the task does not exist or is another user's.
    """
    async with context.database.sessions() as session:
        task = await task_service.update_task(
            session, context.user_id, payload.task_id, TaskUpdate(completed=payload.completed)
        )
        tasks, _ = await task_service.list_tasks(session, context.user_id, limit=WIDGET_TASK_LIMIT)
    verb = "Completed" if task.completed else "Reopened"
    return ActionResult(widgets={TASK_LIST_WIDGET_ID: task_list_widget(tasks)}, reply=f"{verb} “{task.title}”.")


def register_task_actions(target: ActionRegistry = registry) -> None:
    """Register `tasks.toggle` (idempotent)."""
    target.register(TOGGLE_ACTION, toggle_task)
