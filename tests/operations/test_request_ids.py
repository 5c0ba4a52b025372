"""Request ids: taken from `X-Request-ID` when well-formed, else generated; in the response header, every error body
and every log line of the request and of the turn it started (the turn runs in a background task)."""

from __future__ import annotations

import json
import logging
import re

from backend.logs import JsonFormatter, TextFormatter
from backend.request_ids import bound, install_log_records
from tests.conftest import error_of, live
from tests.platform.test_http_guard import captured_logs
from tests.sse import chat

GENERATED = re.compile(r"[0-9a-f]{32}")


async def test_a_well_formed_id_is_kept_in_the_header_and_the_error_body(client):
    response = await client.get("/api/conversations/not-a-uuid", headers={"X-Request-ID": "abc-123.x:y_z"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "abc-123.x:y_z"
    assert response.json()["error"]["request_id"] == "abc-123.x:y_z"
    assert error_of(response)["error"]["code"] == "not_found"


async def test_a_missing_or_malformed_id_is_replaced(client):
    for given in [None, "", "has space", "x" * 129, "semi;colon", "ünïcode"]:
        headers = {"X-Request-ID": given.encode("utf-8")} if given is not None else {}
        response = await client.get("/api/tasks", headers=headers)  # type: ignore[arg-type]
        assert response.status_code == 200
        assert GENERATED.fullmatch(response.headers["x-request-id"]), given
    first = (await client.get("/health")).headers["x-request-id"]
    second = (await client.get("/health")).headers["x-request-id"]
    assert first != second


async def test_the_turn_a_request_started_logs_with_its_id(settings):
    async with live(settings) as client:
        with captured_logs() as logs:  # after the app configured logging
            logging.getLogger("backend.chat.turn").setLevel(logging.INFO)
            try:
                stream = await chat(client, {"message": "list my tasks"}, headers={"X-Request-ID": "turn-req-1"})
            finally:
                logging.getLogger("backend.chat.turn").setLevel(logging.NOTSET)
    assert stream.headers["x-request-id"] == "turn-req-1"
    assert stream.types[-1] == "done"
    ended = [r for r in logs.records if r.name == "backend.chat.turn" and "ended" in r.getMessage()]
    assert len(ended) == 1
    assert ended[0].request_id == "turn-req-1"  # type: ignore[attr-defined]


def test_log_lines_carry_the_id_as_a_field():
    install_log_records()
    with bound("req-42"):
        record = logging.getLogger("backend.x").makeRecord("backend.x", logging.INFO, __file__, 1, "hi", (), None)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["request_id"] == "req-42"
    assert "[req-42]: hi" in TextFormatter().format(record)
    outside = logging.getLogger("backend.x").makeRecord("backend.x", logging.INFO, __file__, 1, "hi", (), None)
    assert "request_id" not in json.loads(JsonFormatter().format(outside))
    assert "[-]: hi" in TextFormatter().format(outside)
    bare = logging.LogRecord("uvicorn", logging.INFO, __file__, 1, "before set-up", (), None)
    assert "[-]: before set-up" in TextFormatter().format(bare)
