"""The voting-eligibility database: members, sync log, change history, rejects, eligibility view.

Postgres in production (``MEMBERS_DB_URL``), a SQLite file on the embedded default; the same
SQLAlchemy Core code drives both. A sync is applied in ONE transaction, set-based: the delta is
bulk-loaded into a staging table (COPY on Postgres) and each kind of change is one statement.
Readers of ``member_eligibility`` therefore see the membership before or after a sync, never a
mix. Every applied change is kept (old and new values) so a sync can be rolled back.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from ..columns import Column, column_default, record_columns
from . import migrate as migrations  # (``migrate`` is ensure_schema's flag)
from .records import (
    DELTA_COLUMNS,
    FIELD_LIMITS,  # validation's limits are the column sizes below
    KENNITALA_LENGTH,
    SYNC_ID_LENGTH,
    MemberChange,
    SyncLogEntry,
)
from .validation import ACTIVE, REMOVED, SUSPENDED

# Column sizes: the limits validation applies (records.FIELD_LIMITS), so no valid row is refused.
_NAME, _EMAIL, _STATUS = (sa.String(FIELD_LIMITS[f]) for f in ("name", "email", "status"))

# The tables as the code uses them; ``migrate`` brings a database to this shape with versioned
# Alembic revisions (migrations/versions), which also define the ``member_eligibility`` view.
metadata = sa.MetaData()
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def record_table_columns(record: type) -> list[sa.Column]:
    """A table's columns for ``record``'s columns (columns.py), in the members DB's types."""
    out = []
    for c in record_columns(record):
        default = column_default(record, c.name)
        out.append(
            sa.Column(
                c.name,
                _sql_type(c),
                primary_key=c.primary_key,
                nullable=not (c.required or c.primary_key),
                # A NOT NULL flag a row may leave out defaults in the database as in the record.
                server_default=(sa.true() if default else sa.false()) if isinstance(default, bool) else None,
            )
        )
    return out


def _sql_type(c: Column) -> sa.types.TypeEngine:
    if c.type == "STRING":
        return sa.String(c.length) if c.length else sa.Text()
    return {"INT64": sa.Integer(), "BOOL": sa.Boolean(), "TIMESTAMP": TS, "JSON": JSONType}[c.type]


members = sa.Table(
    "members",
    metadata,
    sa.Column("kennitala", sa.String(KENNITALA_LENGTH), primary_key=True),
    sa.Column("name", _NAME),
    sa.Column("email", _EMAIL),
    sa.Column("status", _STATUS, nullable=False, server_default=ACTIVE),
    sa.Column("source", sa.String(50), nullable=False, server_default="django"),
    sa.Column("synced_at", TS),
    sa.Column("sync_id", sa.String(SYNC_ID_LENGTH)),
    sa.Column("created_at", TS, server_default=sa.func.current_timestamp()),
    sa.Index("idx_members_status_synced", "status", "synced_at"),
)

# The sync log and the change history are their records' columns (records.py), plus when the
# database wrote the row.
sync_log = sa.Table(
    "membership_sync_log",
    metadata,
    *record_table_columns(SyncLogEntry),
    sa.Column("created_at", TS, server_default=sa.func.current_timestamp()),
)
sa.Index("idx_sync_log_time", sync_log.c.sync_time.desc())

changes = sa.Table(
    "membership_changes",
    metadata,
    sa.Column("sync_id", sa.String(SYNC_ID_LENGTH), primary_key=True),
    *record_table_columns(MemberChange),
    sa.Column("changed_at", TS, nullable=False),
)

rejects = sa.Table(
    "member_rejects",
    metadata,
    sa.Column("sync_id", sa.String(SYNC_ID_LENGTH), primary_key=True),
    sa.Column("row_number", sa.Integer, primary_key=True),
    sa.Column("kennitala_raw", sa.String(FIELD_LIMITS["kennitala_raw"])),
    sa.Column("kennitala", sa.String(KENNITALA_LENGTH)),
    sa.Column("name", _NAME),
    sa.Column("email", _EMAIL),
    sa.Column("status", _STATUS),
    sa.Column("reasons", sa.Text),
    sa.Column("rejected_at", TS, nullable=False),
)

# What each sync owes the audit warehouse, recorded in the same transaction as the sync's own log
# row (applied or failed): the warehouse can be down when a sync applies, the members DB cannot.
# A row stays pending until its sync's deltas, rejects and log row are in the warehouse.
history_owed = sa.Table(
    "warehouse_history_owed",
    metadata,
    sa.Column("sync_id", sa.String(SYNC_ID_LENGTH), primary_key=True),
    sa.Column("recorded_at", TS, nullable=False),
    sa.Column("delivered_at", TS),
    sa.Index("idx_history_owed_pending", "delivered_at", "recorded_at"),
)

APPLIED = ("success", "partial")


class StaleDeltaError(RuntimeError):
    """Another sync was applied after this delta was computed; recompute it."""


class RollbackError(RuntimeError):
    """The requested rollback would not restore a consistent earlier membership."""


def make_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        path = sa.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)  # a fresh state directory
        engine = sa.create_engine(
            url, connect_args={"timeout": 60, "check_same_thread": False}, hide_parameters=True
        )

        @sa.event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):
            # Let us issue BEGIN ourselves, so writers can take the write lock up front.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers never block on, or see, a writer
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            write = conn.get_execution_options().get("membership_write")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    # hide_parameters: a failed statement's error must not quote members' kennitalas and names.
    return sa.create_engine(url, pool_pre_ping=True, hide_parameters=True)


class MembersStore:
    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.dialect = engine.dialect.name

    @classmethod
    def from_url(cls, url: str) -> MembersStore:
        return cls(make_engine(url))

    # -- schema --------------------------------------------------------------------------------

    def ensure_schema(self, migrate: bool = True) -> tuple[str | None, str]:
        """Apply the pending Alembic revisions (see ``migrate``): (revision before, head).

        With ``migrate=False`` (production) a database that is not at head is an error naming
        the command that migrates it, so no deploy changes a voting roll's schema unasked.
        """
        target = migrations.head()
        with self.engine.connect() as conn:
            current = migrations.current_revision(conn)
        if current == target:  # the common case: no lock needed
            return current, target
        migrations.check_known(current)
        if not migrate:
            raise migrations.SchemaMismatchError(
                f"the members database is at revision {current or 'none'}, this code needs {target}: "
                "apply the migrations with `python -m membership_assets migrate`"
            )
        with self.write() as conn:
            return migrations.upgrade_to_head(conn)

    def drop_schema(self) -> None:
        """Drop every table and view of the application and the migration history (tests only)."""
        with self.write() as conn:
            conn.exec_driver_sql("DROP VIEW IF EXISTS member_eligibility")
            metadata.drop_all(conn)
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {migrations.VERSION_TABLE}")

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A transaction that holds the sync lock: one writer at a time, on either backend."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(membership_write=True)
            with conn.begin():
                if self.dialect == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('membership_sync'))"))
                yield conn

    # -- reads ---------------------------------------------------------------------------------

    def current_members(self) -> pd.DataFrame:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(members.c.kennitala, members.c.name, members.c.email, members.c.status)
            ).all()
        return pd.DataFrame(rows, columns=["kennitala", "name", "email", "status"])

    def active_count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).where(members.c.status.in_([ACTIVE, SUSPENDED]))
            ).scalar_one()

    def last_applied_sync(self, conn: sa.Connection | None = None) -> dict[str, Any] | None:
        query = (
            sa.select(sync_log)
            .where(sync_log.c.status.in_(APPLIED), sync_log.c.dry_run.is_(False))
            .order_by(sync_log.c.sync_time.desc(), sync_log.c.created_at.desc())
            .limit(1)
        )
        if conn is not None:
            row = conn.execute(query).mappings().first()
        else:
            with self.engine.connect() as c:
                row = c.execute(query).mappings().first()
        return dict(row) if row else None

    def applied_entry(self, sync_id: str, conn: sa.Connection | None = None) -> SyncLogEntry | None:
        """The log entry of ``sync_id`` if that sync was applied (success or partial)."""
        query = sa.select(sync_log).where(sync_log.c.id == sync_id, sync_log.c.status.in_(APPLIED))
        if conn is not None:
            row = conn.execute(query).mappings().first()
        else:
            with self.engine.connect() as c:
                row = c.execute(query).mappings().first()
        return SyncLogEntry(**{k: row[k] for k in SyncLogEntry.__dataclass_fields__}) if row else None

    def last_fetched_count(self) -> int | None:
        """Rows listed by the last successful sync from the registry (rollbacks don't count)."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sync_log.c.members_fetched)
                .where(
                    sync_log.c.status.in_(APPLIED),
                    sync_log.c.dry_run.is_(False),
                    sync_log.c.source != "rollback",
                )
                .order_by(sync_log.c.sync_time.desc())
                .limit(1)
            ).scalar()

    def is_eligible(self, kennitala: str) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT eligible FROM member_eligibility WHERE kennitala = :k"), {"k": kennitala}
            ).first()
        return bool(row[0]) if row else False

    def eligibility_counts(self) -> tuple[int, int]:
        """(listed, eligible) in member_eligibility, counted by the database, not in memory."""
        with self.engine.connect() as conn:
            listed, eligible = conn.execute(
                sa.text(
                    "SELECT COUNT(*), COALESCE(SUM(CASE WHEN eligible THEN 1 ELSE 0 END), 0) "
                    "FROM member_eligibility"
                )
            ).one()
        return int(listed), int(eligible)

    def eligibility(self) -> pd.DataFrame:
        with self.engine.connect() as conn:
            return pd.read_sql(sa.text("SELECT * FROM member_eligibility ORDER BY kennitala"), conn)

    def sync_log_since(self, since: datetime) -> pd.DataFrame:
        return self._sync_log_frame(sync_log.c.sync_time >= since)

    def sync_log_of(self, sync_ids: list[str]) -> pd.DataFrame:
        return self._sync_log_frame(sync_log.c.id.in_(sync_ids))

    def _sync_log_frame(self, where: Any) -> pd.DataFrame:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(sync_log).where(where)).mappings().all()
        frame = pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in sync_log.columns])
        frame["errors"] = frame["errors"].map(lambda e: None if e is None else json.dumps(e))
        return frame

    def log_entry(self, sync_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(sync_log).where(sync_log.c.id == sync_id)).mappings().first()
        return dict(row) if row else None

    def changes_of(self, sync_id: str | list[str], *, with_sync_id: bool = False) -> pd.DataFrame:
        """The changes one sync (or several) applied; ``with_sync_id`` adds the sync_id column."""
        ids = [sync_id] if isinstance(sync_id, str) else sync_id
        columns = [*DELTA_COLUMNS, "sync_id"] if with_sync_id else DELTA_COLUMNS
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(*[changes.c[c] for c in columns])
                .where(changes.c.sync_id.in_(ids))
                .order_by(changes.c.sync_id, changes.c.change_kind, changes.c.kennitala)
            ).all()
        return pd.DataFrame(rows, columns=columns)

    # -- writes --------------------------------------------------------------------------------

    def _save_rejects(self, conn: sa.Connection, sync_id: str, frame: pd.DataFrame, now: datetime) -> None:
        rows = [
            {**{k: _none(v) for k, v in r.items() if k in rejects.c}, "sync_id": sync_id, "rejected_at": now}
            for r in frame.to_dict("records")
        ]
        if rows:
            conn.execute(rejects.insert(), rows)

    def rejects_of(self, sync_id: str | list[str]) -> pd.DataFrame:
        ids = [sync_id] if isinstance(sync_id, str) else sync_id
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    sa.select(rejects)
                    .where(rejects.c.sync_id.in_(ids))
                    .order_by(rejects.c.sync_id, rejects.c.row_number)
                )
                .mappings()
                .all()
            )
        return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in rejects.columns])

    def record_failure(self, entry: SyncLogEntry) -> None:
        """Log a sync that did not apply; idempotent per sync id (a retried failure keeps one row)."""
        with self.write() as conn:
            conn.execute(sync_log.delete().where(sync_log.c.id == entry.id, sync_log.c.status == "failed"))
            if conn.execute(sa.select(sync_log.c.id).where(sync_log.c.id == entry.id)).first() is None:
                conn.execute(sync_log.insert().values(**asdict(entry)))
                self._owe_history(conn, entry.id)

    # -- history owed to the warehouse ----------------------------------------------------------

    @staticmethod
    def _owe_history(conn: sa.Connection, sync_id: str) -> None:
        """(Re)mark ``sync_id``'s history as owed: a new recorded_at, so a delivery that read the
        sync before this change cannot mark the new state delivered."""
        conn.execute(history_owed.delete().where(history_owed.c.sync_id == sync_id))
        conn.execute(history_owed.insert().values(sync_id=sync_id, recorded_at=datetime.now(timezone.utc)))

    def history_owed(self, limit: int = 200, sync_ids: list[str] | None = None) -> list[tuple[str, datetime]]:
        """(sync id, recorded_at) of syncs whose history the warehouse has not confirmed, oldest first."""
        query = sa.select(history_owed.c.sync_id, history_owed.c.recorded_at).where(
            history_owed.c.delivered_at.is_(None)
        )
        if sync_ids is not None:
            query = query.where(history_owed.c.sync_id.in_(sync_ids))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(history_owed.c.recorded_at).limit(limit)).all()
        return [(r[0], r[1]) for r in rows]

    def history_delivered(self, owed: list[tuple[str, datetime]]) -> None:
        """Mark these (sync id, recorded_at) delivered; a sync re-marked owed since is left owed."""
        if not owed:
            return
        now = datetime.now(timezone.utc)
        with self.engine.begin() as conn:
            for sync_id, recorded_at in owed:
                conn.execute(
                    history_owed.update()
                    .where(history_owed.c.sync_id == sync_id, history_owed.c.recorded_at == recorded_at)
                    .values(delivered_at=now)
                )

    def logged_ids(self, sync_ids: list[str]) -> set[str]:
        """Which of ``sync_ids`` have a row in the sync log (any status)."""
        if not sync_ids:
            return set()
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(sync_log.c.id).where(sync_log.c.id.in_(sync_ids))).scalars())

    def apply(
        self,
        delta: pd.DataFrame,
        entry: SyncLogEntry,
        *,
        base_sync_id: str | None,
        rejected_rows: pd.DataFrame | None = None,
    ) -> tuple[SyncLogEntry, bool]:
        """Apply ``delta``, quarantine ``rejected_rows`` and log ``entry`` in one transaction,
        provided no other sync was applied since the delta was computed.

        Idempotent per sync id: if ``entry.id`` was already applied, nothing is written and the
        logged entry is returned with ``False``.
        """
        entry.with_counts(delta)
        now = entry.sync_time
        with self.write() as conn:
            done = self.applied_entry(entry.id, conn)
            if done is not None:
                return done, False
            latest = self.last_applied_sync(conn)
            if (latest["id"] if latest else None) != base_sync_id:
                raise StaleDeltaError(
                    f"sync {latest['id'] if latest else None} was applied after this delta was "
                    f"computed against {base_sync_id}; recompute the delta"
                )
            if len(delta):
                self._apply_set_based(conn, delta, entry.id, now)
            if rejected_rows is not None:
                self._save_rejects(conn, entry.id, rejected_rows, now)
            # A re-execution that succeeds replaces the failed attempt's row of the same sync.
            conn.execute(sync_log.delete().where(sync_log.c.id == entry.id, sync_log.c.status == "failed"))
            conn.execute(sync_log.insert().values(**asdict(entry)))
            self._owe_history(conn, entry.id)
        return entry, True

    def _apply_set_based(self, conn: sa.Connection, delta: pd.DataFrame, sync_id: str, now: datetime) -> None:
        cols = ["kennitala", "change_kind", "new_name", "new_email", "new_status"]
        staging = sa.Table(
            f"_delta_{uuid.uuid4().hex[:12]}",
            sa.MetaData(),
            # Same types as the change history the delta is copied into.
            *(sa.Column(c, changes.c[c].type, primary_key=c == "kennitala") for c in cols),
            prefixes=["TEMPORARY"],
            postgresql_on_commit="DROP",
        )
        staging.create(conn)
        self._bulk_load(conn, staging, delta[cols])
        s, m = staging.c, members.c
        # History first: it reads the members' values before they change.
        conn.execute(
            changes.insert().from_select(
                [*DELTA_COLUMNS, "sync_id", "changed_at"],
                sa.select(
                    s.kennitala,
                    s.change_kind,
                    m.name,
                    m.email,
                    m.status,
                    s.new_name,
                    s.new_email,
                    s.new_status,
                    sa.literal(sync_id, sa.String),
                    sa.literal(now, TS),
                ).select_from(staging.outerjoin(members, members.c.kennitala == s.kennitala)),
            )
        )
        conn.execute(
            members.insert().from_select(
                ["kennitala", "name", "email", "status", "source", "synced_at", "sync_id"],
                sa.select(
                    s.kennitala,
                    s.new_name,
                    s.new_email,
                    s.new_status,
                    sa.literal("django", sa.String),
                    sa.literal(now, TS),
                    sa.literal(sync_id, sa.String),
                ).where(s.change_kind == "added"),
            )
        )
        conn.execute(
            members.update()
            .where(m.kennitala == s.kennitala, s.change_kind.in_(["reinstated", "changed", "removed"]))
            .values(name=s.new_name, email=s.new_email, status=s.new_status, synced_at=now, sync_id=sync_id)
        )
        if self.dialect != "postgresql":
            staging.drop(conn)

    def _bulk_load(self, conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> None:
        if self.dialect == "postgresql":
            raw = conn.connection.driver_connection
            with (
                raw.cursor() as cur,
                cur.copy(f'COPY "{table.name}" ({", ".join(frame.columns)}) FROM STDIN') as copy,
            ):
                for row in frame.itertuples(index=False, name=None):
                    copy.write_row([_none(v) for v in row])
        else:
            conn.execute(
                table.insert(), [{k: _none(v) for k, v in r.items()} for r in frame.to_dict("records")]
            )

    def plan_rollback(self, target_sync_id: str) -> pd.DataFrame:
        """The changes that would restore the membership from before ``target_sync_id``, after
        the same checks a real rollback makes (raises RollbackError when it would be refused)."""
        with self.engine.connect() as conn:
            target = (
                conn.execute(sa.select(sync_log).where(sync_log.c.id == target_sync_id)).mappings().first()
            )
        if target is None or target["status"] not in APPLIED or target["dry_run"]:
            raise RollbackError(f"sync {target_sync_id} was never applied; nothing to roll back")
        latest = self.last_applied_sync()
        if latest is None or latest["id"] != target_sync_id:
            raise RollbackError(
                f"sync {target_sync_id} is not the latest applied sync ({latest['id'] if latest else None}); "
                "roll back later syncs first so no later change is silently undone"
            )
        return inverse_delta(self.changes_of(target_sync_id))

    def rollback(self, target_sync_id: str, entry: SyncLogEntry) -> SyncLogEntry:
        """Restore the membership from before ``target_sync_id``; applied as a sync of its own."""
        done = self.applied_entry(entry.id)
        if done is not None:  # this rollback already went through (a re-executed run)
            return done
        inverse = self.plan_rollback(target_sync_id)
        entry.rolled_back_sync_id = target_sync_id
        return self.apply(inverse, entry, base_sync_id=target_sync_id)[0]


def inverse_delta(applied: pd.DataFrame) -> pd.DataFrame:
    """The changes that undo ``applied`` (rows of membership_changes for one sync)."""
    rows = []
    for r in applied.itertuples(index=False):
        if r.change_kind == "added":  # did not exist before: soft-delete
            kind, new = "removed", (r.new_name, r.new_email, REMOVED)
        elif r.change_kind == "removed":
            kind, new = "reinstated", (r.old_name, r.old_email, r.old_status)
        elif r.change_kind == "reinstated":
            kind, new = "removed", (r.old_name, r.old_email, r.old_status)
        else:
            kind, new = "changed", (r.old_name, r.old_email, r.old_status)
        rows.append(
            {
                "kennitala": r.kennitala,
                "change_kind": kind,
                "old_name": r.new_name,
                "old_email": r.new_email,
                "old_status": r.new_status,
                "new_name": new[0],
                "new_email": new[1],
                "new_status": new[2],
            }
        )
    return pd.DataFrame(rows, columns=DELTA_COLUMNS)


def _none(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and value != value:
        return None
    return value
