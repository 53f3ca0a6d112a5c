"""The code location loads the way `dagster dev` and deployments load it, in both environments.

What it defines (every asset, check, job, schedule and sensor) is kept by
``test_definitions_snapshot.py``, not by lists here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    # Production resources read secrets at launch (EnvVar), so loading needs none of them.
    environ = {k: v for k, v in os.environ.items() if not k.endswith("_PASSWORD")}
    environ.update(env)
    return subprocess.run(args, capture_output=True, text=True, env=environ, cwd=ROOT, timeout=300)


@pytest.mark.parametrize("env", ["local", "production"])
def test_dg_check_defs_passes_in_both_environments(env, tmp_path):
    dg_cli = os.path.join(os.path.dirname(sys.executable), "dg")
    proc = _run([dg_cli, "check", "defs"], MEMBERSHIP_ENV=env, DAGSTER_HOME=str(tmp_path))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "All definitions loaded successfully" in output
    # Dagster's deprecations fail the suite in-process; in the CLI they would only be printed.
    assert "is deprecated and will be removed" not in output and "is superseded" not in output, output


SCHEDULE_STATUSES = (
    "from membership_assets.definitions import defs; "
    "print(sorted({s.default_status.value for s in defs.schedules}))"
)


def test_one_variable_starts_every_schedule_in_production():
    started = _run([sys.executable, "-c", SCHEDULE_STATUSES], MEMBERSHIP_SCHEDULE_STATUS="running")
    assert started.stdout.strip() == "['RUNNING']", started.stderr[-2000:]
    invalid = _run([sys.executable, "-c", SCHEDULE_STATUSES], MEMBERSHIP_SCHEDULE_STATUS="yes")
    assert "MEMBERSHIP_SCHEDULE_STATUS must be 'running' or 'stopped'" in invalid.stderr


@pytest.mark.skipif(bool(os.getenv("MEMBERSHIP_SCHEDULE_STATUS")), reason="MEMBERSHIP_SCHEDULE_STATUS is set")
def test_schedules_are_stopped_by_default_and_all_described():
    from membership_assets.definitions import defs

    for schedule in defs.schedules:
        assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED, schedule.name
        assert schedule.description and len(schedule.description) > 20, schedule.name


def test_every_audit_asset_shows_its_warehouse_columns():
    from membership_assets.definitions import defs
    from membership_assets.warehouse.assets import GROUP
    from membership_assets.warehouse.schema import TABLES

    audit = [spec for spec in defs.resolve_all_asset_specs() if spec.group_name == GROUP]
    # The side-effect steps write their own audit tables, ahead of each request.
    written_by_side_effects = {
        "ab_tagging_deletions": "outdated_tagging_deletions",
        "ab_tag_repairs": "tag_repairs",
    }
    assert len(audit) == len(TABLES) - len(written_by_side_effects)
    specs = {spec.key.path[-1]: spec for spec in defs.resolve_all_asset_specs()}
    audit += [specs["tag_repairs"]]
    for spec in audit:
        table = TABLES[
            {v: k for k, v in written_by_side_effects.items()}.get(spec.key.path[-1], spec.key.path[-1])
        ]
        schema = spec.metadata["dagster/column_schema"]
        assert [(c.name, c.type) for c in schema.columns] == [(c.name, c.type) for c in table.columns]


def test_dagster_deprecations_and_supersessions_fail_the_suite():
    """pyproject's filterwarnings: what Dagster will remove must not pass silently."""
    from dagster_shared.utils.warnings import deprecation_warning, supersession_warning

    with pytest.raises(DeprecationWarning, match="will be removed in 2.0"):
        deprecation_warning("Function `old_api`", "2.0")
    with pytest.raises(dg.SupersessionWarning):
        supersession_warning("Function `older_api`")
