"""What the code location defines, as one reviewed snapshot instead of hand-kept lists.

A change to an asset, check, job, schedule, sensor, pool, tag or resource key shows up as a diff
of ``snapshots/definitions.json``; after reviewing it, regenerate with
``python -m membership_assets_tests.test_definitions_snapshot``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import dagster as dg
import pytest

SNAPSHOT = Path(__file__).resolve().parent / "snapshots" / "definitions.json"
# Deployment switches that change what loads: the snapshot is of the defaults.
SWITCHES = ("MEMBERSHIP_ENV", "MEMBERSHIP_SCHEDULE_STATUS", "REGISTRY_SYNC_CRON")


def describe(defs: dg.Definitions) -> dict:
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    assets = {}
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "pools": sorted(node.pools or ()),
            "kinds": sorted(node.kinds),
            "tags": dict(sorted(node.tags.items())),
            "checks": sorted(c.name for c in node.check_keys),
        }
    jobs = {}
    for job in sorted(repo.get_all_jobs(), key=lambda j: j.name):
        if job.name.startswith("__"):  # Dagster's implicit asset job
            continue
        selected = job.asset_layer.executable_asset_keys if job.is_asset_job else set()
        jobs[job.name] = {
            "tags": dict(sorted((k, str(v)) for k, v in job.tags.items())),
            "assets": sorted(k.to_user_string() for k in selected),
            "ops": sorted(job.graph.node_dict) if not job.is_asset_job else [],
        }
    schedules = {
        s.name: {
            "job": s.job_name,
            "cron": s.cron_schedule,
            "timezone": s.execution_timezone,
            "default_status": s.default_status.value,
        }
        for s in sorted(repo.schedule_defs, key=lambda s: s.name)
    }
    sensors = {
        s.name: {
            "type": type(s).__name__,
            "jobs": sorted(j.name for j in s.jobs) if s.has_jobs else [],
            "minimum_interval_seconds": s.minimum_interval_seconds,
            "default_status": s.default_status.value,
        }
        for s in sorted(repo.sensor_defs, key=lambda s: s.name)
    }
    return {
        "assets": assets,
        "asset_checks": sorted(f"{c.asset_key.to_user_string()}:{c.name}" for c in graph.asset_check_keys),
        "jobs": jobs,
        "schedules": schedules,
        "sensors": sensors,
        "resources": sorted(repo.get_top_level_resources()),
    }


def current(monkeypatch: pytest.MonkeyPatch | None = None) -> dict:
    from membership_assets.definitions import build_definitions, resources_for

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return describe(build_definitions(resources_for("local")))


def test_the_definitions_match_the_reviewed_snapshot(monkeypatch, tmp_path):
    for name in SWITCHES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEMBERSHIP_STATE_DIR", str(tmp_path))
    now = current()
    assert now == json.loads(SNAPSHOT.read_text()), (
        "the definitions changed: review, then run python -m membership_assets_tests.test_definitions_snapshot"
    )


def test_every_domain_brings_its_own_resources():
    from membership_assets import definitions

    owned = [set(domain.resources("local")) for domain in definitions.DOMAINS]
    assert all(owned) and sum(len(keys) for keys in owned) == len(set().union(*owned)), owned


if __name__ == "__main__":
    import os

    for name in SWITCHES:
        os.environ.pop(name, None)
    SNAPSHOT.write_text(json.dumps(current(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")
