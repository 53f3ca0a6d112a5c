"""History each sync owes the audit warehouse, recorded with the sync itself.

Frozen: later changes are new revisions. The table is ``store.history_owed`` in the code.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "warehouse_history_owed",
        sa.Column("sync_id", sa.String(36), primary_key=True),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("delivered_at", TS),
    )
    op.create_index("idx_history_owed_pending", "warehouse_history_owed", ["delivered_at", "recorded_at"])


def downgrade() -> None:
    op.drop_index("idx_history_owed_pending", "warehouse_history_owed")
    op.drop_table("warehouse_history_owed")
