"""Who asked for a sync: the admin's name on a sync request made from the admin page.

Frozen: later changes are new revisions. The column is ``events.change_events.c.requested_by``.

Revision ID: 0008_h3
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_h3"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites nothing on Postgres and works on SQLite.
    op.add_column("registry_change_events", sa.Column("requested_by", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("registry_change_events") as batch:
        batch.drop_column("requested_by")
