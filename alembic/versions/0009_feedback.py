"""feedback on replies (a thumbs up or down, an optional comment); where a conversation's title came from

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 12:10:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN, never a batch: on SQLite a batch rebuilds the table and drops 0008's full-text triggers.
    op.add_column(
        "conversations",
        sa.Column("title_source", sa.String(length=16), nullable=False, server_default=sa.text("'message'")),
    )
    op.create_table(
        "message_feedback",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("rating", sa.String(length=8), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("message_id"),
    )
    with op.batch_alter_table("message_feedback", schema=None) as batch_op:
        batch_op.create_index("ix_message_feedback_rating_updated", ["rating", "updated_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("message_feedback", schema=None) as batch_op:
        batch_op.drop_index("ix_message_feedback_rating_updated")
    op.drop_table("message_feedback")
    op.drop_column("conversations", "title_source")  # SQLite >= 3.35 drops a column in place (keeps the triggers)
