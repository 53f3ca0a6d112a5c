"""The code location loads the way `dagster dev` and deployments load it, in both environments."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("env", ["local", "production"])
def test_dagster_can_load_and_validate_the_code_location(env, tmp_path):
    # Production resources read secrets at launch (EnvVar), so loading needs none of them.
    environ = {k: v for k, v in os.environ.items() if not k.endswith("_PASSWORD")}
    environ.update(MEMBERSHIP_ENV=env, DAGSTER_HOME=str(tmp_path))
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    proc = subprocess.run(
        [dagster, "definitions", "validate", "-m", "membership_assets.definitions"],
        capture_output=True,
        text=True,
        env=environ,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_the_location_has_every_job_schedule_and_sensor():
    from membership_assets.definitions import defs

    for job in ("action_builder_tag_sync", "registry_sync", "registry_rollback"):
        assert defs.resolve_job_def(job)
    assert {s.name for s in defs.schedules} == {
        "action_builder_daily_incremental",
        "action_builder_monthly_full",
        "registry_hourly",
    }
    assert {s.name for s in defs.sensors} == {
        "django_members_changed",
        "registry_change_events",
        "email_admins_on_failure",
    }
