"""``python -m membership_assets preflight [--json] [--only SYSTEM ...]``: a table for people,
JSON for machines, exit code 1 on any ✗; the result is kept in the state directory and, where a
Dagster instance is configured (DAGSTER_HOME), as the ``preflight`` asset's latest metadata."""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import Any

import dagster as dg

from ..registry.settings import RegistrySettings
from ..settings import state_dir
from . import SYSTEMS, run_preflight
from .core import Check, as_json, exit_code, fail, render_table, safe_error, save_latest
from .settings import preflight_settings

# The resources each system's checks use.
NEEDS = {
    "action_builder": ("action_builder",),
    "registry": ("django", "registry_policy"),
    "sendgrid": ("email",),
    "bigquery": ("warehouse",),
    "members_db": ("members_db",),
    "webhook": (),
    "scratch": ("io_manager",),
}
LABELS = {
    "action_builder": "Action Builder",
    "registry": "Registry",
    "sendgrid": "SendGrid",
    "bigquery": "BigQuery",
    "members_db": "Members DB",
    "webhook": "Webhook",
    "scratch": "Scratch",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--only", nargs="+", choices=SYSTEMS, help="check only these systems")


def resolve(resources: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Resources with their environment variables read, as a run would (raises on a missing one)."""
    with dg.build_resources({k: resources[k] for k in keys}) as built:
        return {k: getattr(built, k) for k in keys}


def configuration_failure(system: str, exc: Exception, also_unset: tuple[str, ...] = ()) -> Check:
    """A resource that could not be built: name the unset variables when that is why."""
    unset = sorted(set(re.findall(r"'env': '([A-Za-z0-9_]+)'", str(exc))) | set(also_unset))
    if unset:
        return fail(system, "configuration", f"not set: {', '.join(unset)}", f"set {', '.join(unset)}")
    return fail(
        system, "configuration", safe_error(exc), "check this system's variables (docs/going-live.md)"
    )


def _unset_optional_secrets(system: str) -> tuple[str, ...]:
    """Variables a resource reads only when set, but of which the system needs one."""
    if system != "registry":
        return ()
    registry = RegistrySettings.load_checked()[0]
    if not (registry.django_password or registry.django_api_key):
        return (RegistrySettings.variable("django_api_key"),)  # or DJANGO_API_PASSWORD: either is the token
    return ()


def main(args: argparse.Namespace, resources: dict[str, Any]) -> int:
    """Check each system with this environment's ``resources`` (the code location's own)."""
    settings = preflight_settings()
    instance = dg.DagsterInstance.get() if os.getenv("DAGSTER_HOME") else None
    checks: list[Check] = []
    for system in args.only or SYSTEMS:
        try:
            resolved = resolve(resources, NEEDS[system])
        except Exception as exc:  # noqa: BLE001 - a missing variable is the finding
            checks.append(configuration_failure(LABELS[system], exc, _unset_optional_secrets(system)))
            continue
        checks += run_preflight(resolved, settings, instance=instance, systems=[system])
    result = as_json(checks)
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else render_table(checks))
    save_latest(state_dir(), result)
    if instance is not None:
        from .job import materialization

        instance.report_runless_asset_event(materialization(result, render_table(checks)))
    return exit_code(checks)
