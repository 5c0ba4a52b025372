"""Bearer-JWT authentication, per-user isolation, and local mode."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest

from backend.settings import Settings
from tests.conftest import SECRET, bearer, error_of, make_token
from tests.seeding import client_for, seed_conversation, task_owner

ISSUER = "https://auth.example.test"
AUDIENCE = "chat-backend"
WRONG_SECRET = "another-secret-that-is-also-32-bytes-or-more"


def unauthorized(message: str, code: str = "unauthorized") -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(payload: dict[str, Any]) -> str:
    """An `alg: none` JWT, built by hand so no library refuses to make it."""
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64url(json.dumps(payload).encode())}."


def raw_token(**payload: Any) -> str:
    return jwt.encode(payload, SECRET, algorithm="HS256")


@pytest.fixture
async def scoped_client(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    """JWT mode with an issuer and an audience configured."""
    settings = make_settings(auth_secret=SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    async with client_for(settings) as client:
        yield client


def assert_401(response, body: dict[str, Any]) -> None:
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/json")
    assert error_of(response) == body
    assert response.headers["www-authenticate"].startswith("Bearer")


# --- tokens ---------------------------------------------------------------------------------------------------------


async def test_valid_bearer_token_is_accepted(auth_client):
    response = await auth_client.get("/api/tasks", headers=bearer("alice"))
    assert response.status_code == 200
    assert response.json() == {"data": [], "next_cursor": None}


async def test_scheme_is_case_insensitive(auth_client):
    response = await auth_client.get("/api/tasks", headers={"Authorization": f"bearer {make_token('alice')}"})
    assert response.status_code == 200


async def test_token_without_iat_is_accepted(auth_client):
    token = raw_token(sub="alice", exp=int(time.time()) + 600)
    response = await auth_client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


async def test_missing_header_is_401(auth_client):
    response = await auth_client.get("/api/tasks")
    assert_401(response, unauthorized("Send an 'Authorization: Bearer <token>' header."))
    assert response.headers["www-authenticate"] == "Bearer", "RFC 6750: no error code without credentials"


async def test_an_invalid_token_challenge_names_the_error(auth_client):
    response = await auth_client.get("/api/tasks", headers={"Authorization": "Bearer garbage"})
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize(("skew", "status"), [(20, 200), (120, 401)])
async def test_small_issuer_clock_skew_is_tolerated(auth_client, skew, status):
    now = int(time.time())
    token = raw_token(sub="alice", iat=now + skew, nbf=now + skew, exp=now + 600)
    response = await auth_client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == status


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(lambda: f"Token {make_token('alice')}", id="token-scheme"),
        pytest.param(lambda: f"Basic {make_token('alice')}", id="basic-scheme"),
        pytest.param(lambda: make_token("alice"), id="bare-token"),
        pytest.param(lambda: "Bearer", id="bearer-alone"),
        pytest.param(lambda: "Bearer    ", id="bearer-blank"),
    ],
)
async def test_malformed_header_is_401(auth_client, header):
    response = await auth_client.get("/api/tasks", headers={"Authorization": header()})
    assert_401(response, unauthorized("The Authorization header must be 'Bearer <token>'."))


@pytest.mark.parametrize(
    ("token", "body"),
    [
        pytest.param(lambda: "garbage", unauthorized("Invalid token"), id="garbage"),
        pytest.param(lambda: "a.b.c", unauthorized("Invalid token"), id="three-garbage-parts"),
        pytest.param(
            lambda: make_token("alice", expires_in=-30),
            unauthorized("The token has expired.", code="token_expired"),
            id="expired",
        ),
        pytest.param(
            lambda: make_token("alice", secret=WRONG_SECRET),
            unauthorized("The token signature is invalid."),
            id="wrong-secret",
        ),
        pytest.param(
            lambda: unsigned_token({"sub": "alice", "exp": int(time.time()) + 600}),
            unauthorized("Invalid token"),
            id="alg-none-by-hand",
        ),
        pytest.param(
            lambda: jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, None, algorithm="none"),
            unauthorized("Invalid token"),
            id="alg-none-pyjwt",
        ),
        pytest.param(
            lambda: jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, SECRET + SECRET, algorithm="HS512"),
            unauthorized("Invalid token"),
            id="hs512",
        ),
        pytest.param(
            lambda: raw_token(sub="alice", iat=int(time.time())),
            unauthorized("The token lacks the 'exp' claim."),
            id="no-exp",
        ),
        pytest.param(
            lambda: raw_token(exp=int(time.time()) + 600),
            unauthorized("The token lacks the 'sub' claim."),
            id="no-sub",
        ),
        pytest.param(lambda: make_token(""), unauthorized("Invalid token"), id="empty-sub"),
        pytest.param(
            lambda: raw_token(sub=42, exp=int(time.time()) + 600),
            unauthorized("Invalid token"),
            id="numeric-sub",
        ),
        pytest.param(
            lambda: raw_token(sub="alice", exp="tomorrow"),
            unauthorized("Invalid token"),
            id="exp-not-a-number",
        ),
        pytest.param(
            lambda: make_token("alice", nbf=int(time.time()) + 600),
            unauthorized("Invalid token"),
            id="not-yet-valid",
        ),
    ],
)
async def test_bad_tokens_are_401(auth_client, token, body):
    response = await auth_client.get("/api/tasks", headers={"Authorization": f"Bearer {token()}"})
    assert_401(response, body)


async def test_401_on_every_protected_route(auth_client):
    some_id = uuid.uuid4()
    for method, path in [
        ("GET", "/api/tasks"),
        ("POST", "/api/tasks"),
        ("GET", f"/api/tasks/{some_id}"),
        ("PATCH", f"/api/tasks/{some_id}"),
        ("DELETE", f"/api/tasks/{some_id}"),
        ("GET", "/api/conversations"),
        ("GET", f"/api/conversations/{some_id}"),
        ("PATCH", f"/api/conversations/{some_id}"),
        ("DELETE", f"/api/conversations/{some_id}"),
    ]:
        response = await auth_client.request(method, path, json={"title": "x"} if method in {"POST", "PATCH"} else None)
        assert_401(response, unauthorized("Send an 'Authorization: Bearer <token>' header."))
    assert (await auth_client.get("/api/tasks", headers=bearer("alice"))).json()["data"] == []


async def test_health_and_ready_need_no_token(auth_client):
    health = await auth_client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    ready = await auth_client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


async def test_issuer_and_audience_when_configured(scoped_client):
    good = bearer("alice", iss=ISSUER, aud=AUDIENCE)
    assert (await scoped_client.get("/api/tasks", headers=good)).status_code == 200
    other = unauthorized("The token was issued for another audience or issuer.")
    assert_401(await scoped_client.get("/api/tasks", headers=bearer("alice", iss=ISSUER, aud="other-api")), other)
    assert_401(
        await scoped_client.get("/api/tasks", headers=bearer("alice", iss="https://evil.test", aud=AUDIENCE)), other
    )


@pytest.mark.parametrize("missing", ["iss", "aud"])
async def test_missing_issuer_or_audience_when_configured_is_401(scoped_client, missing):
    claims = {"iss": ISSUER, "aud": AUDIENCE, missing: None}
    response = await scoped_client.get("/api/tasks", headers=bearer("alice", **claims))
    assert_401(response, unauthorized("Invalid token"))


# --- isolation ------------------------------------------------------------------------------------------------------


async def test_users_cannot_see_or_touch_each_others_rows(auth_client, db):
    alice, bob = bearer("alice"), bearer("bob")
    created = await auth_client.post("/api/tasks", json={"title": "Alice's task", "notes": "private"}, headers=alice)
    assert created.status_code == 201
    task = created.json()
    conversation_id = await seed_conversation(db, "alice", "Alice's chat", [{"content": "secret"}])
    alice_conversation = (await auth_client.get(f"/api/conversations/{conversation_id}", headers=alice)).json()
    assert alice_conversation["messages"][0]["content"] == "secret"

    for kind, own_id in [("tasks", task["id"]), ("conversations", str(conversation_id))]:
        missing_id = uuid.uuid4()
        for method, payload in [("GET", None), ("PATCH", {"title": "pwned"}), ("DELETE", None)]:
            theirs = await auth_client.request(method, f"/api/{kind}/{own_id}", json=payload, headers=bob)
            absent = await auth_client.request(method, f"/api/{kind}/{missing_id}", json=payload, headers=bob)
            assert theirs.status_code == absent.status_code == 404, (kind, method)
            assert error_of(theirs) == error_of(absent), (kind, method)
            assert theirs.headers["content-type"] == absent.headers["content-type"]

    assert (await auth_client.get("/api/tasks", headers=bob)).json() == {"data": [], "next_cursor": None}
    assert (await auth_client.get("/api/conversations", headers=bob)).json() == {"data": [], "next_cursor": None}

    assert (await auth_client.get(f"/api/tasks/{task['id']}", headers=alice)).json() == task
    assert (await auth_client.get(f"/api/conversations/{conversation_id}", headers=alice)).json() == alice_conversation
    assert [t["id"] for t in (await auth_client.get("/api/tasks", headers=alice)).json()["data"]] == [task["id"]]
    assert await task_owner(db, uuid.UUID(task["id"])) == "alice"


async def test_each_user_sees_only_their_own_list(auth_client):
    for user in ("alice", "bob", "alice"):
        response = await auth_client.post("/api/tasks", json={"title": f"{user}'s"}, headers=bearer(user))
        assert response.status_code == 201
    alice = (await auth_client.get("/api/tasks", headers=bearer("alice"))).json()["data"]
    bob = (await auth_client.get("/api/tasks", headers=bearer("bob"))).json()["data"]
    assert [t["title"] for t in alice] == ["alice's", "alice's"]
    assert [t["title"] for t in bob] == ["bob's"]


async def test_cursor_from_another_user_does_not_leak_rows(auth_client):
    for i in range(3):
        await auth_client.post("/api/tasks", json={"title": f"a{i}"}, headers=bearer("alice"))
    cursor = (await auth_client.get("/api/tasks?limit=1", headers=bearer("alice"))).json()["next_cursor"]
    assert cursor is not None
    response = await auth_client.get(f"/api/tasks?cursor={cursor}", headers=bearer("bob"))
    assert response.status_code == 200
    assert response.json() == {"data": [], "next_cursor": None}


# --- local mode -----------------------------------------------------------------------------------------------------


async def test_local_mode_needs_no_header_and_everything_is_local(client, db):
    response = await client.post("/api/tasks", json={"title": "mine"})
    assert response.status_code == 201
    assert await task_owner(db, uuid.UUID(response.json()["id"])) == "local"
    local_conversation = await seed_conversation(db, "local", "local chat")
    await seed_conversation(db, "alice", "alice's chat")
    conversations = (await client.get("/api/conversations")).json()["data"]
    assert [c["id"] for c in conversations] == [str(local_conversation)]


async def test_local_mode_ignores_authorization_headers(client):
    created = await client.post("/api/tasks", json={"title": "mine"}, headers=bearer("alice"))
    assert created.status_code == 201
    for headers in ({}, {"Authorization": "Bearer garbage"}, bearer("bob")):
        response = await client.get("/api/tasks", headers=headers)
        assert response.status_code == 200
        assert [t["id"] for t in response.json()["data"]] == [created.json()["id"]]
