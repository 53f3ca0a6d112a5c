"""The tag-hygiene job run in its own process on a persistent Dagster instance (crash tests).

``python -c "from membership_assets_tests.ab_crash_job import main; main()" run|reexecute RUN_ID``
with ``DAGSTER_HOME`` set and ``AB_CRASH_TEST_CONFIG`` naming the simulator and state paths.
"""

from __future__ import annotations

import json
import os
import sys

import dagster as dg

JOB = "action_builder_tag_sync"
CONFIG_ENV = "AB_CRASH_TEST_CONFIG"


def run_config() -> dict:
    ops = {
        "action_builder_campaign": {"config": {"mode": "full"}},
        "outdated_tagging_deletions": {"config": {"dry_run": False}},
    }
    if json.loads(os.environ.get(CONFIG_ENV, "{}")).get("repairs"):  # live tag repairs too
        ops["planned_tag_repairs"] = {"config": {"dry_run": False, "max_repairs": 10_000}}
    return {"ops": ops}


def define_job() -> dg.JobDefinition:
    from membership_assets.action_builder.resources import ActionBuilderResource
    from membership_assets.definitions import build_definitions
    from membership_assets.notify.resources import FileOutboxEmail, Recipients
    from membership_assets.registry.resources import (
        DjangoRegistryResource,
        MembersDatabase,
        RegistrySyncPolicy,
    )
    from membership_assets.warehouse.resources import DuckDBWarehouse

    cfg = json.loads(os.environ[CONFIG_ENV])
    state = cfg["state_dir"]
    resources = {
        "action_builder": ActionBuilderResource(
            credentials=cfg["credentials"],
            base_url=cfg["base_url"],
            campaign_id=cfg["campaign_id"],
            rate_limit=2000.0,
            checkpoint_path=f"{state}/checkpoints.sqlite",
            reports_dir=f"{state}/reports",
            max_attempts=3,
        ),
        "email": FileOutboxEmail(directory=f"{state}/outbox"),
        "recipients": Recipients(tag_report="organizers@example.org", admins="admins@example.org"),
        "warehouse": DuckDBWarehouse(path=f"{state}/warehouse.duckdb"),
        "django": DjangoRegistryResource(base_url="http://127.0.0.1:9", api_key="unused"),
        "members_db": MembersDatabase(url=f"sqlite:///{state}/members.sqlite"),
        "registry_policy": RegistrySyncPolicy(),
    }
    return build_definitions(resources).resolve_job_def(JOB)


def main() -> None:
    from membership_assets_tests import ab_crash_job

    instance = dg.DagsterInstance.get()
    job = dg.reconstructable(ab_crash_job.define_job)
    options = None
    if sys.argv[1] == "reexecute":
        options = dg.ReexecutionOptions.from_failure(sys.argv[2], instance)
    with dg.execute_job(job, instance=instance, run_config=run_config(), reexecution_options=options) as r:
        print(f"RUN_ID {r.run_id} SUCCESS {r.success}", flush=True)
