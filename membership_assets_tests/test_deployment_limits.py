"""Operational limits: every job carries a max runtime (membership_assets/limits.py); the daemon's
run monitoring fails a run that outlives it, and the failure alert tells the admins."""

from __future__ import annotations

import email
import logging
import signal
import subprocess
import time

import dagster as dg
import pytest
import yaml

from membership_assets.definitions import defs
from membership_assets.limits import MAX_RUNTIME_SECONDS, MAX_RUNTIME_TAG

from .isolated_launcher import PID_TAG
from .test_deployment import DEPLOY, helm_values

# Dagster's implicit "materialize anything" job has no tags of its own.
IMPLICIT_JOB = "__ASSET_JOB"


def test_every_job_has_its_max_runtime_and_monitoring_enforces_it():
    jobs = {j.name: j for j in defs.resolve_all_job_defs() if j.name != IMPLICIT_JOB}
    assert set(jobs) == set(MAX_RUNTIME_SECONDS)  # no job unbounded, no stale limit
    for name, job in jobs.items():
        assert job.tags[MAX_RUNTIME_TAG] == str(MAX_RUNTIME_SECONDS[name]), name
    # Only the daemon's run monitoring enforces the tag: on in both instance configs.
    monitoring = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())["run_monitoring"]
    assert monitoring["enabled"]
    assert monitoring["max_runtime_seconds"] == max(MAX_RUNTIME_SECONDS.values())  # untagged runs
    assert helm_values()["dagsterDaemon"]["runMonitoring"]["enabled"]


@pytest.fixture
def hung_worker():
    """A run worker that never reports again: a process group of its own, as a pod would be."""
    worker = subprocess.Popen(["sleep", "600"], start_new_session=True)
    yield worker
    if worker.poll() is None:
        worker.kill()
        worker.wait()


ROLLBACK_CONFIG = {"ops": {"rollback_membership_sync": {"config": {"sync_id": "sync-1"}}}}


@pytest.mark.parametrize(
    "job_name, run_config",
    [("action_builder_tag_sync", None), ("registry_sync", None), ("registry_rollback", ROLLBACK_CONFIG)],
)
def test_a_hung_run_is_failed_by_run_monitoring_and_the_admins_are_alerted(
    job_name, run_config, hung_worker, tmp_path
):
    from dagster._daemon.monitoring.run_monitoring import monitor_started_run

    from membership_assets.notify.resources import FileOutboxEmail, Recipients
    from membership_assets.notify.sensors import email_admins_on_failure

    job = defs.resolve_job_def(job_name)
    launcher = {
        "module": "membership_assets_tests.isolated_launcher",
        "class": "IsolatedRunLauncher",
        "config": {"runs_dir": str(tmp_path / "runs")},
    }
    overrides = {"run_monitoring": {"enabled": True}, "run_launcher": launcher}
    worker = hung_worker
    with dg.instance_for_test(overrides=overrides) as instance:
        # The job's own tags, with its limit shortened to one second for the test.
        run = instance.create_run_for_job(job, run_config=run_config, tags={**job.tags, MAX_RUNTIME_TAG: "1"})
        instance.add_run_tags(run.run_id, {PID_TAG: str(worker.pid)})
        instance.report_dagster_event(
            dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name=job_name), run.run_id
        )
        time.sleep(1.2)
        record = instance.get_run_record_by_id(run.run_id)
        monitor_started_run(instance, None, record, logging.getLogger("test"))  # the daemon's check
        assert worker.wait(timeout=10) == -signal.SIGTERM  # the launcher stopped the worker

        failed = instance.get_run_by_id(run.run_id)
        assert failed.status == dg.DagsterRunStatus.FAILURE
        [failure] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[:1]
        assert "maximum runtime of 1 seconds" in "\n".join(
            e.message for e in instance.all_logs(run.run_id) if e.message
        )
        context = dg.build_run_status_sensor_context(
            sensor_name="email_admins_on_failure",
            dagster_event=failure.dagster_event,
            dagster_instance=instance,
            dagster_run=failed,
        ).for_run_failure()
        outbox = tmp_path / "outbox"
        email_admins_on_failure(
            context,
            email=FileOutboxEmail(directory=str(outbox), from_address="sync@example.org"),
            recipients=Recipients(admins="admins@example.org"),
        )
    [sent] = list(outbox.glob("*.eml"))
    message = email.message_from_bytes(sent.read_bytes())
    assert message["Subject"] == f"[membership_assets] {job_name} failed"
    assert message["To"] == "admins@example.org"
    assert "maximum runtime of 1 seconds" in message.get_payload(decode=True).decode()
