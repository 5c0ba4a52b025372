"""Our widgets (`backend.chat.widgets`) as ChatKit widget JSON, and the approval card.

Our schema is ChatKit-style but not ChatKit's spelling: lowercase types, `tone` for colours, an `action` on the
control itself. ChatKit's components are PascalCase (`Card`, `Text`, `Col`, `ListView`, ...), controls carry
`onClickAction`/`onChangeAction`, and a widget's root must be a `Card` or a `ListView` (any other root is wrapped in a
`Card`). Every node keeps its `id`, so a widget action names the same node.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

Json = dict[str, Any]

APPROVE_ACTION = "approval.approve"
REJECT_ACTION = "approval.reject"
APPROVAL_ACTIONS = (APPROVE_ACTION, REJECT_ACTION)
MAX_ARGS_CHARS = 500

_TONE: Mapping[str, str] = {"secondary": "secondary", "success": "success", "warning": "warning", "danger": "danger"}
_GAP: Mapping[str, int] = {"none": 0, "sm": 2, "md": 3, "lg": 4}
_DECIDED: Mapping[str, tuple[str, str]] = {
    "approved": ("Approved", "success"),
    "rejected": ("Rejected", "danger"),
    "cancelled": ("Cancelled", "secondary"),
}


def chatkit_widget(widget: Mapping[str, Any]) -> Json:
    """One of our widgets (its validated JSON) as a ChatKit widget root."""
    kind = widget.get("type")
    if kind == "list":
        return _list_view(widget)
    node = _component(widget)
    if kind == "card":
        return node
    return _with_id({"type": "Card", "children": [node]}, widget.get("id"))


def _with_id(node: Json, node_id: object) -> Json:
    if isinstance(node_id, str):
        node["id"] = node_id
    return node


def _children(node: Mapping[str, Any]) -> list[Json]:
    return [_component(child) for child in node.get("children") or []]


def _action(action: Mapping[str, Any]) -> Json:
    return {"type": action["type"], "payload": dict(action.get("payload") or {})}


def _list_view(node: Mapping[str, Any]) -> Json:
    items = [
        _with_id({"type": "ListViewItem", "children": _children(item), "align": "center", "gap": 2}, item.get("id"))
        for item in node.get("children") or []
    ]
    return _with_id({"type": "ListView", "children": items}, node.get("id"))


def _component(node: Mapping[str, Any]) -> Json:
    kind = node.get("type")
    node_id = node.get("id")
    if kind == "card":
        title = node.get("title")
        heading = [{"type": "Title", "value": title, "size": "sm"}] if title else []
        return _with_id({"type": "Card", "children": heading + _children(node)}, node_id)
    if kind in ("row", "column"):
        box: Json = {"type": "Row" if kind == "row" else "Col", "children": _children(node)}
        box["gap"] = _GAP.get(str(node.get("gap", "sm")), 2)
        box["align"] = node.get("align", "center" if kind == "row" else "stretch")
        return _with_id(box, node_id)
    if kind == "list":  # a list inside another component: a column of rows (ListView is a root only)
        rows = [
            _with_id({"type": "Row", "children": _children(item), "gap": 2}, item.get("id"))
            for item in node.get("children") or []
        ]
        return _with_id({"type": "Col", "children": rows, "gap": 2}, node_id)
    if kind == "list_item":
        return _with_id({"type": "Row", "children": _children(node), "gap": 2}, node_id)
    if kind == "text":
        text: Json = {"type": "Text", "value": node.get("value", "")}
        for key in ("size", "weight"):
            if key in node:
                text[key] = node[key]
        if node.get("tone") in _TONE:
            text["color"] = _TONE[node["tone"]]
        return _with_id(text, node_id)
    if kind == "badge":
        badge: Json = {"type": "Badge", "label": node.get("label", "")}
        if node.get("tone") in _TONE:
            badge["color"] = _TONE[node["tone"]]
        return _with_id(badge, node_id)
    if kind == "divider":
        return _with_id({"type": "Divider"}, node_id)
    if kind == "image":
        image: Json = {"type": "Image", "src": node.get("src", ""), "alt": node.get("alt", "")}
        for key in ("width", "height"):
            if key in node:
                image[key] = node[key]
        return _with_id(image, node_id)
    if kind == "button":
        style = node.get("style", "secondary")
        button: Json = {"type": "Button", "label": node.get("label", ""), "onClickAction": _action(node["action"])}
        button["style"] = "primary" if style in ("primary", "danger") else "secondary"
        if style == "danger":
            button["color"] = "danger"
        if node.get("disabled"):
            button["disabled"] = True
        return _with_id(button, node_id)
    if kind == "checkbox":
        checkbox: Json = {
            "type": "Checkbox",
            "name": node_id if isinstance(node_id, str) else "checkbox",
            "label": node.get("label", ""),
            "defaultChecked": bool(node.get("checked", False)),
            "onChangeAction": _action(node["action"]),
        }
        if node.get("disabled"):
            checkbox["disabled"] = True
        return _with_id(checkbox, node_id)
    return _with_id({"type": "Text", "value": ""}, node_id)  # unreachable for a validated widget


def approval_card(asks: Sequence[Mapping[str, Any]]) -> Json:
    """The card for tool calls that wait for the user: Approve and Reject while they wait, the decision after.

    Args:
        asks: Stored `approval` parts (`id`, `name`, `args`, `decision`), answered together.
    """
    pending = [ask for ask in asks if ask.get("decision") is None]
    children: list[Json] = [{"type": "Title", "value": "Approval needed", "size": "sm"}]
    for ask in asks:
        args = json.dumps(ask.get("args") or {}, ensure_ascii=False, sort_keys=True)
        if len(args) > MAX_ARGS_CHARS:
            args = args[: MAX_ARGS_CHARS - 1] + "…"
        children.append({"type": "Text", "value": f"{ask.get('name', '')} {args}", "size": "sm"})
        decision = str(ask.get("decision"))
        if decision in _DECIDED:
            label, color = _DECIDED[decision]
            children.append({"type": "Text", "value": label, "size": "sm", "color": color})
    card: Json = {"type": "Card", "id": f"approval-{asks[0].get('id', '')}", "children": children}
    if pending:
        payload = {"ids": [str(ask.get("id", "")) for ask in pending]}
        card["confirm"] = {"label": "Approve", "action": {"type": APPROVE_ACTION, "payload": payload}}
        card["cancel"] = {"label": "Reject", "action": {"type": REJECT_ACTION, "payload": payload}}
    return card
