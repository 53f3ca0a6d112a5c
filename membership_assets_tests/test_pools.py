"""Side-effect steps are limited by Dagster concurrency pools, whatever launched their run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import dagster as dg
import yaml

from membership_assets import pools

ROOT = Path(__file__).resolve().parents[1]

# Every step that acts on the world, and the pool it must hold while it does.
SIDE_EFFECT_STEPS = {
    "action_builder_campaign": pools.ACTION_BUILDER,  # the scan: one rate-limit budget
    "mismatch_report_email": pools.ACTION_BUILDER,
    "outdated_tagging_deletions": pools.ACTION_BUILDER,
    "tag_repairs": pools.ACTION_BUILDER,
    "membership_sync": pools.MEMBERS_DB,
    "rollback_membership_sync": pools.MEMBERS_DB,
}


def test_every_side_effect_step_holds_a_pool_limited_to_one(defs):
    found = {}
    for job in defs.resolve_all_job_defs():
        for node in job.graph.node_defs:
            if node.name in SIDE_EFFECT_STEPS:
                found[node.name] = node.pool
            elif node.tags.get("membership/side_effect"):
                found[node.name] = node.pool  # a new side effect must be listed above
    assert found == SIDE_EFFECT_STEPS
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())["concurrency"]["pools"]
    assert config["default_limit"] == 1 and config.get("granularity", "op") == "op"


def test_a_run_without_any_tags_waits_for_the_pool(registry_defs, tmp_path):
    """Like "Materialize all" from the asset graph: no membership/pipeline tag, still limited."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    overrides = {"concurrency": {"pools": {"default_limit": 1}}}
    with dg.instance_for_test(temp_dir=str(home), overrides=overrides) as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots(pools.MEMBERS_DB, 1)
        # Another run is applying a sync right now.
        assert storage.claim_concurrency_slot(pools.MEMBERS_DB, "other-run", "membership_sync").is_claimed
        released = {}

        def release():
            released["at"] = time.time()
            storage.free_concurrency_slots_for_run("other-run")

        timer = threading.Timer(4.0, release)
        timer.start()
        result = registry_defs.resolve_job_def("registry_sync").execute_in_process(instance=instance)
        timer.join()
        assert result.success
        [start] = [
            e
            for e in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_START)
            if e.step_key == "membership_sync"
        ]
        assert start.timestamp >= released["at"]  # the sync did not overlap the other one
