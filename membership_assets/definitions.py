"""The membership_assets code location: every domain's definitions plus this environment's resources."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

# Modules, not their `defs`: Dagster allows one Definitions object at module scope here.
from .action_builder import definitions as action_builder
from .environment import resources_for
from .notify import definitions as notify
from .preflight import job as preflight
from .registry import definitions as registry
from .scratch import RunScratchIOManager
from .warehouse import definitions as warehouse


def build_definitions(resources: Mapping[str, Any]) -> dg.Definitions:
    return dg.Definitions.merge(
        action_builder.defs,
        registry.defs,
        warehouse.defs,
        notify.defs,
        preflight.defs,
        # One process per run: the scan shares one rate limiter, and DuckDB allows one writer.
        # Intermediates scoped to the run and encrypted, unless the environment gives its own.
        dg.Definitions(
            resources={"io_manager": RunScratchIOManager(), **resources}, executor=dg.in_process_executor
        ),
    )


defs = build_definitions(resources_for())
