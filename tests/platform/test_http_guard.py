"""HTTP-layer hardening: local mode on loopback only, Host/Origin checks, Content-Type per route, bad bodies and paths,
header size, and JWT edge cases. Real uvicorn wherever the socket matters."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import jwt
import pytest
from litestar import Litestar, post
from litestar.params import JSONBody, MultipartBody

from backend.app import create_app
from backend.errors import EXCEPTION_HANDLERS
from backend.http_guard import BodyGuard, split_host
from backend.models import Conversation, Task
from tests.conftest import SECRET, bearer, error_of, make_token, serve
from tests.seeding import client_for, count_rows, loopback_client

LOOPBACK_ONLY = "local_mode_loopback_only"
CORS_ORIGIN = "https://app.example.test"


def code_of(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.json()["error"]["code"]


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (the one a default route would use), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # UDP connect sends nothing; it only picks the outgoing interface
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


class Records(logging.Handler):
    """Collects log records (attached to the root logger after the app configured logging)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at(self, level: int) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno >= level]


@contextmanager
def captured_logs() -> Iterator[Records]:
    handler = Records()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


# --- 8. local mode answers loopback sockets only ---------------------------------------------------------------------


async def test_local_mode_refuses_requests_on_a_non_loopback_interface(settings, db):
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    # What `uvicorn backend.app:create_app --factory --host 0.0.0.0` does: the settings never see the host.
    async with serve(create_app(settings), host="0.0.0.0") as base:
        port = base.rsplit(":", 1)[1]
        with captured_logs() as logs:
            async with httpx.AsyncClient(base_url=f"http://{address}:{port}", timeout=10) as remote:
                for method, path in [("GET", "/api/tasks"), ("GET", "/"), ("POST", "/api/tasks"), ("GET", "/health")]:
                    response = await remote.request(method, path, json={"title": "x"} if method == "POST" else None)
                    assert response.status_code == 403, (method, path)
                    assert code_of(response) == LOOPBACK_ONLY
                    assert "local mode" in response.json()["error"]["message"]
        assert any("local mode: refused" in r.getMessage() for r in logs.at(logging.WARNING))
        async with httpx.AsyncClient(base_url=base, timeout=10) as local:
            assert (await local.get("/api/tasks")).status_code == 200
    assert await count_rows(db, Task) == 0


async def test_local_mode_refuses_a_non_loopback_peer_in_process(settings):
    # A reverse proxy with proxy headers rewrites `client` to the remote address: still refused.
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as remote:
        response = await remote.get("/api/tasks")
    assert response.status_code == 403
    assert code_of(response) == LOOPBACK_ONLY


async def test_jwt_mode_serves_any_interface(make_settings):
    app = create_app(make_settings(auth_secret=SECRET))
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://chat.example.test") as remote:
        assert (await remote.get("/health")).status_code == 200


# --- 9. DNS rebinding and cross-site requests -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("attacker.example", 421),
        ("attacker.example:8000", 421),
        ("127.0.0.1.nip.io:8000", 421),
        ("localhost:9999", 421),
        ("localhost:abc", 421),
        ("localhost:8000", 200),
        ("127.0.0.1:8000", 200),
        ("[::1]:8000", 200),
        ("LOCALHOST:8000", 200),
    ],
)
async def test_local_mode_checks_the_host_header(client, host, status):
    response = await client.get("/api/tasks", headers={"Host": host})
    assert response.status_code == status, response.text
    if status == 421:
        assert code_of(response) == "invalid_host"


async def test_host_port_may_be_the_sockets_own_port(settings):
    # Started by the uvicorn CLI with --port N, the settings still say PORT=8000; the bound port counts too.
    async with serve(create_app(settings)) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        port = base.rsplit(":", 1)[1]
        assert (await http.get("/api/tasks", headers={"Host": f"localhost:{port}"})).status_code == 200
        assert (await http.get("/api/tasks", headers={"Host": "localhost:1"})).status_code == 421


async def test_port_zero_accepts_any_port(make_settings):
    async with client_for(make_settings(port=0)) as http:
        assert (await http.get("/api/tasks", headers={"Host": "localhost:1234"})).status_code == 200
        assert (await http.get("/api/tasks", headers={"Host": "evil.test:1234"})).status_code == 421


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("https://attacker.example", 403),
        ("null", 403),
        ("http://localhost.attacker.example", 403),
        ("http://localhost:5173", 201),
        ("http://127.0.0.1:8000", 201),
        ("http://[::1]:3000", 201),
    ],
)
async def test_local_mode_refuses_foreign_origins(client, origin, status):
    response = await client.post("/api/tasks", json={"title": "t"}, headers={"Origin": origin})
    assert response.status_code == status, response.text
    if status == 403:
        assert code_of(response) == "forbidden_origin"


async def test_local_mode_also_accepts_configured_cors_origins(make_settings):
    async with client_for(make_settings(cors_origins=[CORS_ORIGIN])) as http:
        ok = await http.post("/api/tasks", json={"title": "t"}, headers={"Origin": CORS_ORIGIN})
        assert ok.status_code == 201
        other = await http.post("/api/tasks", json={"title": "t"}, headers={"Origin": "https://other.test"})
        assert other.status_code == 403


async def test_cross_site_text_plain_post_cannot_drive_the_agent(settings, db):
    # The classic CSRF shape: a form or fetch(no-cors) with text/plain, which browsers send without a preflight.
    async with serve(create_app(settings)) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        body = json.dumps({"message": "delete all my tasks"})
        response = await http.post("/chatkit", content=body, headers={"Content-Type": "text/plain"})
        assert response.status_code == 415
        assert code_of(response) == "unsupported_media_type"
        cross_site = await http.post(
            "/chatkit",
            content=body,
            headers={"Content-Type": "application/json", "Origin": "https://attacker.example"},
        )
        assert cross_site.status_code == 403
    assert await count_rows(db, Conversation) == 0


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        (None, 415),
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415),
        ("application/json; charset=latin-1", 415),
        ("application/jsonx", 415),
        ("application/json", 201),
        ("application/json; charset=utf-8", 201),
        ("Application/JSON; Charset=UTF-8", 201),
    ],
)
async def test_json_routes_require_a_json_content_type(client, db, content_type, status):
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post("/api/tasks", content=json.dumps({"title": "t"}), headers=headers)
    assert response.status_code == status, response.text
    if status == 415:
        assert code_of(response) == "unsupported_media_type"
        assert await count_rows(db, Task) == 0


async def test_patch_routes_require_json_too(client):
    task = (await client.post("/api/tasks", json={"title": "t"})).json()
    response = await client.patch(f"/api/tasks/{task['id']}", content='{"completed": true}')
    assert response.status_code == 415
    assert (await client.get(f"/api/tasks/{task['id']}")).json()["completed"] is False
    renamed = await client.patch(
        "/api/conversations/8d6f1f0e-8f4a-4a51-9d1e-0d8a4a0b9f11",
        content='{"title": "x"}',
        headers={"Content-Type": "text/plain"},
    )
    assert renamed.status_code == 415


async def test_routes_without_a_body_ignore_content_type(client):
    response = await client.get("/api/tasks", headers={"Content-Type": "text/plain"})
    assert response.status_code == 200


async def test_the_rule_follows_each_routes_declared_body():
    # A multipart upload route (the future POST /api/files) reads multipart, and refuses JSON.
    @post("/files")
    async def upload(data: MultipartBody[dict[str, Any]]) -> dict[str, int]:
        return {"fields": len(data)}

    @post("/notes")
    async def note(data: JSONBody[dict[str, Any]]) -> dict[str, int]:
        return {"keys": len(data)}

    app = Litestar([upload, note], middleware=[BodyGuard], exception_handlers=EXCEPTION_HANDLERS)
    async with loopback_client(app) as http:
        assert (await http.post("/files", files={"f": ("a.txt", b"hi")})).status_code == 201
        assert (await http.post("/files", json={"f": 1})).status_code == 415
        assert (await http.post("/notes", json={"a": 1})).status_code == 201
        assert (await http.post("/notes", files={"f": ("a.txt", b"hi")})).status_code == 415


async def test_with_cors_origins_a_foreign_origin_cannot_change_state(make_settings):
    async with client_for(make_settings(auth_secret=SECRET, cors_origins=[CORS_ORIGIN])) as http:
        headers = bearer("alice")
        foreign = {**headers, "Origin": "https://attacker.example"}
        refused = await http.post("/api/tasks", json={"title": "t"}, headers=foreign)
        assert refused.status_code == 403
        assert code_of(refused) == "forbidden_origin"
        task = (await http.post("/api/tasks", json={"title": "t"}, headers={**headers, "Origin": CORS_ORIGIN})).json()
        assert (await http.delete(f"/api/tasks/{task['id']}", headers=foreign)).status_code == 403
        assert (await http.get("/api/tasks", headers=foreign)).status_code == 200  # reads are CORS's business
        assert (await http.post("/api/tasks", json={"title": "no origin"}, headers=headers)).status_code == 201
        same_site = {**headers, "Origin": "http://127.0.0.1:8000"}  # the page served by this server itself
        assert (await http.post("/api/tasks", json={"title": "same"}, headers=same_site)).status_code == 201


def test_split_host():
    assert split_host("LocalHost:8000", "http") == ("localhost", 8000)
    assert split_host("[::1]:81", "http") == ("[::1]", 81)
    assert split_host("[::1]", "https") == ("[::1]", 443)
    assert split_host("127.0.0.1", "http") == ("127.0.0.1", 80)
    assert split_host("localhost:x", "http") == ("localhost", None)


# --- 10. malformed input is a typed 4xx, not a 500 ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/tasks", b'{"title":"\xff\xfe"}'),
        ("/api/tasks", b"[" * 10_000 + b"]" * 10_000),
        ("/api/tasks", b'{"title":' * 10_000),
        ("/chatkit", b'{"message":"\xff\xfe"}'),
        ("/chatkit", b"[" * 10_000 + b"]" * 10_000),
    ],
)
async def test_undecodable_json_is_400(client, db, path, body):
    with captured_logs() as logs:
        response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert code_of(response) == "malformed_json"
    assert logs.at(logging.ERROR) == []
    assert await count_rows(db, Task) == 0


@pytest.mark.parametrize("path", ["/static/%00", "/static/app.js%00.png", "/static/" + "a" * 5000])
async def test_unservable_static_paths_are_404_without_a_traceback(client, path):
    with captured_logs() as logs:
        response = await client.get(path)
    assert response.status_code == 404
    assert code_of(response) == "not_found"
    assert logs.at(logging.ERROR) == []
    assert (await client.get("/static/app.js")).status_code == 200


@pytest.mark.parametrize(
    ("sub", "status"),
    [("a" * 255, 200), ("a" * 256, 401), ("ali\x00ce", 401), ("ali\ud800ce", 401), ("\udfff", 401)],
)
async def test_jwt_subject_limits(auth_client, sub, status):
    token = jwt.encode({"sub": sub, "iat": int(time.time()), "exp": int(time.time()) + 600}, SECRET, "HS256")
    response = await auth_client.post("/api/tasks", json={"title": "t"}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == (201 if status == 200 else status), response.text
    if status == 401:
        assert code_of(response) == "unauthorized"
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


# --- 11. auth edges and header size ---------------------------------------------------------------------------------


@pytest.mark.parametrize("expired_ago", [1, 10, 25])
async def test_recently_expired_tokens_are_within_the_leeway(auth_client, expired_ago):
    headers = {"Authorization": f"Bearer {make_token('alice', expires_in=-expired_ago)}"}
    response = await auth_client.get("/api/tasks", headers=headers)
    assert response.status_code == 200, response.text


async def test_long_expired_token_says_token_expired(auth_client):
    headers = {"Authorization": f"Bearer {make_token('alice', expires_in=-120)}"}
    response = await auth_client.get("/api/tasks", headers=headers)
    assert response.status_code == 401
    assert error_of(response) == {"error": {"code": "token_expired", "message": "The token has expired."}}
    assert response.headers["www-authenticate"] == (
        'Bearer error="invalid_token", error_description="The token has expired"'
    )


async def test_two_authorization_headers_are_401(auth_client):
    token = make_token("alice")
    headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {make_token('mallory')}")]
    response = await auth_client.get("/api/tasks", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Send exactly one Authorization header."


async def test_oversized_headers_are_431_before_the_token_is_verified(make_settings):
    async with client_for(make_settings(auth_secret=SECRET)) as http:
        huge_token = make_token("alice", padding="x" * 1_000_000)
        response = await http.get("/api/tasks", headers={"Authorization": f"Bearer {huge_token}"})
        assert response.status_code == 431
        assert code_of(response) == "headers_too_large"
        assert (await http.get("/api/tasks", headers={"X-Filler": "y" * 17_000})).status_code == 431
        assert (await http.get("/api/tasks", headers={**bearer("alice"), "X-Filler": "y" * 8_000})).status_code == 200


async def test_header_cap_is_a_setting_and_holds_on_a_real_socket(make_settings):
    app = create_app(make_settings(max_header_bytes=2048))
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        assert (await http.get("/health", headers={"X-Filler": "y" * 1500})).status_code == 200
        response = await http.get("/health", headers={"X-Filler": "y" * 3000})
        assert response.status_code == 431
        assert code_of(response) == "headers_too_large"
