"""durable turns: event log, run ownership, idempotency keys, replies as ordered parts

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 15:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _parts_of(content: str, tool_calls: list[dict]) -> list[dict]:
    """Old rows kept text and tool calls apart; a tool turn calls its tools before it answers."""
    parts: list[dict] = [
        {
            "type": "tool_call",
            "id": call.get("id", ""),
            "name": call.get("name", ""),
            "args": call.get("args") or {},
            "result": call.get("result"),
        }
        for call in tool_calls or []
    ]
    if content:
        parts.append({"type": "text", "text": content})
    return parts


def upgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run_owner", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("run_cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parts", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("agent", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True))
        batch_op.add_column(sa.Column("run_state", sa.JSON(), nullable=True))

    messages = sa.table(
        "messages",
        sa.column("id", sa.Uuid()),
        sa.column("role", sa.String()),
        sa.column("content", sa.Text()),
        sa.column("tool_calls", sa.JSON()),
        sa.column("parts", sa.JSON()),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(messages.c.id, messages.c.content, messages.c.tool_calls).where(messages.c.role == "assistant")
    ).all()
    for row in rows:
        bind.execute(
            messages.update().where(messages.c.id == row.id).values(parts=_parts_of(row.content, row.tool_calls))
        )

    op.create_table(
        "turn_events",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("message_id", "id", name="pk_turn_events"),
    )
    op.create_table(
        "client_message_ids",
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("client_message_id", sa.Uuid(), nullable=False),
        sa.Column("user_message_id", sa.Uuid(), nullable=False),
        sa.Column("assistant_message_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_message_id"], ["messages.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "client_message_id", name="pk_client_message_ids"),
    )
    op.create_table(
        "instances",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("instances")
    op.drop_table("client_message_ids")
    op.drop_table("turn_events")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("run_state")
        batch_op.drop_column("agent")
        batch_op.drop_column("parts")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_column("run_cancel_requested")
        batch_op.drop_column("run_owner")
