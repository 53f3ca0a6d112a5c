"""The sync history as people read it: what each sync did, who or what started it, what failed.

Shared by the sync API (``/api/sync/status``, ``/api/sync/logs``) and the admin page. Counts of an
applied sync come from its change rows (``membership_changes``), so a reinstatement is counted as
reinstated, not as added (the log's ``members_added`` holds both). Error details are reduced to
safe fields: an error text may quote a member's row.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from ..columns import column_names
from . import admin_store  # noqa: F401  (registers the admin page's tables with the members schema)
from .records import KINDS, SyncLogEntry
from .store import changes, rejects, sync_log

# The API's fields of a sync: the log entry's columns, with the reinstatements counted apart from
# the additions (from the change rows). Its errors are shown only reduced to safe fields (``error``,
# ``notes``) and the rolled-back sync last, after them.
_STORED = [c for c in column_names(SyncLogEntry) if c not in ("errors", "rolled_back_sync_id")]
_AFTER_ADDED = _STORED.index("members_added") + 1
LOG_COLUMNS = [*_STORED[:_AFTER_ADDED], "members_reinstated", *_STORED[_AFTER_ADDED:]]
ADMIN_SOURCE_PREFIX = "admin:"  # membership_sync_log.source of a sync an admin asked for

# Who or what started a sync, in words (membership_sync_log.source).
SOURCE_LABELS = {
    "scheduled": "hourly schedule",
    "sensor": "registry change sensor (polling)",
    "webhook": "Django webhook",
    "api": "sync API",
    "manual": "Dagster UI",
    "rollback": "rollback",
}


def source_label(source: str | None) -> str:
    if source and source.startswith(ADMIN_SOURCE_PREFIX):
        return f"admin {source[len(ADMIN_SOURCE_PREFIX) :]}"
    return SOURCE_LABELS.get(source or "", source or "unknown")


def safe_error(errors: Any) -> dict[str, Any] | None:
    """What failed, never the error text: step and exception type of a failed sync, which guards
    stopped it; None when nothing failed (a partial sync's notes are not an error)."""
    errors = _decoded(errors)
    if not isinstance(errors, dict) or not errors.get("step"):
        return None
    out: dict[str, Any] = {"step": str(errors["step"]), "type": str(errors.get("type") or "")}
    guards = [v.get("guard") for v in errors.get("violations") or [] if isinstance(v, dict)]
    if guards:
        out["guards"] = [str(g) for g in guards if g]
    return out


def safe_notes(errors: Any) -> dict[str, Any] | None:
    """A sync that went through with remarks: rows quarantined, guards a human overrode."""
    errors = _decoded(errors)
    if not isinstance(errors, dict):
        return None
    notes: dict[str, Any] = {}
    if isinstance(errors.get("rejected_rows"), int):
        notes["rejected_rows"] = errors["rejected_rows"]
    if isinstance(errors.get("overridden_guards"), list):
        notes["overridden_guards"] = [str(g) for g in errors["overridden_guards"]]
    return notes or None


def _decoded(errors: Any) -> Any:
    if isinstance(errors, str):
        try:
            return json.loads(errors)
        except ValueError:
            return None
    return errors


def change_counts(conn: sa.Connection, sync_ids: list[str]) -> dict[str, dict[str, int]]:
    """{sync_id: {added, reinstated, changed, removed}} counted from the change rows (indexed by
    the primary key's leading sync_id)."""
    if not sync_ids:
        return {}
    rows = conn.execute(
        sa.select(changes.c.sync_id, changes.c.change_kind, sa.func.count())
        .where(changes.c.sync_id.in_(sync_ids))
        .group_by(changes.c.sync_id, changes.c.change_kind)
    ).all()
    out: dict[str, dict[str, int]] = {}
    for sync_id, kind, n in rows:
        out.setdefault(sync_id, dict.fromkeys(KINDS, 0))[kind] = int(n)
    return out


def sync_rows(
    engine: sa.Engine, *, limit: int, applied_only: bool = False, sync_id: str | None = None
) -> list[dict[str, Any]]:
    """The latest ``limit`` syncs, newest first, as JSON-ready dicts (``LOG_COLUMNS`` plus
    ``error``, ``notes``, ``rolled_back_sync_id``)."""
    query = sa.select(*[sync_log.c[c] for c in _STORED], sync_log.c.errors, sync_log.c.rolled_back_sync_id)
    if applied_only:
        query = query.where(sync_log.c.status.in_(("success", "partial")), sync_log.c.dry_run.is_(False))
    if sync_id is not None:
        query = query.where(sync_log.c.id == sync_id)
    query = query.order_by(sync_log.c.sync_time.desc(), sync_log.c.created_at.desc()).limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
        counted = change_counts(conn, [r["id"] for r in rows])
    out = []
    for r in rows:
        row = jsonable({c: r[c] for c in _STORED})
        by_kind = counted.get(r["id"])
        if by_kind is not None:
            row.update(
                members_added=by_kind["added"],
                members_reinstated=by_kind["reinstated"],
                members_updated=by_kind["changed"],
                members_removed=by_kind["removed"],
            )
        else:  # no change rows: nothing applied (failed, dry run) or an empty sync
            row["members_reinstated"] = 0 if row["members_added"] is not None else None
        row = {c: row[c] for c in LOG_COLUMNS}
        row["error"] = safe_error(r["errors"])
        row["notes"] = safe_notes(r["errors"])
        row["rolled_back_sync_id"] = r["rolled_back_sync_id"]
        out.append(row)
    return out


def sync_changes(
    engine: sa.Engine, sync_id: str, *, limit: int, offset: int = 0, kind: str | None = None
) -> list[dict[str, Any]]:
    """One sync's change rows (of one ``kind`` if given), names included: for signed-in admins
    only, never for logs."""
    c = changes.c
    where = [c.sync_id == sync_id] + ([c.change_kind == kind] if kind else [])
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                c.kennitala,
                c.change_kind,
                c.old_name,
                c.new_name,
                c.old_email,
                c.new_email,
                c.old_status,
                c.new_status,
            )
            .where(*where)
            .order_by(c.change_kind, c.kennitala)
            .limit(limit)
            .offset(offset)
        ).mappings()
        return [dict(r) for r in rows]


def quarantined(engine: sa.Engine, sync_id: str, *, limit: int) -> list[dict[str, Any]]:
    """Rows the sync ``sync_id`` quarantined, with their reasons, in registry order."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                rejects.c.row_number,
                rejects.c.kennitala_raw,
                rejects.c.name,
                rejects.c.email,
                rejects.c.status,
                rejects.c.reasons,
            )
            .where(rejects.c.sync_id == sync_id)
            .order_by(rejects.c.row_number)
            .limit(limit)
        ).mappings()
        return [dict(r) for r in rows]


def quarantined_count(engine: sa.Engine, sync_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(rejects.c.sync_id == sync_id)).scalar_one()


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if isinstance(v, datetime):
            v = aware(v).isoformat()
        out[k] = v
    return out


def aware(ts: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything written here is UTC.
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
