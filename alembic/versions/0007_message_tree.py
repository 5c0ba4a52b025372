"""messages form a tree: messages.parent_id, conversations.active_leaf_id

Existing conversations become one branch: each message's parent is the message before it (by `seq`) in its
conversation, and the active leaf is the last message. Nothing is deleted.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 12:20:00

"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The same statements on SQLite and PostgreSQL: correlated subqueries, no dialect-specific UPDATE ... FROM.
CHAIN_MESSAGES = """
UPDATE messages SET parent_id = (
    SELECT prev.id FROM messages AS prev
    WHERE prev.conversation_id = messages.conversation_id AND prev.seq < messages.seq
    ORDER BY prev.seq DESC LIMIT 1
)
"""
SET_LEAVES = """
UPDATE conversations SET active_leaf_id = (
    SELECT m.id FROM messages AS m WHERE m.conversation_id = conversations.id ORDER BY m.seq DESC LIMIT 1
)
"""


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_id", sa.Uuid(), nullable=True))
        batch_op.create_index("ix_messages_parent", ["parent_id"], unique=False)
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("active_leaf_id", sa.Uuid(), nullable=True))
    op.execute(CHAIN_MESSAGES)
    op.execute(SET_LEAVES)


def downgrade() -> None:
    # Only the active branch survives a downgrade as a flat list: the other versions are deleted.
    op.execute(
        """
        WITH RECURSIVE path(id, parent_id) AS (
            SELECT m.id, m.parent_id FROM messages AS m JOIN conversations AS c ON m.id = c.active_leaf_id
            UNION ALL
            SELECT m.id, m.parent_id FROM messages AS m JOIN path ON m.id = path.parent_id
        )
        DELETE FROM messages WHERE id NOT IN (SELECT id FROM path)
        """
    )
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_column("active_leaf_id")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_parent")
        batch_op.drop_column("parent_id")
