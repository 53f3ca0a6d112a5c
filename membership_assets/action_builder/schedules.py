"""When tag hygiene runs: a daily incremental pass and a monthly full scan."""

import dagster as dg

from ..config import default_schedule_status
from ..limits import max_runtime_tags
from ..notify.freshness import FRESHNESS_CHECKS
from ..run_tags import DRY_RUN_TAG
from .assets import GROUP
from .settings import ActionBuilderSettings

action_builder_tag_sync = dg.define_asset_job(
    "action_builder_tag_sync",
    selection=dg.AssetSelection.groups(GROUP).downstream() - FRESHNESS_CHECKS,
    description="Scan Action Builder, report membership-tag mismatches, repair and clean outdated tags, archive.",
    tags={"membership/pipeline": "action_builder", **max_runtime_tags("action_builder_tag_sync")},
)


def _run_request(mode: str) -> dg.RunRequest:
    """A scan in ``mode``; deletions and repairs live only when the deployment opts in
    explicitly, and their dry run shows in the runs list (the scan and report are real either way)."""
    opted_in = ActionBuilderSettings.load()
    live = opted_in.apply_deletions or opted_in.apply_repairs
    return dg.RunRequest(
        run_config={
            "ops": {
                "action_builder_campaign": {"config": {"mode": mode}},
                "outdated_tagging_deletions": {"config": {"dry_run": not opted_in.apply_deletions}},
                "planned_tag_repairs": {"config": {"dry_run": not opted_in.apply_repairs}},
            }
        },
        tags={"membership/mode": mode, **({} if live else {DRY_RUN_TAG: "true"})},
    )


@dg.schedule(
    job=action_builder_tag_sync,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    default_status=default_schedule_status(),
    description="Daily at 06:00 UTC: re-judge people modified since the last successful run.",
)
def action_builder_daily_incremental(context: dg.ScheduleEvaluationContext):
    """People modified since the last successful run."""
    return _run_request("incremental")


@dg.schedule(
    job=action_builder_tag_sync,
    cron_schedule="0 3 1 * *",
    execution_timezone="UTC",
    default_status=default_schedule_status(),
    description="Monthly at 03:00 UTC on the 1st: scan everyone in the campaign (full scan).",
)
def action_builder_monthly_full(context: dg.ScheduleEvaluationContext):
    """Everyone in the campaign, as the reference script did on the 1st of the month."""
    return _run_request("full")
