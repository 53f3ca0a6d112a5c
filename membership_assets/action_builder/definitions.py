import dagster as dg

from . import assets, repair_assets
from .schedules import action_builder_daily_incremental, action_builder_monthly_full, action_builder_tag_sync

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets, repair_assets]),
    jobs=[action_builder_tag_sync],
    schedules=[action_builder_daily_incremental, action_builder_monthly_full],
)
