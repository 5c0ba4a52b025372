"""Widgets: the typed, validated component tree a tool can show in the chat, and the actions its controls carry.

A widget is one component (usually a `Card`) whose `id` names it: a later widget with the same id replaces the
earlier one. Components nest through `children`; `List` holds `ListItem`s only. `Button` and `Checkbox` carry an
`Action` (`{type, payload}`) that the page posts back to the server, where `backend.chat.actions` routes it to a
registered handler, never to the model.

Everything is bounded, so a tool cannot make the page (or the stored reply) arbitrarily large: text length, children
per node, total nodes, nesting depth, image source length and action payload bytes. Image sources are limited to
`https:` URLs and `data:image/(png|jpeg|gif|webp)` URLs. `validate_widget` turns any violation into a `WidgetError`
with one short sentence, which a tool returns as its error; a broken widget never reaches the stream.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

MAX_TEXT_CHARS = 2000
MAX_LABEL_CHARS = 200
MAX_CHILDREN = 50
MAX_NODES = 300
MAX_DEPTH = 8
MAX_IMAGE_SRC_CHARS = 65_536
MAX_IMAGE_PIXELS = 2048
MAX_PAYLOAD_BYTES = 1024
MAX_WIDGET_BYTES = 131_072

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
ACTION_TYPE_PATTERN = r"^[a-z][a-z0-9_]{0,31}(\.[a-z][a-z0-9_]{0,31}){0,3}$"
_DATA_IMAGE = re.compile(r"^data:image/(png|jpeg|gif|webp)(;[a-z0-9=.+-]+)*;base64,[A-Za-z0-9+/]+=*$", re.ASCII)

Tone = Literal["default", "secondary", "success", "warning", "danger"]
TextSize = Literal["xs", "sm", "md", "lg", "xl"]
TextWeight = Literal["normal", "medium", "semibold", "bold"]
Gap = Literal["none", "sm", "md", "lg"]
Align = Literal["start", "center", "end", "stretch"]
ButtonStyle = Literal["primary", "secondary", "danger"]

Label = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)]


class WidgetError(ValueError):
    """A widget (or an action) is invalid. `message` is one short sentence, safe to show to the model or user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _check_json_size(value: object, what: str, limit: int) -> None:
    """Raise `WidgetError` (a `ValueError`) unless `value` is plain JSON of at most `limit` UTF-8 bytes."""
    try:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode())
    except (TypeError, ValueError, RecursionError) as error:
        raise WidgetError(f"{what} is not plain JSON.") from error
    if size > limit:
        raise WidgetError(f"{what} is {size} bytes; at most {limit} are allowed.")


def is_safe_image_src(src: str) -> bool:
    """Whether an image source may be rendered: an `https:` URL with a host, or a base64 PNG/JPEG/GIF/WebP data URL."""
    if len(src) > MAX_IMAGE_SRC_CHARS:
        return False
    if src.startswith("data:"):
        return _DATA_IMAGE.match(src) is not None
    try:
        parts = urlsplit(src)
    except ValueError:
        return False
    return parts.scheme == "https" and bool(parts.hostname) and not any(c.isspace() for c in src)


class Action(BaseModel):
    """What a control asks the server to do: a short identifier and a small JSON object."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(pattern=ACTION_TYPE_PATTERN, max_length=100, description="e.g. `tasks.toggle`")
    payload: dict[str, Any] = Field(default_factory=dict, description=f"at most {MAX_PAYLOAD_BYTES} bytes as JSON")

    @field_validator("payload")
    @classmethod
    def _bounded(cls, payload: dict[str, Any]) -> dict[str, Any]:
        _check_json_size(payload, "the payload", MAX_PAYLOAD_BYTES)
        return payload


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        default=None, pattern=ID_PATTERN, description="Names the node; the root's id names the widget."
    )


class Text(_Node):
    """A run of plain text (never parsed as HTML or Markdown)."""

    type: Literal["text"] = "text"
    value: str = Field(max_length=MAX_TEXT_CHARS)
    size: TextSize = "md"
    weight: TextWeight = "normal"
    tone: Tone = "default"


class Badge(_Node):
    """A short coloured label."""

    type: Literal["badge"] = "badge"
    label: Label
    tone: Tone = "default"


class Divider(_Node):
    """A horizontal rule."""

    type: Literal["divider"] = "divider"


class Image(_Node):
    """An image from an `https:` URL or a `data:image/...;base64,` URL; `alt` is required ("" for decoration)."""

    type: Literal["image"] = "image"
    src: str = Field(max_length=MAX_IMAGE_SRC_CHARS)
    alt: str = Field(max_length=MAX_LABEL_CHARS)
    width: int | None = Field(default=None, ge=1, le=MAX_IMAGE_PIXELS)
    height: int | None = Field(default=None, ge=1, le=MAX_IMAGE_PIXELS)

    @field_validator("src")
    @classmethod
    def _safe(cls, src: str) -> str:
        if not is_safe_image_src(src):
            raise ValueError("only https: URLs and data:image/(png|jpeg|gif|webp);base64 URLs are allowed")
        return src


class Button(_Node):
    """A button that sends its action."""

    type: Literal["button"] = "button"
    label: Label
    action: Action
    style: ButtonStyle = "secondary"
    disabled: bool = False


class Checkbox(_Node):
    """A labelled checkbox; toggling it sends its action (the handler decides what the new state means)."""

    type: Literal["checkbox"] = "checkbox"
    label: Label
    checked: bool = False
    action: Action
    disabled: bool = False


class Row(_Node):
    """Children side by side."""

    type: Literal["row"] = "row"
    children: list[Component] = Field(default_factory=list, max_length=MAX_CHILDREN)
    gap: Gap = "sm"
    align: Align = "center"


class Column(_Node):
    """Children stacked."""

    type: Literal["column"] = "column"
    children: list[Component] = Field(default_factory=list, max_length=MAX_CHILDREN)
    gap: Gap = "sm"
    align: Align = "stretch"


class ListItem(_Node):
    """One entry of a `List`."""

    type: Literal["list_item"] = "list_item"
    children: list[Component] = Field(default_factory=list, max_length=MAX_CHILDREN)


class ListView(_Node):
    """A list of `ListItem`s (`type: "list"`)."""

    type: Literal["list"] = "list"
    children: list[ListItem] = Field(default_factory=list, max_length=MAX_CHILDREN)
    label: str | None = Field(default=None, max_length=MAX_LABEL_CHARS, description="An accessible name.")


class Card(_Node):
    """A framed box with an optional title; the usual root of a widget."""

    type: Literal["card"] = "card"
    title: str | None = Field(default=None, max_length=MAX_LABEL_CHARS)
    children: list[Component] = Field(default_factory=list, max_length=MAX_CHILDREN)


Component = Annotated[
    Card | Row | Column | Text | Badge | Divider | Image | ListView | ListItem | Button | Checkbox,
    Field(discriminator="type"),
]
"""Any component; the `type` field says which."""

for _model in (Row, Column, ListItem, ListView, Card):
    _model.model_rebuild()


class _Root(BaseModel):
    """A whole widget: one component whose `id` is required and names the widget."""

    model_config = ConfigDict(extra="forbid")

    widget: Component

    @model_validator(mode="after")
    def _named(self) -> _Root:
        if self.widget.id is None:
            raise ValueError("the widget's root component needs an id")
        return self


Widget = Card | Row | Column | Text | Badge | Divider | Image | ListView | ListItem | Button | Checkbox
"""A validated widget: its root component (whose `id` is set)."""

_component_adapter: TypeAdapter[Widget] = TypeAdapter(Component)


def _check_shape(data: object) -> None:
    """Bound the depth and node count of raw input before pydantic recurses into it."""
    stack: list[tuple[object, int]] = [(data, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict):
            continue
        nodes += 1
        if nodes > MAX_NODES:
            raise WidgetError(f"The widget has more than {MAX_NODES} components.")
        if depth > MAX_DEPTH:
            raise WidgetError(f"The widget is nested more than {MAX_DEPTH} levels deep.")
        children = node.get("children")
        if isinstance(children, list):
            if len(children) > MAX_CHILDREN:
                raise WidgetError(f"A component has more than {MAX_CHILDREN} children.")
            stack.extend((child, depth + 1) for child in children)


def _describe(error: ValidationError) -> str:
    problem = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in problem["loc"] if part != "widget")
    message = problem["msg"].removeprefix("Value error, ").rstrip(".")
    return f"Invalid widget: {where + ': ' if where else ''}{message}."


def validate_widget(data: object) -> Widget:
    """Validate a widget given as JSON-like data (or an already built component).

    Args:
        data: A dict such as `{"type": "card", "id": "tasks", "children": [...]}`, or a component instance.

    Returns:
        The typed widget.

    Raises:
        WidgetError: With one short sentence naming the first problem.
    """
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json", exclude_none=True)
    _check_shape(data)
    _check_json_size(data, "The widget", MAX_WIDGET_BYTES)
    try:
        return _Root.model_validate({"widget": data}).widget
    except ValidationError as error:
        raise WidgetError(_describe(error)) from None


def widget_json(widget: Widget) -> dict[str, Any]:
    """The wire form of a widget: plain JSON with unset optional fields left out."""
    return widget.model_dump(mode="json", exclude_none=True)


def widget_schema() -> dict[str, Any]:
    """The JSON schema of a widget component (for documentation and for tools that emit widgets)."""
    return _component_adapter.json_schema()
