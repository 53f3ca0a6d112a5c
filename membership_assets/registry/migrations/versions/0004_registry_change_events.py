"""Registry change events: webhooks from Django and admins' sync requests, until a sync claims them.

Frozen: later changes are new revisions. The table is ``events.change_events`` in the code.

Revision ID: 0004
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "registry_change_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("member_id", sa.BigInteger),
        sa.Column("occurred_at", TS),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("dry_run", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("consumed_at", TS),
        sa.Column("run_key", sa.String(64)),
    )
    op.create_index("idx_change_events_pending", "registry_change_events", ["consumed_at", "id"])
    op.create_index("idx_change_events_run_key", "registry_change_events", ["run_key"])


def downgrade() -> None:
    op.drop_index("idx_change_events_run_key", "registry_change_events")
    op.drop_index("idx_change_events_pending", "registry_change_events")
    op.drop_table("registry_change_events")
