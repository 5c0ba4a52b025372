"""Full-text search over conversation titles and message text

PostgreSQL: a generated `search_vector` tsvector column on `conversations` (title) and `messages` (content), each
with a GIN index. The text goes through `chatkit_search_fold` first: lower case, then the Latin letters with
diacritics (U+00C0..U+024F whose canonical decomposition is an ASCII letter) replaced by their base letter, so
"Café" and "cafe" index the same; then the `simple` configuration (no stemming, no stop words). Messages are
indexed on their first 100,000 characters (a tsvector holds at most 1 MB).

SQLite: FTS5 external-content tables `conversations_fts` (title) and `messages_fts` (content) over the tables'
rowids, tokenizer `unicode61 remove_diacritics 2`, kept in step by AFTER INSERT/UPDATE/DELETE triggers. A later
migration that rebuilds `conversations` or `messages` (Alembic's batch mode on SQLite copies the table and drops
its triggers) must drop these first and create them again after (then `'rebuild'` the index).

Both index the rows that exist at upgrade time. Downgrade drops everything this adds.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 12:00:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Lower-case Latin letters with diacritics and their base letters (generated once from Unicode's NFD; frozen here).
ACCENTED = (
    "àáâãäåçèéêëìíîïñòóôõöùúûüýÿāăąćĉċčďēĕėęěĝğġģĥĩīĭįĵķĺļľńņňōŏőŕŗřśŝşšţťũūŭůűųŵŷźżžơưǎǐǒǔǖǘǚǜǟǡǧǩǫǭǰǵǹǻȁȃȅȇȉȋ"
    "ȍȏȑȓȕȗșțȟȧȩȫȭȯȱȳ"
)
BASE = (
    "aaaaaaceeeeiiiinooooouuuuyyaaaccccdeeeeegggghiiiijklllnnnooorrrssssttuuuuuuwyzzzouaiouuuuuaagkoojgnaaaeeii"
    "oorruusthaeooooy"
)
MESSAGE_INDEXED_CHARS = 100_000

SQLITE_TABLES = (("conversations", "title"), ("messages", "content"))


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _upgrade_postgresql()
    else:
        _upgrade_sqlite()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_messages_search")
        op.execute("DROP INDEX IF EXISTS ix_conversations_search")
        op.execute("ALTER TABLE messages DROP COLUMN IF EXISTS search_vector")
        op.execute("ALTER TABLE conversations DROP COLUMN IF EXISTS search_vector")
        op.execute("DROP FUNCTION IF EXISTS chatkit_search_fold(text)")
    else:
        for table, _ in SQLITE_TABLES:
            for suffix in ("ai", "ad", "au"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_fts_{suffix}")
            op.execute(f"DROP TABLE IF EXISTS {table}_fts")


def _upgrade_postgresql() -> None:
    assert len(ACCENTED) == len(BASE)
    op.execute(
        "CREATE FUNCTION chatkit_search_fold(text) RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE "
        f"RETURN translate(lower($1), '{ACCENTED}', '{BASE}')"
    )
    # Adding a stored generated column rewrites the table: every existing row is indexed here.
    op.execute(
        "ALTER TABLE conversations ADD COLUMN search_vector tsvector "
        "GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, chatkit_search_fold(title))) STORED"
    )
    op.execute(
        "ALTER TABLE messages ADD COLUMN search_vector tsvector GENERATED ALWAYS AS "
        f"(to_tsvector('simple'::regconfig, chatkit_search_fold(left(content, {MESSAGE_INDEXED_CHARS})))) STORED"
    )
    op.execute("CREATE INDEX ix_conversations_search ON conversations USING gin (search_vector)")
    op.execute("CREATE INDEX ix_messages_search ON messages USING gin (search_vector)")


def _upgrade_sqlite() -> None:
    # S608: every name below is a constant of this module, never input.
    for table, column in SQLITE_TABLES:
        fts = f"{table}_fts"
        op.execute(
            f"CREATE VIRTUAL TABLE {fts} USING fts5({column}, content='{table}', content_rowid='rowid', "
            "tokenize='unicode61 remove_diacritics 2')"
        )
        op.execute(
            f"CREATE TRIGGER {fts}_ai AFTER INSERT ON {table} BEGIN "  # noqa: S608
            f"INSERT INTO {fts}(rowid, {column}) VALUES (new.rowid, new.{column}); END"
        )
        op.execute(
            f"CREATE TRIGGER {fts}_ad AFTER DELETE ON {table} BEGIN "  # noqa: S608
            f"INSERT INTO {fts}({fts}, rowid, {column}) VALUES ('delete', old.rowid, old.{column}); END"
        )
        op.execute(
            f"CREATE TRIGGER {fts}_au AFTER UPDATE OF {column} ON {table} BEGIN "  # noqa: S608
            f"INSERT INTO {fts}({fts}, rowid, {column}) VALUES ('delete', old.rowid, old.{column}); "
            f"INSERT INTO {fts}(rowid, {column}) VALUES (new.rowid, new.{column}); END"
        )
        # Index the rows that already exist.
        op.execute(f"INSERT INTO {fts}({fts}) VALUES ('rebuild')")  # noqa: S608
