"""Tag hygiene's definitions: the scan, report, cleanup and repair assets, their job, schedules
and the Action Builder resource."""

from typing import Any

import dagster as dg

from . import assets, repair_assets
from .schedules import action_builder_daily_incremental, action_builder_monthly_full, action_builder_tag_sync
from .settings import ActionBuilderSettings

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets, repair_assets]),
    jobs=[action_builder_tag_sync],
    schedules=[action_builder_daily_incremental, action_builder_monthly_full],
)


def resources(env: str | None = None) -> dict[str, Any]:
    return ActionBuilderSettings.load(env).resources(env)
