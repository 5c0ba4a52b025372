"""Every component of our widget schema (`backend.chat.widgets`) becomes valid ChatKit widget JSON, judged by
`openai-chatkit`'s strict widget types (not its catch-all dynamic component)."""

from __future__ import annotations

import pytest

from backend.chat.widgets import validate_widget, widget_json
from backend.protocols.chatkit.widgets import APPROVE_ACTION, REJECT_ACTION, approval_card, chatkit_widget
from tests.protocols.chatkit_wire import check_widget

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ACTION = {"type": "demo.press", "payload": {"n": 1}}
PIXEL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
EVERY_COMPONENT = {
    "type": "card",
    "id": "everything",
    "title": "All of it",
    "children": [
        {"type": "text", "value": "plain", "size": "lg", "weight": "bold", "tone": "danger"},
        {"type": "text", "value": "default tone"},
        {"type": "badge", "label": "new", "tone": "success"},
        {"type": "badge", "label": "plain"},
        {"type": "divider"},
        {"type": "image", "src": PIXEL, "alt": "a dot", "width": 10, "height": 10},
        {
            "type": "row",
            "gap": "lg",
            "align": "end",
            "children": [
                {"type": "button", "id": "go", "label": "Go", "action": ACTION, "style": "primary"},
                {"type": "button", "label": "Delete", "action": ACTION, "style": "danger", "disabled": True},
                {"type": "button", "label": "Later", "action": ACTION},
            ],
        },
        {
            "type": "column",
            "gap": "none",
            "children": [{"type": "checkbox", "id": "c1", "label": "done", "checked": True, "action": ACTION}],
        },
        {
            "type": "list",
            "label": "nested",
            "children": [{"type": "list_item", "id": "li", "children": [{"type": "text", "value": "in a list"}]}],
        },
    ],
}


@pytest.mark.parametrize(
    "ours",
    [
        EVERY_COMPONENT,
        {"type": "list", "id": "root-list", "children": [{"type": "list_item", "children": [{"type": "divider"}]}]},
        {"type": "text", "id": "bare-text", "value": "a root that is not a card"},
        {"type": "checkbox", "id": "bare-box", "label": "x", "action": ACTION},
    ],
    ids=["every component", "a list root", "a text root", "a checkbox root"],
)
def test_each_of_our_widgets_is_strict_chatkit_widget_json(ours):
    converted = chatkit_widget(widget_json(validate_widget(ours)))
    check_widget(converted)
    assert converted["id"] == ours["id"]
    assert converted["type"] in ("Card", "ListView")


def test_controls_keep_their_action_and_ids():
    converted = chatkit_widget(widget_json(validate_widget(EVERY_COMPONENT)))
    row = converted["children"][7]
    assert row["children"][0]["onClickAction"] == ACTION and row["children"][0]["id"] == "go"
    assert row["children"][1]["color"] == "danger"
    checkbox = converted["children"][8]["children"][0]
    assert (checkbox["name"], checkbox["defaultChecked"], checkbox["onChangeAction"]) == ("c1", True, ACTION)
    assert converted["children"][0] == {"type": "Title", "value": "All of it", "size": "sm"}


def test_the_approval_card_asks_while_pending_and_shows_the_decisions_after():
    asks = [
        {"type": "approval", "id": "call_1", "name": "delete_task", "args": {"task": "milk"}, "decision": None},
        {"type": "approval", "id": "call_2", "name": "delete_task", "args": {"task": "eggs"}, "decision": None},
    ]
    card = approval_card(asks)
    check_widget(card)
    assert card["confirm"]["action"] == {"type": APPROVE_ACTION, "payload": {"ids": ["call_1", "call_2"]}}
    assert card["cancel"]["action"] == {"type": REJECT_ACTION, "payload": {"ids": ["call_1", "call_2"]}}
    decided = approval_card([{**a, "decision": "rejected"} for a in asks])
    check_widget(decided)
    assert "confirm" not in decided and "cancel" not in decided
    assert [c["value"] for c in decided["children"] if c.get("color") == "danger"] == ["Rejected", "Rejected"]
