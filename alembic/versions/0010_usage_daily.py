"""usage_daily: each user's tokens and cost per UTC day, kept with the ledger, for the quota checks

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 13:45:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The ledger's rows so far, summed per user and UTC day (timestamps are stored in UTC; on PostgreSQL a `timestamptz`
# cast to a date takes the session's time zone, so the day is taken in UTC explicitly).
BACKFILL_POSTGRESQL = """
INSERT INTO usage_daily (user_id, day, total_tokens, cost_usd)
SELECT user_id, CAST(created_at AT TIME ZONE 'UTC' AS DATE), SUM(total_tokens), SUM(cost_usd) FROM usage_records
GROUP BY user_id, CAST(created_at AT TIME ZONE 'UTC' AS DATE)
"""
BACKFILL_SQLITE = """
INSERT INTO usage_daily (user_id, day, total_tokens, cost_usd)
SELECT user_id, date(created_at), SUM(total_tokens), SUM(cost_usd) FROM usage_records
GROUP BY user_id, date(created_at)
"""


def upgrade() -> None:
    op.create_table(
        "usage_daily",
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "day"),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    op.execute(BACKFILL_POSTGRESQL if postgres else BACKFILL_SQLITE)


def downgrade() -> None:
    op.drop_table("usage_daily")
