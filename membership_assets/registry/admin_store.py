"""The admin page's own state in the members database, so every replica of the sync service
sees it: previews (what a sync would do, and whether a sync was requested from one) and
sign-outs (a session issued before its admin signed out is refused everywhere).

Registered with the members schema (``store.metadata``) by ``history``; created by Alembic
revision ``0006``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from .store import TS, JSONType, metadata

admin_previews = sa.Table(
    "admin_previews",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("started_by", sa.String(32), nullable=False),
    sa.Column("started_at", TS, nullable=False),
    sa.Column("finished_at", TS),
    sa.Column("state", sa.String(16), nullable=False),  # running | done | failed
    sa.Column("base_sync_id", sa.String(36)),
    sa.Column("result", JSONType),  # counts, guards' answer, first changes (names: members DB only)
    sa.Column("used_at", TS),  # when a sync was requested from it
    sa.Index("idx_admin_previews_started", "started_at"),
)

admin_signouts = sa.Table(
    "admin_signouts",
    metadata,
    sa.Column("admin", sa.String(32), primary_key=True),
    sa.Column("signed_out_at", TS, nullable=False),
)

KEEP_PREVIEWS = timedelta(days=7)


def _aware(ts: datetime | None) -> datetime | None:
    return ts if ts is None or ts.tzinfo else ts.replace(tzinfo=timezone.utc)


class AdminStore:
    """Reads and writes of the admin page's tables (bound parameters only)."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def start_preview(self, preview_id: str, admin: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(admin_previews.delete().where(admin_previews.c.started_at < now - KEEP_PREVIEWS))
            conn.execute(
                admin_previews.insert().values(
                    id=preview_id, started_by=admin, started_at=now, state="running"
                )
            )

    def finish_preview(
        self, preview_id: str, state: str, result: dict[str, Any], base_sync_id: str | None, now: datetime
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                admin_previews.update()
                .where(admin_previews.c.id == preview_id)
                .values(state=state, result=result, base_sync_id=base_sync_id, finished_at=now)
            )

    def preview(self, preview_id: str | None = None) -> dict[str, Any] | None:
        """One preview by id, or the latest one."""
        query = sa.select(admin_previews)
        if preview_id is not None:
            query = query.where(admin_previews.c.id == preview_id)
        query = query.order_by(admin_previews.c.started_at.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            return None
        out = dict(row)
        for k in ("started_at", "finished_at", "used_at"):
            out[k] = _aware(out[k])
        return out

    def claim_preview(self, preview_id: str, now: datetime) -> bool:
        """Mark a preview used; False when a sync was already requested from it (any replica)."""
        with self.engine.begin() as conn:
            done = conn.execute(
                admin_previews.update()
                .where(admin_previews.c.id == preview_id, admin_previews.c.used_at.is_(None))
                .values(used_at=now)
            )
        return done.rowcount == 1

    def sign_out(self, admin: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            updated = conn.execute(
                admin_signouts.update().where(admin_signouts.c.admin == admin).values(signed_out_at=now)
            )
            if updated.rowcount == 0:
                try:
                    with conn.begin_nested():
                        conn.execute(admin_signouts.insert().values(admin=admin, signed_out_at=now))
                except sa.exc.IntegrityError:  # another replica signed this admin out this instant
                    conn.execute(
                        admin_signouts.update()
                        .where(admin_signouts.c.admin == admin)
                        .values(signed_out_at=now)
                    )

    def signed_out_at(self, admin: str) -> datetime | None:
        with self.engine.connect() as conn:
            return _aware(
                conn.execute(
                    sa.select(admin_signouts.c.signed_out_at).where(admin_signouts.c.admin == admin)
                ).scalar()
            )
