"""The registry sync's definitions: fetch, validate, delta and apply, the preview and rollback
jobs, the hourly schedule and change sensors, and the Django, members-database and policy resources."""

from typing import Any

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
from .settings import RegistrySettings

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets, recovery]),
    jobs=[registry_sync, registry_preview, registry_rollback],
    schedules=[registry_hourly],
    sensors=[django_members_changed, registry_change_events, webhook_refusals],
)


def resources(env: str | None = None) -> dict[str, Any]:
    return RegistrySettings.load(env).resources(env)
