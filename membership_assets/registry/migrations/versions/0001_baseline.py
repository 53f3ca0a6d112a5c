"""Baseline: the schema the pre-Alembic code created with ``metadata.create_all``.

Frozen: later schema changes are new revisions, never edits of this file. A database created by
the old code is recognised (same tables and columns, no ``alembic_version``) and stamped at this
revision instead of being created again.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)

ELIGIBILITY_VIEW = """
CREATE VIEW member_eligibility AS
SELECT kennitala, name, email, status,
       CASE WHEN status = 'active' THEN TRUE ELSE FALSE END AS eligible,
       synced_at
FROM members
WHERE status IN ('active', 'suspended')
"""

VIEWS = ("member_eligibility",)


def tables() -> dict[str, list[sa.SchemaItem]]:
    """Fresh column and index objects of each baseline table (also read by the legacy check)."""
    return {
        "members": [
            sa.Column("kennitala", sa.String(10), primary_key=True),
            sa.Column("name", sa.String(255)),
            sa.Column("email", sa.String(255)),
            sa.Column("status", sa.String(50), nullable=False, server_default="active"),
            sa.Column("source", sa.String(50), nullable=False, server_default="django"),
            sa.Column("synced_at", TS),
            sa.Column("sync_id", sa.String(36)),
            sa.Column("created_at", TS, server_default=sa.func.current_timestamp()),
            sa.Index("idx_members_status_synced", "status", "synced_at"),
        ],
        "membership_sync_log": [
            sa.Column("id", sa.String(36), primary_key=True),
            sa.Column("sync_time", TS, nullable=False),
            sa.Column("source", sa.String(50)),
            sa.Column("status", sa.String(50)),
            sa.Column("dry_run", sa.Boolean, nullable=False, server_default=sa.false()),
            sa.Column("members_fetched", sa.Integer),
            sa.Column("members_added", sa.Integer),
            sa.Column("members_removed", sa.Integer),
            sa.Column("members_updated", sa.Integer),
            sa.Column("members_rejected", sa.Integer),
            sa.Column("errors", JSON),
            sa.Column("duration_ms", sa.Integer),
            sa.Column("run_id", sa.String(64)),
            sa.Column("rolled_back_sync_id", sa.String(36)),
            sa.Column("created_at", TS, server_default=sa.func.current_timestamp()),
            sa.Index("idx_sync_log_time", sa.text("sync_time DESC")),
        ],
        "membership_changes": [
            sa.Column("sync_id", sa.String(36), primary_key=True),
            sa.Column("kennitala", sa.String(10), primary_key=True),
            sa.Column("change_kind", sa.String(20), nullable=False),
            sa.Column("old_name", sa.String(255)),
            sa.Column("old_email", sa.String(255)),
            sa.Column("old_status", sa.String(50)),
            sa.Column("new_name", sa.String(255)),
            sa.Column("new_email", sa.String(255)),
            sa.Column("new_status", sa.String(50)),
            sa.Column("changed_at", TS, nullable=False),
        ],
        "member_rejects": [
            sa.Column("sync_id", sa.String(36), primary_key=True),
            sa.Column("row_number", sa.Integer, primary_key=True),
            sa.Column("kennitala_raw", sa.String(64)),
            sa.Column("kennitala", sa.String(10)),
            sa.Column("name", sa.String(255)),
            sa.Column("email", sa.String(255)),
            sa.Column("status", sa.String(50)),
            sa.Column("reasons", sa.Text),
            sa.Column("rejected_at", TS, nullable=False),
        ],
    }


def upgrade() -> None:
    for name, items in tables().items():
        op.create_table(name, *items)
    op.execute(ELIGIBILITY_VIEW)


def downgrade() -> None:
    for view in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
    for name in reversed(list(tables())):
        op.drop_table(name)
