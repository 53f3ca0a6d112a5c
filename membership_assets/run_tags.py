"""Run tags that say what a run is: for the runs list, the admin alert and the sync log."""

from __future__ import annotations

import dagster as dg

# Every dry run carries it (registry and rollback previews, a cleanup or report that writes or
# sends nothing), so the runs list tells it from a real run: filter by this tag.
DRY_RUN_TAG = "membership/dry_run"
# "false": a failure of this run emails no admin (dry runs); a person may launch one with "true".
ALERT_TAG = "membership/alert_admins"

DRY_RUN_TAGS = {DRY_RUN_TAG: "true", ALERT_TAG: "false"}
# Who started a sync, as membership_sync_log.source records it, when the launcher knows better
# than Dagster's own tags (the change-events sensor, the registry-change sensor).
SOURCE_TAG = "membership/source"


def is_tagged_dry_run(run: dg.DagsterRun) -> bool:
    """Whether ``run`` is a dry run: the tag is the one place that says so (a step's config is
    not, since another step cannot read it)."""
    return run.tags.get(DRY_RUN_TAG) == "true"


def run_source(run: dg.DagsterRun) -> str:
    """What started ``run``: scheduled | sensor | manual, unless an explicit source tag says."""
    tags = run.tags
    if tags.get(SOURCE_TAG):
        return tags[SOURCE_TAG]
    if "dagster/schedule_name" in tags:
        return "scheduled"
    if "dagster/sensor_name" in tags:
        return "sensor"
    return "manual"


def mark_dry_run(context: dg.OpExecutionContext | dg.AssetExecutionContext, *, alert: bool = True) -> None:
    """Tag the running run as a dry run, when only its config (read at run time) makes it one.

    ``alert=False`` also silences the admin alert unless the launch asked for it.
    """
    tags = {DRY_RUN_TAG: "true"}
    if not alert and ALERT_TAG not in context.run.tags:
        tags[ALERT_TAG] = "false"
    if any(context.run.tags.get(k) != v for k, v in tags.items()):
        context.instance.add_run_tags(context.run.run_id, tags)


def alerts_admins(run: dg.DagsterRun) -> bool:
    """Whether a failure of ``run`` emails the admins: always, unless it is a silenced dry run."""
    return run.tags.get(ALERT_TAG) != "false"
