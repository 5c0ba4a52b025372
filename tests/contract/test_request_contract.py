"""What a request body may hold: unknown fields are refused by name, attachments may come without text (repeated ids
count once), and the OpenAPI document says exactly what `/chatkit` accepts and what it streams."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import jsonschema
import pytest

from backend.settings import Settings
from tests import files_samples as samples
from tests.conftest import SECRET, live
from tests.fakes.gemini import FakeGemini, text_turn
from tests.files.test_chat_attachments import upload
from tests.seeding import client_for
from tests.sse import chat


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"message": "hi", "threadId": "00000000-0000-0000-0000-000000000000"}, "threadId"),
        ({"message": "hi", "attachment": []}, "attachment"),
    ],
)
async def test_an_unknown_chat_field_is_refused_by_name(client: httpx.AsyncClient, body, field):
    response = await client.post("/chatkit", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error" and field in error["message"]
    listed = (await client.get("/api/conversations")).json()["data"]
    assert listed == [], "no conversation was started"


async def test_the_conversation_id_alias_is_not_an_unknown_field(client: httpx.AsyncClient):
    first = await chat(client, {"message": "hello"})
    conversation_id = first.events[0]["conversation_id"]
    again = await chat(client, {"message": "again", "conversation_id": conversation_id})
    assert again.status == 200 and again.events[0]["conversation_id"] == conversation_id


async def test_unknown_fields_of_the_rest_bodies_are_refused_by_name(client: httpx.AsyncClient):
    created = await client.post("/api/tasks", json={"title": "t", "due": "tomorrow"})
    assert created.status_code == 422 and "due" in created.json()["error"]["message"]
    task = (await client.post("/api/tasks", json={"title": "t"})).json()
    patched = await client.patch(f"/api/tasks/{task['id']}", json={"done": True})
    assert patched.status_code == 422 and "done" in patched.json()["error"]["message"]
    conversation_id = (await chat(client, {"message": "hello"})).events[0]["conversation_id"]
    renamed = await client.patch(f"/api/conversations/{conversation_id}", json={"title": "x", "name": "y"})
    assert renamed.status_code == 422 and "name" in renamed.json()["error"]["message"]


# --- the OpenAPI document ------------------------------------------------------------------------------------------


@pytest.fixture
async def spec(make_settings: Callable[..., Settings]) -> dict:
    async with client_for(make_settings(auth_secret=SECRET)) as http:
        return (await http.get("/schema/openapi.json")).json()


async def test_the_streams_are_typed_with_a_discriminated_union(spec):
    schemas = spec["components"]["schemas"]
    for path, method in [("/chatkit", "post"), ("/chatkit/{message_id}/stream", "get")]:
        content = spec["paths"][path][method]["responses"]["200"]["content"]
        assert content == {"text/event-stream": {"schema": {"$ref": "#/components/schemas/Event"}}}
    event = schemas["Event"]
    assert event["discriminator"]["propertyName"] == "type"
    assert event["discriminator"]["mapping"]["done"] == "#/components/schemas/DoneEvent"
    assert {"$ref": "#/components/schemas/ErrorEvent"} in event["oneOf"]
    assert schemas["ErrorEvent"]["properties"]["code"]["enum"]
    assert schemas["ToolResultEvent"]["properties"]["result"] == {"$ref": "#/components/schemas/ToolOutput"}
    parts = schemas["MessagePublic"]["properties"]["parts"]
    assert parts["items"] == {"$ref": "#/components/schemas/Part"}
    assert schemas["Part"]["discriminator"]["mapping"]["approval"] == "#/components/schemas/ApprovalPart"
    assert schemas["Error"]["required"] == ["error"], "our error body is still the API's Error"


async def test_list_limits_are_max_items_and_event_ids_start_at_zero(spec):
    chat_request = spec["components"]["schemas"]["ChatRequest"]
    for field in ("approvals", "client_tool_results"):
        prop = chat_request["properties"][field]
        assert "maxLength" not in str(prop)
        assert prop["oneOf"][0]["maxItems"] == 20
    parameters = spec["paths"]["/chatkit/{message_id}/stream"]["get"]["parameters"]
    for name in ("Last-Event-ID", "after"):
        (parameter,) = [p for p in parameters if p["name"] == name]
        assert parameter["schema"]["oneOf"][0] == {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}


FILE = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
ACTION = {"type": "tasks.toggle", "payload": {"task_id": FILE}}
APPROVALS = [{"id": "call-1", "approve": True}]
ACCEPTED = [
    {"message": "hi"},
    {"message": "hi", "thread_id": "t", "attachments": [FILE], "client_message_id": FILE},
    {"attachments": [FILE]},
    {"action": ACTION, "thread_id": "t"},
    {"approvals": APPROVALS, "thread_id": "t"},
    {"client_tool_results": [{"id": "c", "result": [1]}], "conversation_id": "t", "message": None},
]
REFUSED = [
    {},
    {"message": "hi", "action": ACTION, "thread_id": "t"},
    {"approvals": APPROVALS},
    {"action": ACTION, "thread_id": "t", "attachments": [FILE]},
    {"message": "hi", "approvals": APPROVALS, "thread_id": "t"},
    {"message": "hi", "threadId": "t"},
]


async def test_the_chat_body_is_exactly_one_kind(spec):
    chat_request = spec["components"]["schemas"]["ChatRequest"]
    assert chat_request["additionalProperties"] is False
    assert [kind["title"] for kind in chat_request["oneOf"]] == ["SendMessage", "WidgetAction", "AnswerPause"]
    validator = jsonschema.Draft202012Validator({**chat_request, "components": spec["components"]})
    for body in ACCEPTED:
        assert validator.is_valid(body), body
    for body in REFUSED:
        assert not validator.is_valid(body), body


@pytest.mark.parametrize("body", REFUSED)
async def test_what_the_document_refuses_the_server_refuses(client: httpx.AsyncClient, body):
    response = await client.post("/chatkit", json=body)
    assert response.status_code == 422, response.text


async def test_mcp_is_described(spec):
    operation = spec["paths"]["/mcp"]["post"]
    assert operation["operationId"] == "Mcp"
    assert operation["requestBody"]["content"]["application/json"]["schema"]["required"] == ["jsonrpc", "method"]
    assert {"200", "202", "401"} <= set(operation["responses"])


# --- attachments ---------------------------------------------------------------------------------------------------


async def test_attachments_alone_are_a_message_and_repeats_count_once(
    gemini_settings: Callable[..., Settings], fake: FakeGemini
):
    async with live(gemini_settings(files_per_message_max=2)) as http:
        ids = [(await upload(http, f"{n}.txt", samples.TEXT))["id"] for n in "ab"]
        fake.script(text_turn("Got two files."))
        stream = await chat(http, {"attachments": [ids[0], ids[1], ids[0], ids[1]]})
        assert stream.status == 200, stream.body
        assert stream.events[-1]["finish_reason"] == "stop" and stream.text == "Got two files."
        conversation = (await http.get(f"/api/conversations/{stream.events[0]['conversation_id']}")).json()
    assert conversation["title"] == "New conversation"
    user = conversation["messages"][0]
    assert user["content"] == "" and [a["id"] for a in user["attachments"]] == ids
    parts = [c["parts"] for c in fake.requests[-1]["contents"] if c["role"] == "user"][-1]
    assert all(p.get("text") != "" for p in parts), "no empty text part reaches the model"
    assert sum("a.txt" in p.get("text", "") for p in parts) == 1, "a repeated attachment is sent once"


async def test_attachments_still_cannot_join_an_action_or_answers(client: httpx.AsyncClient):
    body = {"attachments": [FILE], "approvals": APPROVALS, "thread_id": "t"}
    response = await client.post("/chatkit", json=body)
    assert response.status_code == 422 and "exactly one" in response.json()["error"]["message"]
