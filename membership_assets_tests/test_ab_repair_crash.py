"""A run killed mid-repair leaves a true audit, and its re-execution settles it without sending
what already went through.

The job runs in a real subprocess on a persistent Dagster instance, is killed with SIGKILL while
signup-helper POSTs are in flight, and is re-executed from failure.
"""

from __future__ import annotations

import json
import os
import signal
import time

import dagster as dg

from membership_assets.simulators.action_builder import ActionBuilderSimulator
from membership_assets.simulators.action_builder_seed import SeedConfig, generate_campaign
from membership_assets.warehouse.resources import DuckDBWarehouse

from .ab_crash_job import CONFIG_ENV
from .test_ab_crash import _launch
from .test_ab_repair import DOCUMENTED_ROUTES, assert_campaign_matches_ground_truth, values


def _audit(state):
    return DuckDBWarehouse(path=str(state / "warehouse.duckdb")).query(
        "select person_id, seq, step, field, value, tagging_id, action, attempt_run_id from {dataset}.ab_tag_repairs"
    )


def _done(sim, rows) -> bool:
    """Whether Action Builder already shows any of this person's repair (an add or a removal)."""
    have = values(sim, rows["person_id"].iloc[0])
    added = any(r.value in have[r.field] for r in rows[rows["step"] == "add"].itertuples())
    return added or any(t not in sim.data.taggings for t in rows["tagging_id"].dropna())


def test_sigkill_during_live_repairs_leaves_an_audit_that_reexecution_settles(tmp_path, monkeypatch):
    campaign = generate_campaign(SeedConfig(people=300, seed=11))
    truth = campaign.expected_mismatches()
    home = tmp_path / "dagster_home"
    home.mkdir()
    state = tmp_path / "state"
    with ActionBuilderSimulator(campaign, rate_limit=None) as sim:
        before = {pid: values(sim, pid) for pid in sim.data.person_ids()}
        # Slow signup-helper POSTs, so the kill lands while some are answered and others in flight.
        sim.faults.add(path_pattern="/people$", method="POST", delay=0.15, times=None)
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            CONFIG_ENV: json.dumps(
                {
                    "credentials": sim.credentials_json,
                    "base_url": sim.base_url,
                    "campaign_id": campaign.campaign_id,
                    "state_dir": str(state),
                    "repairs": True,
                }
            ),
        }
        proc = _launch(["run"], env)
        deadline = time.monotonic() + 180
        while sim.requests.by_route.get("person_signup", 0) < 12:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the run never reached its repairs"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)  # requests the server had already accepted finish

        # Right after the crash: everyone changed in Action Builder is recorded as done or as
        # "sending" (may have been sent); nobody changed is still only "pending".
        audit = _audit(state)
        planned = audit[audit["step"].isin(["add", "remove"])]
        touched = {p for p, rows in planned.groupby("person_id") if _done(sim, rows)}
        assert touched and touched < set(planned["person_id"])
        for pid in touched:
            assert set(planned.loc[planned["person_id"] == pid, "action"]) <= {"added", "removed", "sending"}
        unsent = set(planned.loc[planned["action"] == "pending", "person_id"])
        assert not unsent & touched
        # Re-execution sends a POST only for people whose tags are not on them yet.
        missing_adds = {
            p for p, rows in planned.groupby("person_id") if (rows["step"] == "add").any()
        } - touched

        monkeypatch.setenv("DAGSTER_HOME", str(home))
        instance = dg.DagsterInstance.get()
        [first] = instance.get_runs()
        instance.report_run_failed(first)
        sim.requests.reset()
        proc = _launch(["reexecute", first.run_id], env)
        out = proc.communicate(timeout=240)[0].decode()
        assert "SUCCESS True" in out, out[-3000:]
        assert set(sim.requests.by_route) <= DOCUMENTED_ROUTES
        assert sim.requests.by_route.get("person_signup", 0) == len(missing_adds)
        assert_campaign_matches_ground_truth(sim, truth, before)

        audit = _audit(state)
        steps = audit[audit["step"].isin(["add", "remove"])]
        assert set(steps["action"]) <= {"added", "removed"}, steps["action"].value_counts().to_dict()
        assert set(audit.loc[audit["step"] == "verify", "action"]) == {"verified"}
        # What the killed attempt did stays its own, not the re-execution's "already present".
        adds = steps[steps["step"] == "add"]
        assert set(adds.loc[adds["person_id"].isin(touched), "attempt_run_id"]) == {first.run_id}
        assert first.run_id not in set(adds.loc[adds["person_id"].isin(missing_adds), "attempt_run_id"])
        instance.dispose()
