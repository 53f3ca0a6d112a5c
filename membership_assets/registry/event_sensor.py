"""The sensor that turns recorded registry change events into debounced ``registry_sync`` runs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg

from ..run_tags import SOURCE_TAG
from .automation import ACTIVE_RUN_STATUSES, registry_preview, registry_sync
from .events import SOURCE_API, SOURCE_WEBHOOK, ChangeEventStore, launch_decision, run_key_for
from .history import ADMIN_SOURCE_PREFIX
from .resources import MembersDatabase
from .settings import RegistrySettings

SENSOR_NAME = "registry_change_events"
# A claim whose run never appeared is re-requested for this long; later the hourly sync covers it.
REPAIR_WINDOW = timedelta(hours=1)
KEEP_CONSUMED = timedelta(days=30)


def started_by(events: ChangeEventStore, run_key: str, requested: bool) -> str:
    """membership_sync_log.source of a batch's sync: ``admin:<name>`` when admins asked on the
    admin page, ``api`` for the sync API, else ``webhook`` (Django's saves)."""
    if not requested:
        return SOURCE_WEBHOOK
    admins, _ = events.requesters(run_key)
    if admins:
        return (ADMIN_SOURCE_PREFIX + ",".join(admins))[:50]  # the log's column holds 50
    return SOURCE_API


def _request(run_key: str, *, source: str, dry_run: bool, events: int) -> dg.RunRequest:
    # A request for a dry run only is a preview: its own job, tagged, never a sync.
    return dg.RunRequest(
        run_key=run_key,
        job_name=(registry_preview if dry_run else registry_sync).name,
        tags={
            SOURCE_TAG: source,  # recorded as membership_sync_log.source
            "membership/trigger": source.split(":")[0],
            "membership/events": str(events),
        },
    )


def _unlaunched(context: dg.SensorEvaluationContext, events: ChangeEventStore, now: datetime) -> list:
    """Claims of earlier ticks whose run Dagster never created (the tick died after claiming)."""
    claims = events.recent_claims(now - REPAIR_WINDOW)
    if not claims:
        return []
    keys = [c["run_key"] for c in claims]
    launched = {
        r.dagster_run.tags.get("dagster/run_key")
        for r in context.instance.get_run_records(
            dg.RunsFilter(tags={"dagster/sensor_name": SENSOR_NAME, "dagster/run_key": keys})
        )
    }
    return [
        _request(
            c["run_key"],
            source=started_by(events, c["run_key"], c["requested"]),
            dry_run=c["dry_run"],
            events=c["events"],
        )
        for c in claims
        if c["run_key"] not in launched
    ]


@dg.sensor(
    jobs=[registry_sync, registry_preview],
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    name=SENSOR_NAME,
    description="Starts registry_sync for Django's change webhooks and admins' sync requests "
    "(debounced: a burst of saves is one sync); a request for a dry run starts registry_preview. "
    "Events wait in the members database while Dagster is down.",
)
def registry_change_events(context: dg.SensorEvaluationContext, members_db: MembersDatabase):
    """Start a registry sync for Django's webhooks and admins' requests (debounced: a burst of
    saves is one sync). Events wait in the members database while Dagster is down."""
    events = ChangeEventStore(members_db.store())  # the store migrates or checks the schema
    now = datetime.now(timezone.utc)
    repairs = _unlaunched(context, events, now)
    if repairs:
        return dg.SensorResult(run_requests=repairs)
    pending = events.pending()
    waiting = launch_decision(pending, now, RegistrySettings.load().debounce_policy)
    if waiting:
        return dg.SkipReason(waiting)
    if context.instance.get_run_records(
        dg.RunsFilter(job_name=registry_sync.name, statuses=ACTIVE_RUN_STATUSES), limit=1
    ):
        # Events stay pending: one sync after this one covers all of them.
        return dg.SkipReason(f"{pending.count} events wait for the running registry sync")
    run_key = run_key_for(pending.max_id)
    claimed = events.claim(pending.max_id, run_key, now)
    if now.minute == 0:  # roughly hourly housekeeping, cheap and indexed
        events.prune(KEEP_CONSUMED, now)
    context.log.info(f"{claimed} registry events -> registry_sync ({run_key})")
    return dg.SensorResult(
        run_requests=[
            _request(
                run_key,
                source=started_by(events, run_key, pending.requested),
                dry_run=pending.dry_run,
                events=claimed,
            )
        ]
    )
