"""The ``preflight`` job: the same checks as ``python -m membership_assets preflight``, from the UI.

Its result is the ``preflight`` asset's metadata (the latest one is what the UI shows) and the
state directory's preflight/latest.json; any ✗ fails the run after recording it.
"""

from __future__ import annotations

import dagster as dg

from ..limits import max_runtime_tags
from ..settings import state_dir
from . import run_preflight
from .core import as_json, failed, render_table, save_latest
from .settings import preflight_settings

PREFLIGHT_ASSET = dg.AssetKey("preflight")
RESOURCE_KEYS = {
    "action_builder",
    "django",
    "registry_policy",
    "email",
    "warehouse",
    "members_db",
    "io_manager",
}


def materialization(result: dict, table: str) -> dg.AssetMaterialization:
    """The result as asset metadata: counts, the table, and each ✗ with its fix."""
    return dg.AssetMaterialization(
        asset_key=PREFLIGHT_ASSET,
        description="Latest preflight: every assumption about the real services, checked read-only.",
        metadata={
            "ok": result["ok"],
            "failed": result["failed"],
            "checked_at": result["checked_at"],
            "result": dg.MetadataValue.md("```\n" + table + "\n```"),
            "checks": dg.MetadataValue.json(result["checks"]),
        },
    )


@dg.op(required_resource_keys=RESOURCE_KEYS, description="Run every preflight check (read-only).")
def preflight_checks(context):
    resources = {key: getattr(context.resources, key) for key in RESOURCE_KEYS}
    checks = run_preflight(resources, preflight_settings(), instance=context.instance)
    result, table = as_json(checks), render_table(checks)
    context.log.info(table)
    save_latest(state_dir(), result)
    yield materialization(result, table)
    bad = failed(checks)
    if bad:
        raise dg.Failure(
            description=f"{len(bad)} preflight check(s) failed: "
            + "; ".join(f"{c.system} {c.name}" for c in bad),
            metadata={"result": dg.MetadataValue.md("```\n" + table + "\n```")},
        )
    yield dg.Output(None)


@dg.job(
    name="preflight",
    tags=max_runtime_tags("preflight"),
    description="Check every service's configuration read-only: no email, no writes.",
)
def preflight_job():
    preflight_checks()


defs = dg.Definitions(jobs=[preflight_job])
