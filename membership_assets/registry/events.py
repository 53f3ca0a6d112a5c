"""Registry change events: what the webhook receiver records and the event sensor consumes.

Django's webhooks and admins' sync requests are written to ``registry_change_events`` in the
members database the moment they arrive, so a change is never lost when Dagster is down: an
event stays *pending* until a sensor tick claims it for a run request. A claim marks every
pending event up to one id with the run key of the request it was launched by; a tick that
crashed after claiming is repaired by the next tick, which re-requests claims whose run never
appeared (Dagster drops a run key it has already launched, so nothing runs twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from .store import TS, MembersStore, metadata

MEMBER_SAVED = "member.saved"
MEMBER_DELETED = "member.deleted"
SYNC_REQUESTED = "sync.requested"  # POST /api/sync/trigger
WEBHOOK_EVENTS = (MEMBER_SAVED, MEMBER_DELETED)
PING = "ping"  # a signed webhook that only proves the path works: acknowledged, never stored

SOURCE_WEBHOOK = "webhook"
SOURCE_API = "api"  # an admin's manual trigger through the sync API
SOURCE_ADMIN = "admin"  # an admin's "sync now" on the admin page (requested_by: the admin's name)

change_events = sa.Table(
    "registry_change_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(36), nullable=False, unique=True),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("member_id", sa.BigInteger),  # Django's pk: no personal data leaves the members DB
    sa.Column("occurred_at", TS),
    sa.Column("received_at", TS, nullable=False),
    sa.Column("dry_run", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("consumed_at", TS),
    sa.Column("run_key", sa.String(64)),
    sa.Column("requested_by", sa.String(32)),  # the admin page's signed-in admin (revision 0006)
    sa.Index("idx_change_events_pending", "consumed_at", "id"),
    sa.Index("idx_change_events_run_key", "run_key"),
)

# Request ids of signed sync-API calls: the unique key makes each signature single-use within the
# timestamp window (kept two windows, then forgotten: an older signature is stale anyway).
api_request_ids = sa.Table(
    "sync_api_request_ids",
    metadata,
    sa.Column("request_id", sa.String(36), primary_key=True),
    sa.Column("received_at", TS, nullable=False),
    sa.Index("idx_sync_api_request_ids_received", "received_at"),
)

# What the receiver refused (and accepted), by reason code, counted in memory and written every
# few seconds: the webhook_refusals sensor alerts admins from it. Counts only, no request bytes.
receiver_counts = sa.Table(
    "sync_api_counts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("recorded_at", TS, nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Index("idx_sync_api_counts_recorded", "recorded_at"),
)
KEEP_COUNTS = timedelta(days=2)


@dataclass(frozen=True)
class DebouncePolicy:
    """A burst of saves becomes one sync: wait for ``quiet_seconds`` without a new event, but
    never longer than ``max_wait_seconds`` after the oldest pending one."""

    quiet_seconds: float = 5.0
    max_wait_seconds: float = 45.0


@dataclass(frozen=True)
class PendingEvents:
    count: int
    max_id: int
    first_received: datetime
    last_received: datetime
    requested: bool  # an admin asked for a sync: no debouncing
    dry_run: bool  # every request in the batch asked for a dry run only


def launch_decision(pending: PendingEvents | None, now: datetime, policy: DebouncePolicy) -> str | None:
    """None when a sync should start now, else why it waits (pure: the sensor's debounce)."""
    if pending is None:
        return "no pending registry events"
    if pending.requested:
        return None
    quiet = (now - pending.last_received).total_seconds()
    waited = (now - pending.first_received).total_seconds()
    if quiet < policy.quiet_seconds and waited < policy.max_wait_seconds:
        return (
            f"debouncing {pending.count} events: last {quiet:.0f}s ago, waiting for "
            f"{policy.quiet_seconds:.0f}s of quiet (at most {policy.max_wait_seconds:.0f}s)"
        )
    return None


def run_key_for(max_id: int) -> str:
    """One run key per claimed batch: a retried tick re-requests the same key."""
    return f"registry-events-{max_id}"


def _aware(ts: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything written here is UTC.
    if ts is not None and ts.tzinfo is None:
        return ts.replace(tzinfo=timezone.utc)
    return ts


class ChangeEventStore:
    """``registry_change_events`` on the members database (parameters only, never formatted SQL)."""

    def __init__(self, store: MembersStore):
        self.store = store
        self.engine = store.engine

    @classmethod
    def from_url(cls, url: str) -> ChangeEventStore:
        return cls(MembersStore.from_url(url))

    def ensure_schema(self, migrate: bool = True) -> None:
        """The table comes with the members schema (Alembic revision 0004)."""
        self.store.ensure_schema(migrate=migrate)

    def record(
        self,
        *,
        event_id: str,
        event: str,
        source: str,
        member_id: int | None = None,
        occurred_at: datetime | None = None,
        dry_run: bool = False,
        requested_by: str | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Store one event; False when its event_id was already recorded (a replay or a retry)."""
        row = {
            "event_id": event_id,
            "event": event,
            "source": source,
            "member_id": member_id,
            "occurred_at": occurred_at,
            "received_at": now or datetime.now(timezone.utc),
            "dry_run": dry_run,
            "requested_by": requested_by,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(change_events.insert().values(**row))
        except sa.exc.IntegrityError:
            return False
        return True

    def pending(self) -> PendingEvents | None:
        c = change_events.c
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.max(c.id),
                    sa.func.min(c.received_at),
                    sa.func.max(c.received_at),
                    sa.func.sum(sa.case((c.event == SYNC_REQUESTED, 1), else_=0)),
                    sa.func.sum(sa.case((c.dry_run.is_(False), 1), else_=0)),
                ).where(c.consumed_at.is_(None))
            ).one()
        count, max_id, first, last, requested, real = row
        if not count:
            return None
        return PendingEvents(
            count=int(count),
            max_id=int(max_id),
            first_received=_aware(first),
            last_received=_aware(last),
            requested=bool(requested),
            dry_run=not real,
        )

    def claim(self, max_id: int, run_key: str, now: datetime | None = None) -> int:
        """Mark every pending event up to ``max_id`` as consumed by ``run_key``."""
        c = change_events.c
        with self.engine.begin() as conn:
            result = conn.execute(
                change_events.update()
                .where(c.consumed_at.is_(None), c.id <= max_id)
                .values(consumed_at=now or datetime.now(timezone.utc), run_key=run_key)
            )
        return result.rowcount

    def recent_claims(self, since: datetime) -> list[dict[str, Any]]:
        """Run keys claimed since ``since``, with what their batch needs to be re-requested."""
        c = change_events.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    c.run_key,
                    sa.func.count().label("events"),
                    sa.func.sum(sa.case((c.event == SYNC_REQUESTED, 1), else_=0)).label("requested"),
                    sa.func.sum(sa.case((c.dry_run.is_(False), 1), else_=0)).label("real"),
                )
                .where(c.consumed_at >= since, c.run_key.is_not(None))
                .group_by(c.run_key)
            ).all()
        return [
            {
                "run_key": r.run_key,
                "events": int(r.events),
                "requested": bool(r.requested),
                "dry_run": not r.real,
            }
            for r in rows
        ]

    def requesters(self, run_key: str) -> tuple[list[str], bool]:
        """Who asked for the sync of one claimed batch: (admins' names, whether the sync API did)."""
        c = change_events.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(c.source, c.requested_by)
                .where(c.run_key == run_key, c.event == SYNC_REQUESTED)
                .distinct()
                .order_by(c.requested_by)
            ).all()
        return sorted({r.requested_by for r in rows if r.requested_by}), any(
            r.source == SOURCE_API for r in rows
        )

    def stats(self) -> dict[str, Any]:
        """Pending count and the latest arrival, for GET /api/sync/status."""
        c = change_events.c
        with self.engine.connect() as conn:
            pending = conn.execute(sa.select(sa.func.count()).where(c.consumed_at.is_(None))).scalar_one()
            last = conn.execute(sa.select(sa.func.max(c.received_at))).scalar()
        return {"pending_events": int(pending), "last_event_received_at": _aware(last)}

    def prune(self, older_than: timedelta, now: datetime | None = None) -> int:
        """Forget consumed events older than ``older_than`` (well past any replay window)."""
        c = change_events.c
        cutoff = (now or datetime.now(timezone.utc)) - older_than
        with self.engine.begin() as conn:
            return conn.execute(
                change_events.delete().where(c.consumed_at.is_not(None), c.received_at < cutoff)
            ).rowcount


class ReceiverStore:
    """The receiver's own bookkeeping on the members database: single-use request ids and the
    refusal counts the alert sensor reads."""

    def __init__(self, store: MembersStore):
        self.engine = store.engine

    def claim_request_id(self, request_id: str, now: datetime | None = None) -> bool:
        """False when this request id was used before (a replayed signed call)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    api_request_ids.insert().values(
                        request_id=request_id, received_at=now or datetime.now(timezone.utc)
                    )
                )
        except sa.exc.IntegrityError:
            return False
        return True

    def add_counts(self, counts: dict[str, int], window_seconds: int, now: datetime | None = None) -> None:
        """Write one round of counts; forget request ids past two windows and old counts."""
        now = now or datetime.now(timezone.utc)
        with self.engine.begin() as conn:
            if counts:
                conn.execute(
                    receiver_counts.insert(),
                    [{"recorded_at": now, "reason": r[:32], "count": n} for r, n in sorted(counts.items())],
                )
            conn.execute(
                api_request_ids.delete().where(
                    api_request_ids.c.received_at < now - timedelta(seconds=2 * window_seconds)
                )
            )
            conn.execute(receiver_counts.delete().where(receiver_counts.c.recorded_at < now - KEEP_COUNTS))

    def counts_since(self, since: datetime) -> dict[str, int]:
        c = receiver_counts.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(c.reason, sa.func.sum(c.count)).where(c.recorded_at >= since).group_by(c.reason)
            ).all()
        return {reason: int(n) for reason, n in rows}

    def last_webhook_received(self) -> datetime | None:
        c = change_events.c
        with self.engine.connect() as conn:
            last = conn.execute(
                sa.select(sa.func.max(c.received_at)).where(c.source == SOURCE_WEBHOOK)
            ).scalar()
        return _aware(last)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
