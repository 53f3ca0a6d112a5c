"""Alert when a sync has silently stopped: failed runs alert on their own, missing runs do not.

Two blocking asset checks, evaluated every 30 minutes by their own job: a failing check fails
that run, and the failure sensor emails the admins what is stale and since when.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from ..config import default_schedule_status
from ..limits import FULL_SCAN_MAX_AGE, MEMBER_ELIGIBILITY_MAX_AGE, max_runtime_tags

MEMBER_ELIGIBILITY = dg.AssetKey("member_eligibility")
AB_SCAN = dg.AssetKey("ab_scan")


def staleness(what: str, last: datetime | None, now: datetime, max_age: timedelta) -> str | None:
    """Why ``what`` is stale (None when fresh): none on record, or the last longer than ``max_age`` ago."""
    if last is None:
        return f"{what}: none in the last {_hours(max_age)}"
    age = now - last
    if age > max_age:
        return f"{what}: last at {last:%Y-%m-%d %H:%M} UTC, {_hours(age)} ago (limit {_hours(max_age)})"
    return None


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} hours" if hours < 48 else f"{hours / 24:.1f} days"


FRESHNESS_JOB = "freshness_checks"


def _result(context: dg.AssetCheckExecutionContext, problem: str | None, last: datetime | None):
    # In its own job a stale result fails the run, which emails the admins. A run that
    # materializes the asset from the asset graph evaluates the check too: there it warns, so a
    # late monthly scan never blocks today's report and cleanup.
    own_job = context.run.job_name == FRESHNESS_JOB
    return dg.AssetCheckResult(
        passed=problem is None,
        severity=dg.AssetCheckSeverity.ERROR if own_job else dg.AssetCheckSeverity.WARN,
        metadata={
            "last": last.isoformat() if last else "never",
            "problem": problem or "none",
        },
    )


def last_full_scan(instance: dg.DagsterInstance, now: datetime) -> datetime | None:
    """When the newest ab_scan materialization of mode 'full' within the window happened."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=AB_SCAN, after_timestamp=(now - FULL_SCAN_MAX_AGE).timestamp()),
        limit=1000,  # a daily incremental scan per day: ~35 records in the window
        ascending=False,
    ).records
    for record in records:
        mode = record.asset_materialization.metadata.get("mode")
        if mode is not None and mode.value == "full":
            return datetime.fromtimestamp(record.timestamp, tz=UTC)
    return None


@dg.asset_check(
    asset=MEMBER_ELIGIBILITY,
    name="updated_within_2_hours",
    blocking=True,
    description="A registry sync updated member_eligibility within the last 2 hours.",
)
def member_eligibility_fresh(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    event = context.instance.get_latest_materialization_event(MEMBER_ELIGIBILITY)
    last = datetime.fromtimestamp(event.timestamp, tz=UTC) if event else None
    now = datetime.now(UTC)
    return _result(
        context, staleness("member_eligibility update", last, now, MEMBER_ELIGIBILITY_MAX_AGE), last
    )


@dg.asset_check(
    asset=AB_SCAN,
    name="full_scan_within_35_days",
    blocking=True,
    description="A full Action Builder scan (everyone, not only recent changes) ran within 35 days.",
)
def ab_full_scan_recent(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    now = datetime.now(UTC)
    last = last_full_scan(context.instance, now)
    return _result(context, staleness("full Action Builder scan", last, now, FULL_SCAN_MAX_AGE), last)


# Only their own job runs them: inside a sync's run they would judge the run that is under way.
FRESHNESS_CHECKS = dg.AssetSelection.checks(member_eligibility_fresh, ab_full_scan_recent)

freshness_checks = dg.define_asset_job(
    FRESHNESS_JOB,
    selection=FRESHNESS_CHECKS,
    description="Fails (and so emails the admins) when a sync has silently stopped running.",
    tags=max_runtime_tags(FRESHNESS_JOB),
)

freshness_every_30_minutes = dg.ScheduleDefinition(
    name="freshness_every_30_minutes",
    job=freshness_checks,
    cron_schedule="*/30 * * * *",
    execution_timezone="UTC",
    default_status=default_schedule_status(),
    description="Every 30 minutes: is member_eligibility under 2 hours old, the last full scan under 35 days?",
)
