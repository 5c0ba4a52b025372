"""`GET /api/conversations?q=`: full-text search over titles and messages, on SQLite (FTS5) and PostgreSQL (GIN).

The same fixtures run on both databases; each test says what it proves about ranking, snippets, accents, hostile
queries, pagination, ownership and the archive filter.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from alembic import command
from backend.conversations.search import (
    MAX_QUERY_CHARS,
    _ranked_query,  # pyright: ignore[reportPrivateUsage]
    fold,
    search_conversations,
    search_terms,
    snippet_of,
)
from backend.db import alembic_config
from tests.conftest import error_of
from tests.seeding import append, seed_conversation

BASE = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
BAD_CURSOR = {"error": {"code": "validation_error", "message": "cursor: not a cursor this server issued for this list"}}
FILLER = "The weather was mild and the meeting ran long. " * 6


async def search(client: Any, q: str, **params: Any) -> dict[str, Any]:
    response = await client.get("/api/conversations", params={"q": q, **params})
    assert response.status_code == 200, response.text
    return response.json()


async def ids_of(client: Any, q: str, **params: Any) -> list[str]:
    return [c["id"] for c in (await search(client, q, **params))["data"]]


def highlighted(summary: dict[str, Any]) -> list[str]:
    return [summary["snippet"][r["start"] : r["end"]] for r in summary["snippet_highlights"]]


# --- what matches and in which order --------------------------------------------------------------------------------


async def test_ranking_title_first_then_the_stronger_message_then_the_newest(client, db):
    once_old = await seed_conversation(
        db, title="Plans", messages=[{"content": "We saw a heron by the lake."}], updated_at=BASE
    )
    thrice = await seed_conversation(
        db,
        title="Birds",
        messages=[{"content": "Heron, heron and one more heron: the heron count is up."}],
        updated_at=BASE - timedelta(days=3),
    )
    titled = await seed_conversation(
        db, title="Heron sightings", messages=[{"content": "nothing here"}], updated_at=BASE - timedelta(days=9)
    )
    once_new = await seed_conversation(
        db, title="Trip", messages=[{"content": "We saw a heron by the lake."}], updated_at=BASE + timedelta(days=1)
    )
    await seed_conversation(db, title="Unrelated", messages=[{"content": "herons and heronry are other words"}])
    body = await search(client, "heron")
    assert [c["id"] for c in body["data"]] == [str(titled), str(thrice), str(once_new), str(once_old)]
    assert body["next_cursor"] is None
    assert body["data"][0]["snippet"] == "Heron sightings"  # only the title matched: the title is the snippet
    assert highlighted(body["data"][0]) == ["Heron"]
    assert body["data"][2]["preview"] == "We saw a heron by the lake."  # the summary keeps its preview


async def test_every_word_must_match_anywhere_in_one_message_or_the_title(client, db):
    both = await seed_conversation(db, messages=[{"content": "Blue whales migrate in spring."}])
    await seed_conversation(db, messages=[{"content": "Blue skies."}, {"content": "Whales migrate."}])
    title_and_message = await seed_conversation(db, title="Whales", messages=[{"content": "blue"}])
    assert set(await ids_of(client, "blue whales")) == {str(both)}
    assert await ids_of(client, "whales migrate spring") == [str(both)]
    assert str(title_and_message) in await ids_of(client, "whales")


async def test_snippet_is_a_passage_around_the_first_match_with_its_words_highlighted(client, db):
    content = FILLER + "Then Marguerite   proposed\nthe budget for the harbour project. " + FILLER
    cid = await seed_conversation(
        db, messages=[{"content": "an earlier message"}, {"content": content}, {"content": "later, no match"}]
    )
    (summary,) = (await search(client, "harbour budget"))["data"]
    assert summary["id"] == str(cid)
    snippet = summary["snippet"]
    assert snippet.startswith("…") and snippet.endswith("…")
    assert "Marguerite proposed the budget for the harbour project." in snippet  # whitespace collapsed
    assert len(snippet) <= 165
    assert highlighted(summary) == ["budget", "harbour"]
    assert summary["preview"] == "later, no match"


async def test_words_with_accents_match_with_or_without_them_in_any_case(client, db):
    cafe = await seed_conversation(
        db, title="Menu", messages=[{"content": "Un CAFÉ crème et une brûlée, s'il vous plaît"}]
    )
    ueber = await seed_conversation(db, title="Über uns", messages=[{"content": "Straße und Ñandú"}])
    for query in ("cafe", "café", "Café", "CAFE", "creme brulee", "crème BRÛLÉE", "plait"):
        assert await ids_of(client, query) == [str(cafe)], query
    for query in ("uber", "ÜBER", "nandu", "ñandú", "straße"):
        assert await ids_of(client, query) == [str(ueber)], query
    (summary,) = (await search(client, "cafe creme"))["data"]
    assert highlighted(summary) == ["CAFÉ", "crème"]
    assert await ids_of(client, "strasse") == []  # ß is a letter of its own, not "ss" (documented)


HOSTILE = [
    "'",
    '"',
    "' OR 1=1 --",
    "'; DROP TABLE messages; --",
    '"unterminated',
    "secret*",
    "*",
    "-secret",
    "NOT secret",
    "secret AND",
    "AND OR NOT",
    "NEAR(secret words)",
    "NEAR(",
    "content:secret",
    "title : secret",
    "(secret",
    "secret)",
    "^secret",
    "secret & | ! <->",
    "secret:*",
    "%secret%",
    "\\",
    "{secret}",
    "secret" + " " * 150,
    "😀 secret",
]


@pytest.mark.parametrize("query", HOSTILE)
async def test_a_query_with_sql_or_fts_syntax_is_plain_words(client, db, query):
    mine = await seed_conversation(db, messages=[{"content": "the secret words are here"}])
    await seed_conversation(db, user_id="someone-else", messages=[{"content": "their secret, and AND OR NOT near 1"}])
    terms = search_terms(query)
    body = await search(client, query)
    expected = [str(mine)] if terms and set(terms) <= {"secret", "words"} else []
    assert [c["id"] for c in body["data"]] == expected
    # Nothing was dropped or changed by the query.
    assert len((await client.get("/api/conversations")).json()["data"]) == 1


async def test_blank_punctuation_only_and_too_long_queries(client, db):
    cid = await seed_conversation(db, messages=[{"content": "anything"}])
    for blank in ("", "   ", "\t"):
        body = await search(client, blank)
        assert [c["id"] for c in body["data"]] == [str(cid)]  # the plain list
        assert body["data"][0]["snippet"] is None
    for no_words in ("!!!", "*", "--", "()", "_"):
        assert await search(client, no_words) == {"data": [], "next_cursor": None}
    longest = "anything" + " !" * ((MAX_QUERY_CHARS - 8) // 2)
    assert len(longest) == MAX_QUERY_CHARS
    assert await ids_of(client, longest) == [str(cid)]
    response = await client.get("/api/conversations", params={"q": longest + "x"})
    assert response.status_code in (400, 422)
    assert error_of(response)["error"]["code"] == "validation_error"


async def test_another_users_conversations_never_appear(client, db):
    await seed_conversation(db, user_id="mallory", title="penguin", messages=[{"content": "penguin penguin"}])
    mine = await seed_conversation(db, title="Notes", messages=[{"content": "one penguin"}])
    assert await ids_of(client, "penguin") == [str(mine)]
    assert await ids_of(client, "penguin", archived="true") == []


async def test_the_archive_filter_combines_with_the_query(client, db):
    archived = await seed_conversation(db, messages=[{"content": "quarterly report"}], archived=True)
    live = await seed_conversation(db, messages=[{"content": "quarterly report draft"}])
    await seed_conversation(db, messages=[{"content": "unrelated"}], archived=True)
    assert await ids_of(client, "quarterly report") == [str(live)]
    assert await ids_of(client, "quarterly report", archived="true") == [str(archived)]
    assert await ids_of(client, "quarterly", archived="false") == [str(live)]


async def test_the_index_follows_new_messages_renames_and_deletes(client, db):
    cid = await seed_conversation(db, title="Before", messages=[{"content": "first"}])
    assert await ids_of(client, "zeppelin") == []
    await append(db, cid, content="a zeppelin appears")
    assert await ids_of(client, "zeppelin") == [str(cid)]
    assert (await client.patch(f"/api/conversations/{cid}", json={"title": "Blimp talk"})).status_code == 200
    assert await ids_of(client, "blimp") == [str(cid)]
    assert await ids_of(client, "before") == []
    assert (await client.delete(f"/api/conversations/{cid}")).status_code == 204
    assert await ids_of(client, "zeppelin") == []
    assert await ids_of(client, "blimp") == []


# --- pages ----------------------------------------------------------------------------------------------------------


async def test_pages_follow_the_rank_and_cover_every_match_once(client, db):
    expected = []
    for n in range(7):
        # Fewer mentions, lower rank; two of them tie on rank and are ordered by updated_at.
        mentions = {0: 4, 1: 3, 2: 2, 3: 2, 4: 1, 5: 1, 6: 1}[n]
        cid = await seed_conversation(
            db,
            title=f"c{n}",
            messages=[{"content": " ".join(["walrus"] * mentions + ["filler"] * (6 - mentions))}],
            updated_at=BASE - timedelta(hours=n),
        )
        expected.append(str(cid))
    await seed_conversation(db, title="no", messages=[{"content": "nothing"}])
    assert await ids_of(client, "walrus", limit=100) == expected
    seen, cursor, pages = [], None, 0
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        body = await search(client, "walrus", **params)
        seen += [c["id"] for c in body["data"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    assert pages == 3


async def test_a_cursor_only_continues_the_search_that_minted_it(client, db):
    for _ in range(3):
        await seed_conversation(db, messages=[{"content": "narwhal tusk"}])
    search_cursor = (await search(client, "narwhal", limit=1))["next_cursor"]
    list_cursor = (await client.get("/api/conversations", params={"limit": 1})).json()["next_cursor"]
    assert search_cursor and list_cursor
    assert len((await search(client, "narwhal", limit=1, cursor=search_cursor))["data"]) == 1
    for params in (
        {"q": "tusk", "cursor": search_cursor},  # another query
        {"q": "narwhal", "cursor": search_cursor, "archived": "true"},  # another filter
        {"q": "narwhal", "cursor": list_cursor},  # the list's cursor
        {"cursor": search_cursor},  # the list with a search cursor
        {"q": "narwhal", "cursor": "bm90IGEgY3Vyc29y"},
        {"q": "narwhal", "cursor": "WyJzZWFyY2giLCIwIiwxLjAsIngiLCJ5Il0"},  # the right shape, not ours
    ):
        response = await client.get("/api/conversations", params=params)
        assert response.status_code == 422, (params, response.text)
        assert error_of(response) == BAD_CURSOR


# --- the migration indexes what is already there ---------------------------------------------------------------------


def test_upgrading_indexes_existing_rows_and_downgrading_removes_the_index(database_url: str):
    config = alembic_config(url=database_url)
    cid, mid = uuid.uuid4(), uuid.uuid4()
    postgres = database_url.startswith("postgresql")

    def uid(value: uuid.UUID) -> str:
        return str(value) if postgres else value.hex

    async def run(*statements: tuple[str, dict[str, Any]]) -> list[Any]:
        engine = create_async_engine(database_url)
        try:
            async with engine.begin() as conn:
                results = []
                for sql, params in statements:
                    result = await conn.execute(text(sql), params)
                    results.append(result.all() if result.returns_rows else None)
                return results
        finally:
            await engine.dispose()

    try:
        command.downgrade(config, "0006")
        asyncio.run(
            run(
                (
                    "INSERT INTO conversations (id, user_id, title, created_at, updated_at, run_cancel_requested,"
                    " archived) VALUES (:id, 'local', 'Old éléphant', :t, :t, false, false)",
                    {"id": uid(cid), "t": BASE},
                ),
                (
                    "INSERT INTO messages (id, conversation_id, seq, role, content, tool_calls, status, created_at)"
                    " VALUES (:id, :cid, 1, 'user', 'an old message about a giraffe', '[]', 'complete', :t)",
                    {"id": uid(mid), "cid": uid(cid), "t": BASE},
                ),
            )
        )
        command.upgrade(config, "head")

        async def found(query: str) -> list[uuid.UUID]:
            engine = create_async_engine(database_url)
            try:
                async with AsyncSession(engine) as session:
                    page, _ = await search_conversations(session, "local", query, limit=10)
                    return [summary.id for summary in page]
            finally:
                await engine.dispose()

        assert asyncio.run(found("giraffe")) == [cid]
        assert asyncio.run(found("elephant")) == [cid]
        command.downgrade(config, "0006")
        leftovers = (
            "SELECT column_name FROM information_schema.columns WHERE column_name = 'search_vector'"
            if postgres
            else "SELECT name FROM sqlite_master WHERE name LIKE '%fts%'"
        )
        assert asyncio.run(run((leftovers, {})))[0] == []
    finally:
        command.upgrade(config, "head")
        asyncio.run(run(("DELETE FROM conversations WHERE user_id = 'local'", {})))


# --- the pieces, without a database ---------------------------------------------------------------------------------


def test_search_terms_keep_letters_and_digits_only():
    assert search_terms("  Hello, WORLD! hello 42 ") == ["hello", "world", "42"]
    assert search_terms('NEAR(a b) -c d:* e_f "g"') == ["near", "a", "b", "c", "d", "e", "f", "g"]
    assert search_terms("*-:()'\"") == []
    assert len(search_terms(" ".join(f"w{n}" for n in range(40)))) == 16
    assert fold("Crème") == "creme"


def test_snippet_of_text_without_a_match_is_its_start():
    snippet = snippet_of("word " * 100, ["absent"])
    assert snippet.text.startswith("word word") and snippet.text.endswith("…")
    assert snippet.highlights == []


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
@pytest.mark.parametrize("after", [False, True])
def test_the_ranked_query_needs_no_full_or_right_join(dialect: str, after: bool):
    # SQLite has them only from 3.39: with the Python of Ubuntu 22.04 (3.37) or Debian 11 (3.34) every search fails.
    sql = " ".join(str(_ranked_query(dialect, after=after)).upper().split())
    assert "JOIN" in sql
    assert not re.search(r"\b(FULL|RIGHT)( OUTER)? JOIN\b", sql), sql


def _window_rows(plan: dict[str, Any]) -> int:
    """Rows that went through the plan's window functions (the per-conversation best message: every scored hit)."""
    own = plan["Actual Rows"] * plan["Actual Loops"] if plan["Node Type"] == "WindowAgg" else 0
    return own + sum(_window_rows(child) for child in plan.get("Plans", []))


async def test_other_users_matches_are_never_scored(client, db):
    # A search must cost what the caller's conversations hold: scoring every user's matches first (and filtering
    # after) makes a common word rank the whole messages table.
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the plan's row counts are read from PostgreSQL's EXPLAIN ANALYZE")
    mine = await seed_conversation(db, messages=[{"content": "a walrus on the ice"}])
    for n in range(12):
        await seed_conversation(db, user_id="someone-else", messages=[{"content": f"walrus number {n}"}] * 2)
    assert await ids_of(client, "walrus") == [str(mine)]
    sql = str(_ranked_query("postgresql", after=False))
    params = {"terms": "walrus", "user_id": "local", "archived": False, "limit": 21}
    async with db.engine.connect() as conn:
        (plan,) = (await conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}"), params)).scalar_one()
    assert _window_rows(plan["Plan"]) == 1, "another user's matching messages were scored"
