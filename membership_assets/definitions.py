"""The membership_assets code location: each domain's definitions and resources, merged."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

# Modules, not their `defs`: Dagster allows one Definitions object at module scope here.
from .action_builder import definitions as action_builder
from .config import ConfigError
from .notify import definitions as notify
from .preflight import job as preflight
from .registry import definitions as registry
from .scratch import RunScratchIOManager, ScratchSettings
from .warehouse import definitions as warehouse

DOMAINS = (action_builder, registry, warehouse, notify)


def resources_for(env: str | None = None) -> dict[str, Any]:
    """Every resource of this environment (MEMBERSHIP_ENV): each domain builds its own."""
    merged: dict[str, Any] = {}
    problems: list[str] = []
    for domain in DOMAINS:
        try:
            merged.update(domain.resources(env))
        except ConfigError as exc:  # every domain's problems in one message, not the first only
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    # Scratch in Cloud Storage uses the warehouse's service account (or ADC).
    credentials = getattr(merged["warehouse"], "credentials_json", "")
    return {**merged, "io_manager": ScratchSettings.load(env).io_manager(env, credentials)}


def build_definitions(resources: Mapping[str, Any]) -> dg.Definitions:
    return dg.Definitions.merge(
        *(domain.defs for domain in DOMAINS),
        preflight.defs,
        # One process per run: the scan shares one rate limiter, and DuckDB allows one writer.
        # Intermediates scoped to the run and encrypted, unless the resources bring their own.
        dg.Definitions(
            resources={"io_manager": RunScratchIOManager(), **resources}, executor=dg.in_process_executor
        ),
    )


defs = build_definitions(resources_for())
