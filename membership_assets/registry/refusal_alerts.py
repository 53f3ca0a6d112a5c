"""Admins hear when the real-time path dies: refused webhooks, or webhooks gone silent.

A secret rotated on one side only, or a clock six minutes off, makes the receiver refuse every
webhook; the hourly sync then hides it. The receiver counts what it refuses by reason code
(``sync_api_counts``, counts only, never request bytes) and this sensor emails ``ADMIN_EMAILS``
through the project's email resource when, in the last 5 minutes, 20 or more requests were
refused for authentication reasons, or when in the last hour no webhook arrived although a sync
from another source found the registry changed.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg
import sqlalchemy as sa

from ..notify.resources import EmailSender, Recipients
from .events import SOURCE_WEBHOOK, ReceiverStore
from .resources import MembersDatabase
from .store import sync_log
from .webhook import AUTH_REASONS

SENSOR_NAME = "webhook_refusals"
BURST_REFUSALS = 20
BURST_WINDOW = timedelta(minutes=5)
SILENCE_WINDOW = timedelta(hours=1)
REALERT_AFTER = timedelta(hours=1)  # one email an hour while the problem lasts


def refusal_alert(recent: dict[str, int], last_webhook: datetime | None, changed_syncs: int, now: datetime):
    """(subject, body) of the admins' alert, or None (pure: the sensor's decision)."""
    refused = {r: n for r, n in sorted(recent.items()) if r in AUTH_REASONS and n}
    problems = []
    if sum(refused.values()) >= BURST_REFUSALS:
        counts = ", ".join(f"{r}: {n}" for r, n in refused.items())
        problems.append(
            f"{sum(refused.values())} webhook/API requests were refused in the last "
            f"{int(BURST_WINDOW.total_seconds() // 60)} minutes ({counts}). bad_signature: the "
            "secret differs between Django and the receiver (rotate with ..._PREVIOUS_PASSWORD); "
            "stale_timestamp: a clock is off by more than the 300 s window."
        )
    # Only where webhooks worked before: a deployment without the receiver is not "silent".
    silent = last_webhook is not None and now - last_webhook > SILENCE_WINDOW
    if silent and changed_syncs:
        problems.append(
            f"No webhook was accepted in the last hour, but {changed_syncs} sync(s) from other "
            "sources found registry changes: Django's webhooks are not arriving."
        )
    if not problems:
        return None
    body = (
        "The registry's real-time path (Django webhooks -> sync-api) needs attention:\n\n"
        + "\n\n".join(problems)
        + "\n\nThe hourly sync still runs, so eligibility stays current within the hour. Counts and "
        "reason codes only; the receiver keeps no request contents.\n"
    )
    return "[membership_assets] registry webhooks are failing", body


def changed_syncs_since(store, since: datetime) -> int:
    """Applied syncs from other sources than webhooks that changed someone since ``since``."""
    c = sync_log.c
    changed = sa.func.coalesce(c.members_added, 0) + sa.func.coalesce(c.members_removed, 0)
    changed = changed + sa.func.coalesce(c.members_updated, 0)
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(
                c.sync_time >= since,
                c.source != SOURCE_WEBHOOK,
                c.dry_run.is_(False),
                c.status.in_(("success", "partial")),
                changed > 0,
            )
        ).scalar_one()


@dg.sensor(
    name=SENSOR_NAME,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Emails the admins (ADMIN_EMAILS) when the webhook receiver refuses a burst of "
    "requests or Django's webhooks stop arriving while the registry changes.",
)
def webhook_refusals(
    context: dg.SensorEvaluationContext,
    members_db: MembersDatabase,
    email: EmailSender,
    recipients: Recipients,
):
    now = datetime.now(timezone.utc)
    alerted = datetime.fromtimestamp(float(context.cursor), timezone.utc) if context.cursor else None
    if alerted and now - alerted < REALERT_AFTER:
        return dg.SkipReason(f"admins were alerted at {alerted:%H:%M} UTC")
    store = members_db.store()
    receiver = ReceiverStore(store)
    try:
        recent = receiver.counts_since(now - BURST_WINDOW)
        alert = refusal_alert(
            recent,
            receiver.last_webhook_received(),
            changed_syncs_since(store, now - SILENCE_WINDOW),
            now,
        )
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:  # down or not migrated yet
        return dg.SkipReason(f"members database unavailable ({type(exc).__name__})")
    if alert is None:
        return dg.SkipReason("webhooks are getting through")
    to = recipients.admin_list
    if not to:
        return dg.SkipReason("no admin recipients configured (ADMIN_EMAILS)")
    email.send(to, *alert)
    context.update_cursor(str(now.timestamp()))
    return dg.SkipReason("admins alerted")
