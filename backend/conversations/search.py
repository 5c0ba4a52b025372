"""Full-text search of a user's conversations: titles and message text, ranked, in keyset pages, with snippets.

The indexes are migration 0008's: PostgreSQL's generated `search_vector` columns (GIN) and SQLite's FTS5 tables.
What matches (the same on both databases for the words of Latin scripts):

- The query is split into words: runs of letters and digits (Unicode); everything else (quotes, `*`, `-`, `:`,
  parentheses, operators) separates words and is never passed to the database as syntax. `AND`, `OR`, `NEAR` are
  plain words. At most `MAX_TERMS` words count.
- A conversation matches when its title, or one of its messages, contains every word of the query (whole words,
  no stemming, no prefixes). Case does not count, nor do the diacritics of Latin letters ("cafe" finds "Café").
- Rank: a title match counts 1, plus the best message's score in [0, 1) (PostgreSQL `ts_rank` with normalization
  32, SQLite `bm25` mapped the same way, s / (1 + s)); ties by most recently updated. A search cursor carries
  (rank, updated_at, id) and a digest of the query, so it only continues the search that minted it.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BindParameter, Boolean, Float, Integer, String, bindparam, inspect, text
from sqlalchemy.sql.selectable import TextualSelect
from sqlalchemy.types import Uuid
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.conversations.service import last_message_preview, summary_of
from backend.errors import InvalidInputError
from backend.models import Conversation, ConversationSummary, Message, TextRange
from backend.pagination import BAD_CURSOR, decode_cursor, encode_cursor, page_of, time_key

MAX_QUERY_CHARS = 200
MAX_TERMS = 16
SNIPPET_CHARS = 160
SNIPPET_LEAD = 50  # characters of context kept before the first match

_WORD = re.compile(r"[^\W_]+")
_SPACE = re.compile(r"\s+")


def search_terms(query: str) -> list[str]:
    """The words a query searches for: letter-and-digit runs, lower case, first occurrence of each, in order.

    Args:
        query: The user's text, as typed.

    Returns:
        At most `MAX_TERMS` words; empty when the query has no letters or digits.
    """
    seen: dict[str, None] = {}
    for word in _WORD.findall(unicodedata.normalize("NFC", query)):
        seen.setdefault(word.lower(), None)
    return list(seen)[:MAX_TERMS]


def fold(word: str) -> str:
    """A word compared the way the indexes compare it: lower case, without diacritics."""
    decomposed = unicodedata.normalize("NFD", word.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@dataclass(frozen=True, slots=True)
class Snippet:
    """A passage of text around the first match, and where the matched words are in it."""

    text: str
    highlights: list[TextRange]


def snippet_of(source: str, terms: list[str]) -> Snippet:
    """Cut a passage of about `SNIPPET_CHARS` characters around the first word of `source` that matches a term.

    Whitespace runs are collapsed to one space; a cut end is marked with "…". With no word matching (a match past
    what the database indexes, say), the passage is the start of the text.

    Args:
        source: The message text or title.
        terms: The query's words (`search_terms`).

    Returns:
        The passage and the ranges of the matched words in it.
    """
    wanted = {fold(term) for term in terms}
    words = [(m.start(), m.end()) for m in _WORD.finditer(source) if fold(m.group()) in wanted]
    first = words[0][0] if words else 0
    start = max(0, first - SNIPPET_LEAD)
    if start > 0:  # begin at a word boundary
        space = source.find(" ", start, first)
        start = space + 1 if space != -1 else start
    end = min(len(source), start + SNIPPET_CHARS)
    if end < len(source):
        space = source.rfind(" ", max(first, start), end)
        end = space if space > first else end
    pieces: list[str] = ["…"] if start > 0 else []
    length = len(pieces[0]) if pieces else 0
    highlights: list[TextRange] = []
    position = start
    for word_start, word_end in [w for w in words if start <= w[0] and w[1] <= end] + [(end, end)]:
        between = _SPACE.sub(" ", source[position:word_start])
        if not pieces or pieces == ["…"]:
            between = between.lstrip()
        pieces.append(between)
        length += len(between)
        if word_end > word_start:
            pieces.append(source[word_start:word_end])
            highlights.append(TextRange(start=length, end=length + word_end - word_start))
            length += word_end - word_start
        position = word_end
    body = "".join(pieces).rstrip()
    if end < len(source):
        body += "…"
    return Snippet(text=body, highlights=highlights)


# --- the ranked query, per dialect ---------------------------------------------------------------------------------

_POSTGRES_HITS = """
query AS (SELECT plainto_tsquery('simple'::regconfig, chatkit_search_fold(:terms)) AS q),
message_hits AS (
    SELECT m.conversation_id, m.id AS message_id, m.seq, ts_rank(m.search_vector, query.q, 32) AS score
    FROM query, messages AS m JOIN conversations AS c ON c.id = m.conversation_id
    WHERE m.search_vector @@ query.q AND c.user_id = :user_id AND c.archived = :archived
),
title_hits AS (
    SELECT c.id FROM query, conversations AS c
    WHERE c.search_vector @@ query.q AND c.user_id = :user_id AND c.archived = :archived
),"""

_SQLITE_HITS = """
message_hits AS (
    SELECT m.conversation_id, m.id AS message_id, m.seq,
           -bm25(messages_fts) / (1.0 - bm25(messages_fts)) AS score
    FROM messages_fts JOIN messages AS m ON m.rowid = messages_fts.rowid
         JOIN conversations AS c ON c.id = m.conversation_id
    WHERE messages_fts MATCH :terms AND c.user_id = :user_id AND c.archived = :archived
),
title_hits AS (
    SELECT c.id FROM conversations_fts JOIN conversations AS c ON c.rowid = conversations_fts.rowid
    WHERE conversations_fts MATCH :terms AND c.user_id = :user_id AND c.archived = :archived
),"""

# Both kinds of hit are the caller's only, before anything is scored: another user's matches are never ranked, so a
# search costs what the caller's own conversations hold, not what every user's do.
# A conversation is found by its best message, its title or both: the union of the two, then each joined on (not a
# FULL JOIN: SQLite has it only from 3.39, and Ubuntu 22.04's Python links 3.37).
_RANKED = """
best AS (
    SELECT conversation_id, message_id, score FROM (
        SELECT conversation_id, message_id, score,
               row_number() OVER (PARTITION BY conversation_id ORDER BY score DESC, seq) AS n
        FROM message_hits
    ) AS numbered WHERE n = 1
),
found AS (
    SELECT conversation_id AS id FROM best UNION SELECT id FROM title_hits
),
ranked AS (
    SELECT c.id, c.updated_at, b.message_id,
           CAST(CASE WHEN t.id IS NULL THEN 0 ELSE 1 END + COALESCE(b.score, 0) AS {float}) AS rank
    FROM found AS f
         JOIN conversations AS c ON c.id = f.id
         LEFT JOIN best AS b ON b.conversation_id = f.id
         LEFT JOIN title_hits AS t ON t.id = f.id
    WHERE c.user_id = :user_id AND c.archived = :archived
)
SELECT id, rank, updated_at, message_id FROM ranked
{after}
ORDER BY rank DESC, updated_at DESC, id DESC
LIMIT :limit
"""

_AFTER = "WHERE (rank, updated_at, id) < (:after_rank, :after_updated_at, :after_id)"


def _ranked_query(dialect: str, *, after: bool) -> TextualSelect:
    postgres = dialect == "postgresql"
    hits = _POSTGRES_HITS if postgres else _SQLITE_HITS
    sql = (
        "WITH" + hits + _RANKED.format(float="double precision" if postgres else "REAL", after=_AFTER if after else "")
    )
    time_type = inspect(Conversation).c.updated_at.type
    params: list[BindParameter[object]] = [
        bindparam("terms", type_=String()),
        bindparam("user_id", type_=String()),
        bindparam("archived", type_=Boolean()),
        bindparam("limit", type_=Integer()),
    ]
    if after:
        params += [
            bindparam("after_rank", type_=Float()),
            bindparam("after_updated_at", type_=time_type),
            bindparam("after_id", type_=Uuid()),
        ]
    return text(sql).bindparams(*params).columns(id=Uuid(), rank=Float(), updated_at=time_type, message_id=Uuid())


@dataclass(frozen=True, slots=True)
class _After:
    rank: float
    updated_at: datetime
    id: uuid.UUID


def _digest(terms: list[str], archived: bool) -> str:
    return hashlib.blake2s(f"{archived}\0{' '.join(terms)}".encode(), digest_size=6).hexdigest()


def _decode_search_cursor(cursor: str, digest: str) -> _After:
    kind, cursor_digest, rank, moment_text, id_text = decode_cursor(cursor, 5)
    if kind != "search" or cursor_digest != digest or type(rank) is not float or not math.isfinite(rank):
        raise InvalidInputError(BAD_CURSOR)
    moment, row_id = time_key(moment_text, id_text)
    return _After(rank=rank, updated_at=moment, id=row_id)


async def search_conversations(
    session: AsyncSession,
    user_id: str,
    query: str,
    *,
    limit: int,
    cursor: str | None = None,
    archived: bool = False,
) -> tuple[list[ConversationSummary], str | None]:
    """One page of the user's conversations that match `query`, best first, each with a snippet.

    Args:
        session: An open session.
        user_id: The owner; nobody else's conversation is ever considered.
        query: The user's text (at most `MAX_QUERY_CHARS`; the route enforces it).
        limit: Page size.
        cursor: Where the previous page of the same search ended.
        archived: Search the archived conversations (else the others).

    Returns:
        The page and the cursor of the next page (None at the end).

    Raises:
        InvalidInputError: If the cursor was not minted by this search.
    """
    terms = search_terms(query)
    digest = _digest(terms, archived)
    after = _decode_search_cursor(cursor, digest) if cursor else None
    if not terms:
        return [], None
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    postgres = dialect == "postgresql"
    params: dict[str, object] = {
        # PostgreSQL parses the words itself (plainto_tsquery: every word, AND); FTS5 gets each word as a quoted
        # string (the words hold letters and digits only, so nothing in them is FTS5 syntax).
        "terms": " ".join(terms) if postgres else " ".join(f'"{term}"' for term in terms),
        "user_id": user_id,
        "archived": archived,
        "limit": limit + 1,
    }
    if after is not None:
        params |= {"after_rank": after.rank, "after_updated_at": after.updated_at, "after_id": after.id}
    statement = _ranked_query(dialect, after=after is not None)
    rows, more = page_of(list((await session.exec(statement.params(params))).all()), limit)  # type: ignore[call-overload]
    if not rows:
        return [], None
    ids: list[uuid.UUID] = [row.id for row in rows]
    loaded = {
        conversation.id: (conversation, preview)
        for conversation, preview in (
            await session.exec(select(Conversation, last_message_preview()).where(col(Conversation.id).in_(ids)))
        ).all()
    }
    message_ids = [row.message_id for row in rows if row.message_id is not None]
    texts: dict[uuid.UUID, str] = {}
    if message_ids:
        found = await session.exec(select(Message.id, Message.content).where(col(Message.id).in_(message_ids)))
        texts = {message_id: content for message_id, content in found.all()}
    page: list[ConversationSummary] = []
    for row in rows:
        if row.id not in loaded:  # deleted between the two reads
            continue
        conversation, preview = loaded[row.id]
        source = texts.get(row.message_id) if row.message_id is not None else None
        snippet = snippet_of(source if source is not None else conversation.title, terms)
        page.append(summary_of(conversation, preview, snippet=snippet.text, highlights=snippet.highlights))
    last = rows[-1]
    next_cursor = (
        encode_cursor("search", digest, float(last.rank), last.updated_at.isoformat(), str(last.id)) if more else None
    )
    return page, next_cursor
