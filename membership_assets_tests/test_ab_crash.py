"""A run killed mid-deletions leaves a true audit, and its re-execution settles it.

The job runs in a real subprocess on a persistent Dagster instance, is killed with SIGKILL while
DELETEs are in flight (as a dying run worker would be), and is re-executed from failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from membership_assets.simulators.action_builder import ActionBuilderSimulator
from membership_assets.simulators.action_builder_seed import SeedConfig, generate_campaign
from membership_assets.warehouse.resources import DuckDBWarehouse

from .ab_crash_job import CONFIG_ENV

ROOT = Path(__file__).resolve().parents[1]


def _launch(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    code = "from membership_assets_tests.ab_crash_job import main; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the kill takes every child with it
    )


def test_sigkill_during_live_deletions_leaves_an_audit_that_reexecution_settles(tmp_path, monkeypatch):
    campaign = generate_campaign(SeedConfig(people=300, seed=11))
    planned = {tid for t in campaign.expected_mismatches().values() for tid in t.outdated_tagging_ids}
    assert len(planned) > 30
    home = tmp_path / "dagster_home"
    home.mkdir()
    state = tmp_path / "state"
    with ActionBuilderSimulator(campaign, rate_limit=None) as sim:
        # Slow DELETEs, so the kill lands while some are answered and others are in flight.
        sim.faults.add(path_pattern="/taggings/", method="DELETE", delay=0.15, times=None)
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            CONFIG_ENV: json.dumps(
                {
                    "credentials": sim.credentials_json,
                    "base_url": sim.base_url,
                    "campaign_id": campaign.campaign_id,
                    "state_dir": str(state),
                }
            ),
        }
        before = set(sim.data.taggings)
        proc = _launch(["run"], env)
        deadline = time.monotonic() + 180
        while sim.requests.by_route.get("delete_tagging", 0) < 30:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the run never reached its deletions"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)  # DELETEs the server had already accepted finish
        gone_after_crash = before - set(sim.data.taggings)
        assert 30 <= len(gone_after_crash) < len(planned)

        # What the audit says right after the crash: every tagging that is gone was recorded as
        # deleted or as "sending" (DELETE may have been sent); nothing gone is "pending".
        audit = DuckDBWarehouse(path=str(state / "warehouse.duckdb")).query(
            "select tagging_id, action, attempt_run_id from {dataset}.ab_tagging_deletions"
        )
        actions = dict(zip(audit["tagging_id"], audit["action"], strict=True))
        assert set(actions) == planned
        assert all(actions[t] in ("deleted", "sending") for t in gone_after_crash)
        assert all(
            actions[t] == "pending"
            for t in planned - gone_after_crash - {t for t, a in actions.items() if a == "sending"}
        )

        # The daemon's run monitoring marks the dead run failed; then re-execute from failure.
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        instance = dg.DagsterInstance.get()
        [first] = instance.get_runs()
        assert first.status == dg.DagsterRunStatus.STARTED
        instance.report_run_failed(first)
        proc = _launch(["reexecute", first.run_id], env)
        out = proc.communicate(timeout=240)[0].decode()
        assert "SUCCESS True" in out, out[-3000:]
        assert before - set(sim.data.taggings) == planned

        audit = DuckDBWarehouse(path=str(state / "warehouse.duckdb")).query(
            "select tagging_id, action, attempt_run_id, run_id from {dataset}.ab_tagging_deletions"
        )
        assert sorted(audit["tagging_id"]) == sorted(planned)
        assert set(audit["action"]) == {"deleted"}, audit["action"].value_counts().to_dict()
        assert set(audit["run_id"]) == {first.run_id}
        by_attempt = dict(zip(audit["tagging_id"], audit["attempt_run_id"], strict=True))
        # The crashed attempt's deletions are its own, not the re-execution's "already gone".
        assert all(by_attempt[t] == first.run_id for t in gone_after_crash)
        assert all(by_attempt[t] != first.run_id for t in planned - gone_after_crash)
        instance.dispose()
