"""The sync API's single-use request ids and the receiver's refusal counts.

Frozen: later changes are new revisions. The tables are ``events.api_request_ids`` and
``events.receiver_counts`` in the code.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sync_api_request_ids",
        sa.Column("request_id", sa.String(36), primary_key=True),
        sa.Column("received_at", TS, nullable=False),
    )
    op.create_index("idx_sync_api_request_ids_received", "sync_api_request_ids", ["received_at"])
    op.create_table(
        "sync_api_counts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.create_index("idx_sync_api_counts_recorded", "sync_api_counts", ["recorded_at"])


def downgrade() -> None:
    op.drop_index("idx_sync_api_counts_recorded", "sync_api_counts")
    op.drop_table("sync_api_counts")
    op.drop_index("idx_sync_api_request_ids_received", "sync_api_request_ids")
    op.drop_table("sync_api_request_ids")
