"""The membership_assets code location: every domain's definitions plus this environment's resources."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from .action_builder.definitions import defs as action_builder_defs
from .environment import resources_for
from .notify.definitions import defs as notify_defs
from .warehouse.definitions import defs as warehouse_defs


def build_definitions(resources: Mapping[str, Any]) -> dg.Definitions:
    return dg.Definitions.merge(
        action_builder_defs,
        warehouse_defs,
        notify_defs,
        # One process per run: the scan shares one rate limiter, and DuckDB allows one writer.
        dg.Definitions(resources=dict(resources), executor=dg.in_process_executor),
    )


defs = build_definitions(resources_for())
