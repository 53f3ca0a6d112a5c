import dagster as dg

from . import assets, recovery
from .automation import (
    django_members_changed,
    registry_hourly,
    registry_preview,
    registry_rollback,
    registry_sync,
)
from .event_sensor import registry_change_events
from .refusal_alerts import webhook_refusals

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets, recovery]),
    jobs=[registry_sync, registry_preview, registry_rollback],
    schedules=[registry_hourly],
    sensors=[django_members_changed, registry_change_events, webhook_refusals],
)
