"""Stream tickets: a browser `EventSource` (no `Authorization` header) rejoins a turn in JWT mode with `?ticket=`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from sqlmodel import update

from backend.db import Database
from backend.models import StreamTicket, utcnow
from backend.settings import Settings
from tests.conftest import SECRET, bearer
from tests.seeding import client_for
from tests.sse import chat

ALICE, BOB = bearer("alice"), bearer("bob")


@pytest.fixture
async def jwt_client(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(make_settings(auth_secret=SECRET)) as http:
        yield http


async def reply_of(client: httpx.AsyncClient) -> str:
    stream = await chat(client, {"message": "hello"}, headers=ALICE)
    assert stream.status == 200
    return str(stream.events[0]["message_id"])


async def mint(client: httpx.AsyncClient, message_id: str, headers: dict[str, str] = ALICE) -> httpx.Response:
    return await client.post(f"/chatkit/{message_id}/ticket", headers=headers)


async def test_a_ticket_rejoins_once_without_a_header(jwt_client: httpx.AsyncClient):
    message_id = await reply_of(jwt_client)
    minted = await mint(jwt_client, message_id)
    assert minted.status_code == 200, minted.text
    body = minted.json()
    assert body["expires_in"] == 60 and len(body["ticket"]) >= 40
    url = f"/chatkit/{message_id}/stream?ticket={body['ticket']}"
    first = await jwt_client.get(url)
    assert first.status_code == 200 and '"type":"done"' in first.text and first.text.endswith("data: [DONE]\n\n")
    again = await jwt_client.get(url)
    assert again.status_code == 401 and again.json()["error"]["code"] == "unauthorized", "single use"


async def test_a_ticket_is_bound_to_its_user_message_and_route(jwt_client: httpx.AsyncClient):
    message_id, other_id = await reply_of(jwt_client), await reply_of(jwt_client)
    assert (await mint(jwt_client, message_id, BOB)).status_code == 404, "only for one's own messages"
    assert (await jwt_client.post(f"/chatkit/{message_id}/ticket")).status_code == 401, "minted with the token"
    ticket = (await mint(jwt_client, message_id)).json()["ticket"]
    assert (await jwt_client.get(f"/chatkit/{other_id}/stream?ticket={ticket}")).status_code == 401
    ticket = (await mint(jwt_client, message_id)).json()["ticket"]
    assert (await jwt_client.get(f"/api/conversations?ticket={ticket}")).status_code == 401, "no other route"
    assert (await jwt_client.get(f"/chatkit/{message_id}/stream?ticket=forged")).status_code == 401
    assert (await jwt_client.get(f"/chatkit/{message_id}/stream?ticket={ticket}")).status_code == 200


async def test_an_expired_ticket_is_refused(jwt_client: httpx.AsyncClient, db: Database):
    message_id = await reply_of(jwt_client)
    ticket = (await mint(jwt_client, message_id)).json()["ticket"]
    async with db.sessions() as session:
        await session.exec(update(StreamTicket).values(expires_at=utcnow()))
        await session.commit()
    assert (await jwt_client.get(f"/chatkit/{message_id}/stream?ticket={ticket}")).status_code == 401
