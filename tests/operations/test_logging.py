"""Logs: no SQL parameters or row values, one format for ours and uvicorn's (text or JSON), clear start-up lines."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from backend.logs import UVICORN_LOGGERS, JsonFormatter, logging_config
from backend.settings import PROJECT_ROOT, SettingsError, load_settings
from backend.tasks import service as task_service
from tests.platform.test_http_guard import captured_logs

SECRET_TEXT = "sekrit-user-message-text"


async def test_statement_parameters_are_hidden(db):
    with pytest.raises(DBAPIError) as caught:
        async with db.engine.begin() as conn:
            await conn.execute(text("INSERT INTO no_such_table (x) VALUES (:x)"), {"x": SECRET_TEXT})
    assert SECRET_TEXT not in str(caught.value)
    assert "hidden" in str(caught.value)


async def test_database_errors_log_no_row_values(client, monkeypatch):
    async def fail(*_args: object, **_kwargs: object) -> None:
        orig = Exception(f'null value in column "id"\nDETAIL:  Failing row contains (null, {SECRET_TEXT}).')
        raise IntegrityError("INSERT INTO tasks ...", {"title": SECRET_TEXT}, orig)

    monkeypatch.setattr(task_service, "create_task", fail)
    with captured_logs() as logs:
        response = await client.post("/api/tasks", json={"title": SECRET_TEXT})
    assert response.status_code == 500
    errors = logs.at(logging.ERROR)
    assert len(errors) == 1
    handler = logging.Handler()
    handler.setFormatter(logging.Formatter())
    rendered = handler.format(errors[0])
    assert "database error Exception" in rendered
    assert "test_logging.py" in rendered  # where it happened is still there
    assert SECRET_TEXT not in rendered


def test_json_formatter_writes_one_object_per_line():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("backend.x", logging.ERROR, __file__, 1, "a %s line", ("näive",), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "backend.x"
    assert entry["message"] == "a näive line"
    assert "ValueError: boom" in entry["exception"]
    assert entry["time"].endswith("+00:00")


def test_uvicorn_loggers_share_the_root_handler():
    config = logging_config(load_settings(log_format="JSON", auth_secret=None, host="127.0.0.1"))
    assert config["formatters"]["default"] == {"()": "backend.logs.JsonFormatter"}
    for name in UVICORN_LOGGERS:
        assert config["loggers"][name] == {"handlers": [], "propagate": True}
    assert config["root"]["handlers"] == ["default"]
    text_config = logging_config(load_settings(auth_secret=None, host="127.0.0.1"))
    assert "format" in text_config["formatters"]["default"]


def test_log_format_is_validated():
    with pytest.raises(SettingsError, match="LOG_FORMAT"):
        load_settings(log_format="xml", auth_secret=None, host="127.0.0.1")


def read_json_lines_until(stream: IO[str], lines: list[dict[str, str]], predicate: Callable[[dict], bool]) -> None:
    """Append each stderr line, parsed as JSON (so every line must be JSON), until one matches `predicate`."""
    for raw in stream:
        lines.append(json.loads(raw))
        if predicate(lines[-1]):
            return
    raise AssertionError(f"the server exited first: {lines}")


@pytest.mark.timeout(300)  # importing LiteLLM takes long on a loaded machine
def test_python_m_backend_logs_json_and_announces_the_bound_port(tmp_path: Path):
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"AUTH_SECRET", "BETTER_AUTH_SECRET", "JWT_SECRET", "GEMINI_API_KEY", "OFFLINE_MODEL"}
    }
    env.update(
        HOST="127.0.0.1",
        PORT="0",
        WORKERS="1",
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}",
        MIGRATE_ON_STARTUP="true",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "backend"], cwd=PROJECT_ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    lines: list[dict[str, str]] = []
    try:
        assert process.stderr is not None
        read_json_lines_until(process.stderr, lines, lambda e: e["message"].startswith("serving on "))
        serving = lines[-1]["message"]
        assert serving.startswith("serving on http://127.0.0.1:"), lines
        port = int(serving.split(":")[2].split(" ")[0])
        assert port != 0  # the real, bound port
        messages = [e["message"] for e in lines]
        assert messages.index("Application startup complete.") < len(messages) - 1  # logged once bound, not before
        assert {"uvicorn.error", "backend.app", "backend.db"} <= {e["logger"] for e in lines}
        assert any(m.startswith("offline demo model:") for m in messages), messages
        assert sum(m.startswith("serving on") for m in messages) == 1
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).status_code == 200
        read_json_lines_until(process.stderr, lines, lambda e: e["logger"] == "uvicorn.access")
        assert "GET /health" in lines[-1]["message"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
