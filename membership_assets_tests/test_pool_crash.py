"""A run worker SIGKILLed inside a pooled side-effect step never blocks its pool (issue 17.1).

One real ``dagster-daemon`` (the project's dagster.yaml as shipped: run monitoring, run
retries, pools) and one gRPC code server serve all three cases, each killing the run worker
inside the step that holds its pool's only slot:

- ``membership_sync`` (pool members_db), waiting for the members database's write lock;
- ``mismatch_report_email`` (pool action_builder), before the report is sent;
- ``outdated_tagging_deletions`` (pool action_builder), with live DELETEs in flight.

Each time the crash fails the run, run_retries re-executes it from failure, the monitoring
daemon frees the dead run's slot (``free_slots_after_run_end_seconds``), the retry gets the slot
and succeeds, the side effect is applied once, and no slot is left claimed; within BOUND seconds.
"""

from __future__ import annotations

import email
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml

from membership_assets import pools
from membership_assets.registry.store import MembersStore
from membership_assets.settings import SIMULATED_AB_TOKEN, SIMULATED_DJANGO_TOKEN
from membership_assets.simulators.action_builder import ActionBuilderSimulator
from membership_assets.simulators.action_builder_seed import SeedConfig, generate_campaign
from membership_assets.simulators.django_registry import DjangoRegistrySimulator, generate_registry
from membership_assets.warehouse.resources import DuckDBWarehouse

from .crash_location import GATE_ENV, WAITING
from .test_deployment_topology import BIN, ROOT, Processes, free_port, wait_for

pytestmark = [pytest.mark.deployment, pytest.mark.slow]

BOUND = 120  # seconds from the kill to the retry's success and a free pool
ALERT_SUBJECT = "[membership_assets]"  # notify/sensors.py failure_message


@dataclass
class Topology:
    home: Path
    state: Path
    workspace: Path
    env: dict[str, str]
    instance: dg.DagsterInstance
    django: DjangoRegistrySimulator
    ab: ActionBuilderSimulator
    gate: Path
    procs: Processes

    def launch(self, job: str, config: dict | None = None) -> str:
        """Submit a run to the daemon's queue, as `dagster job launch -w workspace.yaml` does
        (its code, called in this process: the command would cost a Python start per case)."""
        from dagster._cli.job import execute_launch_command
        from dagster_shared.cli import WorkspaceOpts

        run = execute_launch_command(
            instance=self.instance,
            workspace_opts=WorkspaceOpts(workspace=[str(self.workspace)]),
            job_name=job,
            config_json=json.dumps(config or {}),
        )
        self.launched = time.monotonic()
        return run.run_id

    def step_started(self, run_id: str, step: str) -> bool:
        return any(
            e.step_key == step for e in self.instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
        )

    launched: float = 0.0

    def kill_worker(self, run_id: str) -> float:
        print(f"{run_id}: launched -> killed in {time.monotonic() - self.launched:.1f}s")
        [started] = [
            e
            for e in self.instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
            if e.message.startswith("Started process for run")
        ]
        os.kill(int(started.dagster_event.engine_event_data.metadata["pid"].value), signal.SIGKILL)
        return time.monotonic()

    def retry_succeeded(self, run_id: str) -> dg.DagsterRun | None:
        retries = self.instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
        return next((r for r in retries if r.status == dg.DagsterRunStatus.SUCCESS), None)

    def slots_claimed(self, pool: str) -> int:
        return len(self.instance.event_log_storage.get_concurrency_info(pool).claimed_slots)

    def recovered(self, run_id: str, pool: str, killed_at: float) -> dg.DagsterRun:
        retry = wait_for(
            f"the retry of {run_id} to succeed", lambda: self.retry_succeeded(run_id), timeout=BOUND
        )
        assert self.instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
        wait_for(f"pool {pool} to be free", lambda: self.slots_claimed(pool) == 0, timeout=BOUND)
        took = time.monotonic() - killed_at
        print(f"{pool}: killed -> retry succeeded and pool free in {took:.1f}s")
        assert took < BOUND
        return retry


@pytest.fixture
def topology(tmp_path) -> Iterator[Topology]:
    tmp = tmp_path
    home, state = tmp / "dagster_home", tmp / "state"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())  # as shipped
    port = free_port()
    workspace = tmp / "workspace.yaml"
    workspace.write_text(
        yaml.safe_dump(
            {"load_from": [{"grpc_server": {"host": "127.0.0.1", "port": port, "location_name": "crash"}}]}
        )
    )
    campaign = generate_campaign(SeedConfig(people=300, seed=11))
    with (
        DjangoRegistrySimulator(generate_registry(400, seed=21), token=SIMULATED_DJANGO_TOKEN) as django,
        ActionBuilderSimulator(campaign, token=SIMULATED_AB_TOKEN, rate_limit=None) as ab,
    ):
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "MEMBERSHIP_"))},
            "DAGSTER_HOME": str(home),
            "MEMBERSHIP_ENV": "local",
            "MEMBERSHIP_STATE_DIR": str(state),
            "DJANGO_API_URL": django.base_url,
            "ACTION_BUILDER_BASE_URL": ab.base_url,
            "ACTION_BUILDER_CAMPAIGN_ID": campaign.campaign_id,
            "ACTION_BUILDER_RATE_LIMIT": "1000",
            GATE_ENV: str(tmp / "email_gate"),
        }
        procs = Processes(tmp)
        try:
            procs.start(
                "code_server",
                [
                    str(BIN / "dagster"),
                    "api",
                    "grpc",
                    "-m",
                    "membership_assets_tests.crash_location",
                    "-d",
                    str(ROOT),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                ],
                env,
                ROOT,
            )
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("DAGSTER_HOME", str(home))
                instance = dg.DagsterInstance.get()
            # The daemon loads the location once it serves (a deployment's readiness probe).
            wait_for("the code server", lambda: _serving(port), timeout=90)
            procs.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env, ROOT)
            yield Topology(home, state, workspace, env, instance, django, ab, tmp / "email_gate", procs)
        except BaseException:
            print(procs.tail())
            raise
        finally:
            procs.stop()


def _serving(port: int) -> bool:
    from dagster._grpc.client import DagsterGrpcClient

    try:
        return DagsterGrpcClient(port=port, host="127.0.0.1").ping("") is not None
    except Exception:
        return False


def test_a_run_killed_inside_each_pooled_step_is_retried_and_frees_its_pool(topology, subtests):
    """One daemon for the three kills (CI has 2 cores): each case reported on its own."""
    started = time.monotonic()
    # The report case first: it must be the campaign's first report of the day to be sent at all.
    for case in (kill_in_member_sync, kill_before_report_email, kill_in_tag_deletions):
        with subtests.test(case=case.__name__):
            case(topology)
    print(f"pool crash test: {time.monotonic() - started:.0f}s for three kills")


def kill_in_member_sync(t: Topology) -> None:
    t.gate.touch()
    members = MembersStore.from_url(f"sqlite:///{t.state / 'members.sqlite'}")
    members.ensure_schema()
    # Hold the members database's write lock: the sync waits for it inside membership_sync.
    with members.write():
        run_id = t.launch("registry_sync")
        wait_for("membership_sync to start", lambda: t.step_started(run_id, "membership_sync"), timeout=BOUND)
        assert t.slots_claimed(pools.MEMBERS_DB) == 1
        killed_at = t.kill_worker(run_id)
    retry = t.recovered(run_id, pools.MEMBERS_DB, killed_at)
    entry = members.applied_entry(run_id)  # applied once, under the logical run's id
    assert entry is not None and entry.run_id == retry.run_id
    assert entry.members_added == len(members.changes_of(run_id)) > 0
    assert members.applied_entry(retry.run_id) is None
    members.engine.dispose()


def kill_in_tag_deletions(t: Topology) -> None:
    t.gate.touch()
    planned = {tid for p in t.ab.data.expected_mismatches().values() for tid in p.outdated_tagging_ids}
    before = set(t.ab.data.taggings)
    # Slow DELETEs, so the kill lands while some are answered and others are in flight.
    t.ab.faults.add(path_pattern="/taggings/", method="DELETE", delay=0.2, times=None)
    run_id = t.launch("action_builder_tag_sync", _ab_config(live=True))
    wait_for(
        "DELETEs in flight",
        lambda: t.ab.requests.by_route.get("delete_tagging", 0) >= 5,
        timeout=BOUND,
        interval=0.05,
    )
    assert t.step_started(run_id, "outdated_tagging_deletions")
    killed_at = t.kill_worker(run_id)
    t.recovered(run_id, pools.ACTION_BUILDER, killed_at)
    assert before - set(t.ab.data.taggings) == planned  # every outdated tagging, nothing else
    audit = DuckDBWarehouse(path=str(t.state / "warehouse.duckdb")).query(
        "select tagging_id, action, run_id from {dataset}.ab_tagging_deletions"
    )
    audit = audit[audit["run_id"] == run_id]  # the logical run (the report case's run was dry)
    assert sorted(audit["tagging_id"]) == sorted(planned)  # one row each: applied once
    assert set(audit["action"]) == {"deleted"}


def kill_before_report_email(t: Topology) -> None:
    t.gate.unlink(missing_ok=True)
    (t.gate.parent / WAITING).unlink(missing_ok=True)
    sent_before = _reports(t.state)
    run_id = t.launch("action_builder_tag_sync", _ab_config(live=False))
    wait_for("the report email to wait for the mail server", (t.gate.parent / WAITING).exists, timeout=BOUND)
    assert t.step_started(run_id, "mismatch_report_email")
    assert t.slots_claimed(pools.ACTION_BUILDER) == 1
    killed_at = t.kill_worker(run_id)
    t.gate.touch()  # the mail server answers again
    t.recovered(run_id, pools.ACTION_BUILDER, killed_at)
    assert _reports(t.state) == sent_before + 1


def _ab_config(live: bool) -> dict:
    return {
        "ops": {
            "action_builder_campaign": {"config": {"mode": "full"}},
            "outdated_tagging_deletions": {"config": {"dry_run": not live}},
        }
    }


def _reports(state: Path) -> int:
    """Reports in the outbox (admin alerts, also sent for the killed runs, not counted)."""
    outbox = state / "outbox"
    subjects = [email.message_from_bytes(p.read_bytes())["Subject"] for p in outbox.glob("*.eml")]
    return sum(not s.startswith(ALERT_SUBJECT) for s in subjects)
