"""The audit history's definitions: every run's extracts, deltas and logs as warehouse tables,
and the warehouse resource (BigQuery in production, DuckDB locally)."""

from typing import Any

import dagster as dg

from .assets import action_builder_history, registry_history
from .settings import WarehouseSettings

defs = dg.Definitions(assets=[*action_builder_history, *registry_history])


def resources(env: str | None = None) -> dict[str, Any]:
    return WarehouseSettings.load(env).resources(env)
