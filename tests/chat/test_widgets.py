"""Widgets (validation, wire form, schema) and widget actions (registry, dispatch, the task-list toggle)."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
from pydantic import BaseModel

from backend.app import create_app
from backend.chat.actions import ActionContext, ActionRegistry, ActionResult, UnknownActionError, registry
from backend.chat.widgets import (
    MAX_CHILDREN,
    MAX_DEPTH,
    MAX_NODES,
    MAX_PAYLOAD_BYTES,
    MAX_TEXT_CHARS,
    Action,
    Card,
    Checkbox,
    ListView,
    Text,
    WidgetError,
    is_safe_image_src,
    validate_widget,
    widget_json,
    widget_schema,
)
from backend.db import Database
from backend.errors import NotFoundError, app_error_handler
from backend.models import Task
from backend.settings import load_settings
from backend.tasks.widgets import TASK_LIST_WIDGET_ID, TOGGLE_ACTION, register_task_actions, task_list_widget
from tests.seeding import insert_tasks, seed_conversation

PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)

EVERY_COMPONENT: dict[str, Any] = {
    "type": "card",
    "id": "sample",
    "title": "Sample",
    "children": [
        {"type": "text", "value": "Heading", "size": "lg", "weight": "bold", "tone": "default"},
        {
            "type": "row",
            "gap": "md",
            "children": [
                {"type": "badge", "label": "new", "tone": "success"},
                {"type": "image", "src": "https://example.com/a.png", "alt": "A picture", "width": 32, "height": 32},
                {"type": "image", "src": PNG, "alt": ""},
            ],
        },
        {"type": "divider"},
        {
            "type": "column",
            "children": [
                {
                    "type": "list",
                    "label": "Things",
                    "children": [
                        {"type": "list_item", "children": [{"type": "text", "value": "one"}]},
                        {
                            "type": "list_item",
                            "children": [
                                {
                                    "type": "checkbox",
                                    "label": "two",
                                    "checked": True,
                                    "action": {"type": "demo.check", "payload": {"n": 2}},
                                }
                            ],
                        },
                    ],
                },
                {"type": "button", "label": "Go", "style": "primary", "action": {"type": "demo.go", "payload": {}}},
            ],
        },
    ],
}


def nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "text", "value": "leaf"}
    for _ in range(depth - 1):
        node = {"type": "column", "children": [node]}
    return {**node, "id": "deep"}


def rejected(data: Any) -> str:
    with pytest.raises(WidgetError) as caught:
        validate_widget(data)
    return caught.value.message


# --- the component tree ------------------------------------------------------------------------------------------


def test_every_component_round_trips_through_the_wire_form():
    widget = validate_widget(EVERY_COMPONENT)
    assert isinstance(widget, Card) and widget.id == "sample"
    wire = widget_json(widget)
    json.dumps(wire)  # plain JSON
    assert validate_widget(wire) == widget
    assert wire["children"][3]["children"][0]["children"][1]["children"][0]["action"] == {
        "type": "demo.check",
        "payload": {"n": 2},
    }
    assert "id" not in wire["children"][0]  # unset optional fields are left out


def test_schema_documents_every_component():
    schema = json.dumps(widget_schema())
    for name in ("card", "row", "column", "text", "badge", "divider", "image", "list", "list_item", "button"):
        assert f'"const": "{name}"' in schema, name
    assert '"checkbox"' in schema and '"payload"' in schema


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda w: w.pop("id"), "root component needs an id"),
        (lambda w: w["children"].append({"type": "marquee"}), "does not match any of the expected tags"),
        (lambda w: w["children"][0].update(value="x" * (MAX_TEXT_CHARS + 1)), "at most 2000 characters"),
        (lambda w: w["children"][0].update(tone="neon"), "children.0.text.tone"),
        (lambda w: w["children"][0].update(onclick="x"), "Extra inputs are not permitted"),
        (lambda w: w["children"][3]["children"][1].update(action={"type": "Bad Type!"}), "action.type"),
        (lambda w: w["children"][3]["children"][1].pop("action"), "action: Field required"),
        (lambda w: w["children"][3]["children"][0]["children"].append({"type": "text", "value": "x"}), "list_item"),
    ],
)
def test_invalid_widgets_get_one_short_message(change, expected):
    data = copy.deepcopy(EVERY_COMPONENT)
    change(data)
    message = rejected(data)
    assert expected in message and message.startswith("Invalid widget") and "\n" not in message


@pytest.mark.parametrize(
    "src",
    [
        "http://example.com/a.png",
        "javascript:alert(1)",
        "data:text/html;base64,PGI+",
        "data:image/svg+xml;base64,PHN2Zz4=",
        "data:image/png,rawbytes",
        "//example.com/a.png",
        "https:///nohost.png",
        "https://example.com/a b.png",
        "/static/a.png",
    ],
)
def test_unsafe_image_sources_are_rejected(src):
    assert not is_safe_image_src(src)
    assert "only https: URLs and data:image" in rejected({"type": "image", "id": "i", "src": src, "alt": ""})


@pytest.mark.parametrize("src", ["https://example.com/a.png?x=1", PNG, "data:image/webp;base64,UklGRg=="])
def test_safe_image_sources_are_accepted(src):
    assert validate_widget({"type": "image", "id": "i", "src": src, "alt": "x"}).src == src


def test_depth_children_and_node_counts_are_bounded():
    assert validate_widget(nested(MAX_DEPTH)).id == "deep"
    assert f"more than {MAX_DEPTH} levels" in rejected(nested(MAX_DEPTH + 1))
    assert f"more than {MAX_DEPTH} levels" in rejected(nested(5000))  # no recursion error on hostile input
    wide = {"type": "column", "id": "w", "children": [{"type": "divider"}] * (MAX_CHILDREN + 1)}
    assert f"more than {MAX_CHILDREN} children" in rejected(wide)
    column = {"type": "column", "children": [{"type": "divider"}] * MAX_CHILDREN}
    many = {"type": "card", "id": "m", "children": [column] * (MAX_NODES // MAX_CHILDREN + 1)}
    assert f"more than {MAX_NODES} components" in rejected(many)


def test_action_payload_is_bounded_plain_json():
    Action(type="a.b", payload={"k": "x" * (MAX_PAYLOAD_BYTES - 20)})
    button = {"type": "button", "id": "b", "label": "Go", "action": {"type": "a.b", "payload": {"k": "x" * 2000}}}
    assert f"at most {MAX_PAYLOAD_BYTES} are allowed" in rejected(button)
    assert rejected({"type": "text", "id": "t", "value": float("nan")}) == "The widget is not plain JSON."
    assert "bytes; at most" in rejected({"type": "text", "id": "t", "value": "x" * 200_000})


# --- the task-list widget ----------------------------------------------------------------------------------------


def test_task_list_widget_binds_each_checkbox_to_the_toggle_action():
    done = Task(user_id="u", title="Pay rent", completed=True)
    open_ = Task(user_id="u", title="Buy milk")
    widget = task_list_widget([open_, done])
    assert widget.id == TASK_LIST_WIDGET_ID and validate_widget(widget_json(widget)) == widget
    summary, listing = widget.children
    assert isinstance(summary, Text) and summary.value == "1 open, 1 done"
    assert isinstance(listing, ListView)
    boxes = [item.children[0] for item in listing.children]
    assert all(isinstance(box, Checkbox) for box in boxes)
    assert [(b.label, b.checked, b.action.payload) for b in boxes] == [
        ("Buy milk", False, {"task_id": str(open_.id), "completed": True}),
        ("Pay rent", True, {"task_id": str(done.id), "completed": False}),
    ]
    assert {b.action.type for b in boxes} == {TOGGLE_ACTION}
    empty = task_list_widget([])
    assert [c.value for c in empty.children if isinstance(c, Text)] == ["0 open, 0 done", "No tasks yet."]


# --- the registry and dispatch (both databases) ------------------------------------------------------------------


class EchoPayload(BaseModel):
    word: str


async def echo(context: ActionContext, payload: EchoPayload) -> ActionResult:
    return ActionResult(reply=f"{context.user_id} said {payload.word}")


@pytest.fixture
def actions() -> ActionRegistry:
    registry = ActionRegistry()
    register_task_actions(registry)
    registry.register("demo.echo", echo)
    return registry


def test_the_app_registers_the_task_actions():
    create_app(load_settings(database_url="sqlite+aiosqlite:///:memory:", offline_model=True, auth_secret=None))
    assert TOGGLE_ACTION in registry.types()


def test_registration_rules(actions: ActionRegistry):
    register_task_actions(actions)  # idempotent
    assert actions.types() == ["demo.echo", TOGGLE_ACTION]
    with pytest.raises(ValueError, match="already has a handler"):
        actions.register(TOGGLE_ACTION, echo)
    with pytest.raises(ValueError):
        actions.register("Not A Type", echo)

    async def untyped(context: ActionContext, payload: dict) -> ActionResult:  # type: ignore[type-arg]
        return ActionResult()

    with pytest.raises(TypeError, match="pydantic model"):
        actions.register("demo.untyped", untyped)


async def test_dispatch_runs_the_handler_for_the_user(db: Database, actions: ActionRegistry):
    conversation = await seed_conversation(db, "alice")
    result = await actions.dispatch(db, "alice", conversation, Action(type="demo.echo", payload={"word": "hi"}))
    assert result == ActionResult(reply="alice said hi")


async def test_unknown_action_and_bad_payload_are_422(db: Database, actions: ActionRegistry):
    conversation = await seed_conversation(db, "alice")
    with pytest.raises(UnknownActionError) as unknown:
        await actions.dispatch(db, "alice", conversation, Action(type="demo.nothing"))
    response = app_error_handler(None, unknown.value)  # type: ignore[arg-type]
    assert response.status_code == 422
    assert response.content == {"error": {"code": "unknown_action", "message": "Unknown action 'demo.nothing'."}}
    with pytest.raises(UnknownActionError, match="Invalid payload for this action: word: Field required"):
        await actions.dispatch(db, "alice", conversation, Action(type="demo.echo", payload={"other": 1}))
    with pytest.raises(UnknownActionError, match="task_id"):
        await actions.dispatch(db, "alice", conversation, Action(type=TOGGLE_ACTION, payload={"task_id": "nope"}))


async def test_actions_in_another_users_conversation_are_404(db: Database, actions: ActionRegistry):
    conversation = await seed_conversation(db, "bob")
    with pytest.raises(NotFoundError):
        await actions.dispatch(db, "alice", conversation, Action(type="demo.echo", payload={"word": "hi"}))
    with pytest.raises(NotFoundError):
        await actions.dispatch(db, "alice", uuid.uuid4(), Action(type="demo.echo", payload={"word": "hi"}))


async def test_toggle_completes_and_reopens_and_returns_the_refreshed_list(db: Database, actions: ActionRegistry):
    conversation = await seed_conversation(db, "alice")
    milk, _ = await insert_tasks(db, [{"user_id": "alice", "title": "Buy milk"}, {"user_id": "alice", "title": "Rent"}])
    await insert_tasks(db, [{"user_id": "bob", "title": "Bob's task"}])

    async def toggle(task_id: uuid.UUID, completed: bool) -> ActionResult:
        payload = {"task_id": str(task_id), "completed": completed}
        return await actions.dispatch(db, "alice", conversation, Action(type=TOGGLE_ACTION, payload=payload))

    result = await toggle(milk, True)
    assert result.reply == "Completed “Buy milk”."
    widget = result.widgets[TASK_LIST_WIDGET_ID]
    boxes = {b.label: b for item in widget.children[1].children for b in item.children}  # type: ignore[union-attr]
    assert set(boxes) == {"Buy milk", "Rent"}  # only alice's tasks
    assert boxes["Buy milk"].checked and boxes["Buy milk"].action.payload == {"task_id": str(milk), "completed": False}
    assert not boxes["Rent"].checked
    async with db.sessions() as session:
        assert (await session.get(Task, milk)).completed is True  # type: ignore[union-attr]

    result = await toggle(milk, False)
    assert result.reply == "Reopened “Buy milk”."
    async with db.sessions() as session:
        assert (await session.get(Task, milk)).completed is False  # type: ignore[union-attr]


async def test_toggle_of_another_users_task_is_404_and_changes_nothing(db: Database, actions: ActionRegistry):
    conversation = await seed_conversation(db, "alice")
    (foreign,) = await insert_tasks(db, [{"user_id": "bob", "title": "Bob's task"}])
    action = Action(type=TOGGLE_ACTION, payload={"task_id": str(foreign), "completed": True})
    with pytest.raises(NotFoundError, match="Task not found"):
        await actions.dispatch(db, "alice", conversation, action)
    async with db.sessions() as session:
        assert (await session.get(Task, foreign)).completed is False  # type: ignore[union-attr]
