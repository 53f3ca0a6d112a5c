"""The admin page: who asked for a sync (the admin's name on a sync request), the previews and
the sign-outs every replica of the sync service shares.

Frozen: later changes are new revisions. In the code: ``events.change_events.c.requested_by``,
``admin_store.admin_previews`` and ``admin_store.admin_signouts``.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    # Nullable, no default: adding it rewrites nothing on Postgres and works on SQLite.
    op.add_column("registry_change_events", sa.Column("requested_by", sa.String(32)))
    op.create_table(
        "admin_previews",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("started_by", sa.String(32), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("base_sync_id", sa.String(36)),
        sa.Column("result", JSONType),
        sa.Column("used_at", TS),
    )
    op.create_index("idx_admin_previews_started", "admin_previews", ["started_at"])
    op.create_table(
        "admin_signouts",
        sa.Column("admin", sa.String(32), primary_key=True),
        sa.Column("signed_out_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("admin_signouts")
    op.drop_index("idx_admin_previews_started", "admin_previews")
    op.drop_table("admin_previews")
    with op.batch_alter_table("registry_change_events") as batch:
        batch.drop_column("requested_by")
