"""Whole-pipeline flows for the audit-history tests.

The jobs are built from environment variables (set by the ``world`` fixture) so Dagster can
reconstruct them by module path, which ``execute_job`` needs for real re-executions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg

from membership_assets.definitions import build_definitions

ENV_PREFIX = "MA_TEST_"  # the world fixture exports every setting under this prefix


def world_env(world: dict[str, str]) -> dict[str, str]:
    return {ENV_PREFIX + k.upper(): v for k, v in world.items()}


def warehouse_env(warehouse) -> dict[str, str]:
    if warehouse.kind == "duckdb":
        return {"warehouse_path": warehouse.path, "warehouse_dataset": warehouse.dataset}
    return {"warehouse_endpoint": warehouse.api_endpoint, "warehouse_dataset": warehouse.dataset}


def _env(name: str) -> dg.EnvVar:
    return dg.EnvVar(ENV_PREFIX + name.upper())


def resources_from_env(warehouse_kind: str) -> dict[str, Any]:
    """Resources whose settings are read at each launch (Dagster caches reconstructed code)."""
    from dagster_gcp import BigQueryResource

    from membership_assets.action_builder.resources import ActionBuilderResource
    from membership_assets.notify.resources import FileOutboxEmail, Recipients
    from membership_assets.registry.resources import (
        DjangoRegistryResource,
        MembersDatabase,
        RegistrySyncPolicy,
    )
    from membership_assets.warehouse.resources import BigQueryWarehouse, DuckDBWarehouse

    if warehouse_kind == "duckdb":
        warehouse = DuckDBWarehouse(path=_env("warehouse_path"), dataset=_env("warehouse_dataset"))
    else:
        warehouse = BigQueryWarehouse(
            bigquery=BigQueryResource(project="membership-test"),
            dataset=_env("warehouse_dataset"),
            api_endpoint=_env("warehouse_endpoint"),
        )
    return {
        "action_builder": ActionBuilderResource(
            credentials=_env("ab_credentials"),
            base_url=_env("ab_url"),
            campaign_id=_env("campaign_id"),
            rate_limit=2000,
            checkpoint_path=_env("checkpoint_path"),
            reports_dir=_env("reports_dir"),
        ),
        "django": DjangoRegistryResource(
            base_url=_env("django_url"), api_key=_env("django_token"), rate_limit=1000
        ),
        "members_db": MembersDatabase(url=_env("members_db_url")),
        "registry_policy": RegistrySyncPolicy(),
        "email": FileOutboxEmail(directory=_env("outbox")),
        "recipients": Recipients(tag_report="organizers@example.org", admins="admins@example.org"),
        "warehouse": warehouse,
    }


def _job(kind: str, name: str):
    return build_definitions(resources_from_env(kind)).resolve_job_def(name)


# Module-level targets, so Dagster can reconstruct them by path for real re-executions.
def registry_sync_duckdb():
    return _job("duckdb", "registry_sync")


def registry_sync_bigquery():
    return _job("bigquery", "registry_sync")


def tag_sync_duckdb():
    return _job("duckdb", "action_builder_tag_sync")


def tag_sync_bigquery():
    return _job("bigquery", "action_builder_tag_sync")


TARGETS = {
    ("duckdb", "registry_sync"): registry_sync_duckdb,
    ("bigquery", "registry_sync"): registry_sync_bigquery,
    ("duckdb", "action_builder_tag_sync"): tag_sync_duckdb,
    ("bigquery", "action_builder_tag_sync"): tag_sync_bigquery,
}


def tag_run_config(dry_run: bool) -> dict:
    return {
        "ops": {
            "action_builder_campaign": {"config": {"mode": "full"}},
            "outdated_tagging_deletions": {"config": {"dry_run": dry_run}},
        }
    }


@dataclass
class DemoRuns:
    """What two demo runs did upstream, for deriving the rows analysts should get back."""

    churn: dict[str, list[str]]
    active_before_churn: set[str]
    registry_runs: list[str]
    tag_runs: list[str]


def two_demo_runs(world, instance) -> DemoRuns:
    """Like running the demo twice: sync + tag hygiene, a month of churn, sync + live cleanup."""
    defs = build_definitions(resources_from_env(world.warehouse.kind))
    registry_job = defs.resolve_job_def("registry_sync")
    tag_job = defs.resolve_job_def("action_builder_tag_sync")
    first = registry_job.execute_in_process(instance=instance)
    tags_first = tag_job.execute_in_process(run_config=tag_run_config(dry_run=True), instance=instance)
    valid = set(world.django.data.truth.valid_kennitalas)
    active = {
        str(m["kennitala"]).replace("-", "")
        for m in world.django.data.members
        if m["status"] == "active" and str(m["kennitala"]).replace("-", "") in valid
    }
    churn = world.django.churn(step=1)
    second = registry_job.execute_in_process(instance=instance)
    tags_second = tag_job.execute_in_process(run_config=tag_run_config(dry_run=False), instance=instance)
    assert all(r.success for r in (first, tags_first, second, tags_second))
    return DemoRuns(
        churn=churn,
        active_before_churn=active,
        registry_runs=[first.run_id, second.run_id],
        tag_runs=[tags_first.run_id, tags_second.run_id],
    )


def table_counts(warehouse) -> dict[str, int]:
    from membership_assets.warehouse.schema import TABLES

    return {
        name: int(warehouse.query(f"SELECT COUNT(*) AS n FROM {{dataset}}.{name}")["n"][0]) for name in TABLES
    }


def reexecute(job_fn, instance, parent_run_id: str, run_config: dict | None = None):
    """A real Dagster re-execution of every step of ``parent_run_id`` (new run id, same root)."""
    with dg.execute_job(
        dg.reconstructable(job_fn),
        instance=instance,
        run_config=run_config,
        reexecution_options=dg.ReexecutionOptions(parent_run_id=parent_run_id),
    ) as result:
        assert result.success
        return result.run_id, result.dagster_run.root_run_id
