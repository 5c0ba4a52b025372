"""Every failure answers `{"error": {"code", "message"}}` with the right status; CORS follows the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from backend.app import create_app
from backend.settings import Settings, load_settings
from backend.tasks import service as task_service
from tests.conftest import SECRET, bearer, error_of, serve
from tests.seeding import client_for, loopback_client

INTERNAL = {"error": {"code": "internal", "message": "An internal error occurred."}}
MALFORMED = {"error": {"code": "malformed_json", "message": "The request body is not valid JSON."}}
TOO_LARGE = {"error": {"code": "payload_too_large", "message": "The request body is too large."}}
DB_UNAVAILABLE = {"error": {"code": "database_unavailable", "message": "The database is unavailable."}}
CLOSED_PORT_URL = "postgresql://postgres@127.0.0.1:1/none"
ORIGIN = "http://example.test"


def assert_error_shape(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "request_id"}
    assert all(isinstance(value, str) and value for value in body["error"].values())
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    return body


def offline_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings that touch no test database (for apps whose database is gone)."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "migrate_on_startup": False,
        "auth_secret": None,
        "gemini_api_key": None,
        "offline_model": True,
        "host": "127.0.0.1",
        "log_level": "CRITICAL",
        "cors_origins": [],
    }
    return load_settings(**{**values, **overrides})


@pytest.fixture
async def small_body_client(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(make_settings(max_body_bytes=2048)) as client:
        yield client


# --- 400 / 404 / 405 / 413 / 422 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{bad", b'{"title": "x",}', b"{'title': 'x'}", b'{"title": "unterminated'])
async def test_malformed_json_is_400(client, body):
    response = await client.post("/api/tasks", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert error_of(response) == MALFORMED
    assert (await client.get("/api/tasks")).json()["data"] == []


async def test_malformed_json_on_patch_is_400(client):
    task = (await client.post("/api/tasks", json={"title": "t"})).json()
    response = await client.patch(
        f"/api/tasks/{task['id']}", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert error_of(response) == MALFORMED


async def test_empty_body_is_malformed_json(client):
    # An empty body is not JSON. Today it answers 422 "data: 'data'", which names an internal parameter.
    response = await client.post("/api/tasks", content=b"", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert error_of(response) == MALFORMED


@pytest.mark.parametrize("body", [b"[]", b'"a string"', b"42", b"null"])
async def test_json_that_is_not_an_object_is_422(client, body):
    response = await client.post("/api/tasks", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert assert_error_shape(response)["error"]["code"] == "validation_error"


async def test_body_over_max_body_bytes_is_413(small_body_client):
    response = await small_body_client.post("/api/tasks", json={"title": "x", "notes": "n" * 3000})
    assert response.status_code == 413
    assert error_of(response) == TOO_LARGE
    assert (await small_body_client.get("/api/tasks")).json()["data"] == []


async def test_body_just_under_max_body_bytes_is_accepted(small_body_client):
    payload = b'{"title": "x", "notes": "' + b"n" * 1900 + b'"}'
    assert len(payload) < 2048
    response = await small_body_client.post("/api/tasks", content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 201


async def test_chunked_body_over_max_body_bytes_is_413(make_settings):
    """Without a Content-Length the limit must still hold (real server, chunked transfer encoding)."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"title": "x", "notes": "'
        for _ in range(10):
            yield b"n" * 500
        yield b'"}'

    app = create_app(make_settings(max_body_bytes=2048))
    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        response = await http.post("/api/tasks", content=chunks(), headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert error_of(response) == TOO_LARGE
        assert (await http.get("/api/tasks")).json()["data"] == []


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "/api/tasks"), ("DELETE", "/api/tasks"), ("POST", "/api/conversations"), ("POST", "/health")],
)
async def test_wrong_method_is_405(client, method, path):
    response = await client.request(method, path)
    assert response.status_code == 405
    assert error_of(response) == {
        "error": {"code": "method_not_allowed", "message": "This method is not allowed here."}
    }


@pytest.mark.parametrize("path", ["/nope", "/api", "/api/task", "/api/tasks/x/y"])
async def test_unknown_route_is_404(client, path):
    response = await client.get(path)
    assert response.status_code == 404
    assert error_of(response) == {"error": {"code": "not_found", "message": "No such resource."}}


async def test_unknown_route_is_404_even_without_a_token(auth_client):
    response = await auth_client.get("/nope")
    assert response.status_code == 404
    assert_error_shape(response)


async def test_422_names_the_field(client):
    body = error_of(await client.post("/api/tasks", json={"title": ""}))
    assert body == {"error": {"code": "validation_error", "message": "title: String should have at least 1 character"}}
    body = (await client.post("/api/tasks", json={"title": "ok", "notes": 5})).json()
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["message"].startswith("notes:")
    body = (await client.get("/api/tasks?limit=0")).json()
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["message"].startswith("limit:")


# --- 500 ------------------------------------------------------------------------------------------------------------


async def test_unexpected_exception_is_a_bare_500(client, monkeypatch):
    async def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(task_service, "list_tasks", explode)
    response = await client.get("/api/tasks")
    assert response.status_code == 500
    assert error_of(response) == INTERNAL
    assert "secret" not in response.text
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text


async def test_unexpected_exception_in_jwt_mode_is_a_bare_500(auth_client, monkeypatch):
    async def explode(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("secret internal detail")

    monkeypatch.setattr(task_service, "create_task", explode)
    response = await auth_client.post("/api/tasks", json={"title": "x"}, headers=bearer("alice"))
    assert response.status_code == 500
    assert error_of(response) == INTERNAL


def _dbapi_error(kind: type[DBAPIError], orig: Exception, **kwargs: Any) -> DBAPIError:
    return kind("SELECT secret_table.secret_column FROM secret_table", {}, orig, **kwargs)


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        pytest.param(lambda: PoolTimeoutError("QueuePool limit reached"), 503, DB_UNAVAILABLE, id="pool-timeout"),
        pytest.param(
            lambda: _dbapi_error(OperationalError, psycopg.OperationalError("server closed the connection")),
            503,
            DB_UNAVAILABLE,
            id="connection-lost",
        ),
        pytest.param(
            lambda: _dbapi_error(DBAPIError, RuntimeError("socket gone"), connection_invalidated=True),
            503,
            DB_UNAVAILABLE,
            id="connection-invalidated",
        ),
        pytest.param(
            lambda: _dbapi_error(IntegrityError, psycopg.errors.UniqueViolation("duplicate key secret_column")),
            500,
            INTERNAL,
            id="integrity-error-is-a-bug-not-an-outage",
        ),
    ],
)
async def test_database_errors_map_to_503_or_500(client, monkeypatch, error, status, body):
    async def fail(*args: Any, **kwargs: Any) -> Any:
        raise error()

    monkeypatch.setattr(task_service, "list_tasks", fail)
    response = await client.get("/api/tasks")
    assert response.status_code == status
    assert error_of(response) == body
    assert "secret" not in response.text


# --- 503 ------------------------------------------------------------------------------------------------------------


@pytest.mark.timeout(30)  # a dead database must answer fast, never hang
async def test_database_on_a_closed_port_is_503():
    async with loopback_client(create_app(offline_settings(CLOSED_PORT_URL))) as client:
        for method, path, payload in [
            ("GET", "/api/tasks", None),
            ("POST", "/api/tasks", {"title": "x"}),
            ("GET", "/api/conversations", None),
        ]:
            response = await client.request(method, path, json=payload)
            assert response.status_code == 503, (method, path)
            assert error_of(response) == DB_UNAVAILABLE
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert assert_error_shape(ready)["error"]["code"] == "database_unavailable"
        health = await client.get("/health")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}


@pytest.mark.timeout(30)  # a dead database must answer fast, never hang
async def test_database_on_a_closed_port_is_503_in_jwt_mode():
    settings = offline_settings(CLOSED_PORT_URL, auth_secret=SECRET)
    async with loopback_client(create_app(settings)) as client:
        response = await client.get("/api/tasks", headers=bearer("alice"))
        assert response.status_code == 503
        assert error_of(response) == DB_UNAVAILABLE
        assert (await client.get("/api/tasks")).status_code == 401


@pytest.mark.timeout(30)  # a dead database must answer fast, never hang
async def test_unopenable_sqlite_file_is_503(tmp_path: Path):
    # The "file" is a directory, so SQLite cannot open it.
    async with loopback_client(create_app(offline_settings(f"sqlite+aiosqlite:///{tmp_path}"))) as client:
        response = await client.get("/api/tasks")
        assert response.status_code == 503
        assert error_of(response) == DB_UNAVAILABLE
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert assert_error_shape(ready)["error"]["code"] == "database_unavailable"
        assert (await client.get("/health")).status_code == 200


# --- CORS -----------------------------------------------------------------------------------------------------------


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_cors_preflight_follows_the_settings(make_settings):
    async with client_for(make_settings(cors_origins=[ORIGIN])) as client:
        allowed = await client.options("/api/tasks", headers=preflight(ORIGIN))
        assert allowed.status_code in {200, 204}
        assert allowed.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in allowed.headers["access-control-allow-methods"]
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()

        denied = await client.options("/api/tasks", headers=preflight("http://evil.test"))
        assert "access-control-allow-origin" not in denied.headers

        simple = await client.get("/api/tasks", headers={"Origin": ORIGIN})
        assert simple.status_code == 200
        assert simple.headers["access-control-allow-origin"] == ORIGIN
        other = await client.get("/api/tasks", headers={"Origin": "http://evil.test"})
        assert "access-control-allow-origin" not in other.headers


async def test_cors_preflight_needs_no_token(make_settings):
    settings = make_settings(cors_origins=[ORIGIN], auth_secret=SECRET)
    async with client_for(settings) as client:
        response = await client.options("/api/tasks", headers=preflight(ORIGIN))
        assert response.status_code in {200, 204}
        assert response.headers["access-control-allow-origin"] == ORIGIN
        # The actual request still needs one, and its 401 carries the CORS header so the browser can read it.
        denied = await client.get("/api/tasks", headers={"Origin": ORIGIN})
        assert denied.status_code == 401
        assert denied.headers["access-control-allow-origin"] == ORIGIN


async def test_no_cors_headers_without_configured_origins(auth_client):
    # JWT mode: local mode refuses foreign origins outright (tests/platform/test_http_guard.py).
    response = await auth_client.get("/api/tasks", headers={"Origin": ORIGIN, **bearer("alice")})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    pre = await auth_client.options("/api/tasks", headers=preflight(ORIGIN))
    assert "access-control-allow-origin" not in pre.headers


async def test_rejected_cors_preflight_grants_nothing(make_settings):
    # Litestar's CORS middleware answers a disallowed preflight itself, before any handler or exception mapping:
    # 400 text/plain "Disallowed CORS Origin". Browsers never expose a preflight body, so this documented exception
    # to the JSON error shape is harmless; what matters is that no CORS grant is sent.
    async with client_for(make_settings(cors_origins=[ORIGIN])) as client:
        response = await client.options("/api/tasks", headers=preflight("http://evil.test"))
        assert response.status_code == 400
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-methods" not in response.headers
