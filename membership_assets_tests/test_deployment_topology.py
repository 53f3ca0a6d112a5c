"""The production topology on this machine, with runs isolated as Kubernetes isolates them:
Postgres instance storage, the code location's gRPC code server (deploy/Dockerfile's command),
dagster-daemon and dagster-webserver, each its own process with deploy/workspace.yaml and
deploy/dagster.yaml, the latter with two changes a cluster makes (see ``topology_instance``):
runs are launched like the Helm chart's K8sRunLauncher launches pods (isolated_launcher.py:
each run and each retry in a new process group with its own working directory, DAGSTER_HOME,
MEMBERSHIP_STATE_DIR and TMPDIR, nothing shared but Postgres and the bucket), and run
monitoring polls every 2 s instead of every minute. Scratch and compute logs go to a Cloud
Storage emulator, the members database is Postgres.

A schedule tick launches registry_sync; its worker is killed in membership_sync, after the
upstream steps left their outputs in the bucket; run monitoring finds the dead worker and fails
the run; the run retry of deploy/dagster.yaml re-executes it from failure in a new worker,
which reads those outputs from the bucket and applies the sync once, under the logical run's id.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import requests
import yaml

from membership_assets.settings import SIMULATED_DJANGO_TOKEN

from .conftest import postgres_server_url

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.deployment, pytest.mark.postgres]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, probe: Callable[[], object], timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def code_server_command(port: int) -> list[str]:
    """deploy/Dockerfile's CMD, listening on loopback and a free port instead of 0.0.0.0:4000."""
    [cmd] = re.findall(r"^CMD (\[.*\])$", (DEPLOY / "Dockerfile").read_text(), flags=re.M)
    args = json.loads(cmd)
    args[args.index("-h") + 1] = "127.0.0.1"
    args[args.index("-p") + 1] = str(port)
    return [str(BIN / args[0]), *args[1:]]


@contextmanager
def postgres_database(prefix: str) -> Iterator:
    """A fresh database on the test Postgres (its SQLAlchemy URL), dropped afterwards."""
    import sqlalchemy as sa

    url = postgres_server_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def instance_env(url) -> dict[str, str]:
    """deploy/dagster.yaml's storage variables for a database URL."""
    return {
        "DAGSTER_PG_HOST": url.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(url.port or 5432),
        "DAGSTER_PG_DB": url.database,
        "DAGSTER_PG_USERNAME": url.username or "postgres",
        "DAGSTER_PG_PASSWORD": url.password or "",
    }


def topology_instance(home: Path, runs_dir: Path) -> None:
    """deploy/dagster.yaml as a cluster runs it: runs isolated (the chart's K8sRunLauncher, here
    isolated_launcher.py) and, so the test takes seconds, run monitoring polling every 2 s and
    freeing a dead run's pool slots after 1 s. Everything else is used as shipped."""
    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    assert "run_launcher" not in config  # the chart (or the operator) chooses it
    config["run_launcher"] = {
        "module": "membership_assets_tests.isolated_launcher",
        "class": "IsolatedRunLauncher",
        "config": {"runs_dir": str(runs_dir)},
    }
    config["run_monitoring"].update(poll_interval_seconds=2, free_slots_after_run_end_seconds=1)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


@contextmanager
def holding_the_sync_lock(members_url) -> Iterator:
    """Hold the members database's sync lock (MembersStore.write's advisory lock), so a run's
    membership_sync step waits inside the step until it is released."""
    import sqlalchemy as sa

    engine = sa.create_engine(members_url, isolation_level="AUTOCOMMIT")
    conn = engine.connect()
    conn.execute(sa.text("SELECT pg_advisory_lock(hashtext('membership_sync'))"))
    try:
        yield lambda: conn.execute(
            # pg_locks is server-wide: only this database's waiters (other tests share the server)
            sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        ).scalar()
    finally:
        conn.execute(sa.text("SELECT pg_advisory_unlock_all()"))
        conn.close()
        engine.dispose()


class Processes:
    """Child processes in their own process groups, all stopped (group by group) at exit."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started.append((name, proc))
        return proc

    def tail(self, chars: int = 1500) -> str:
        return "\n".join(
            f"--- {name}.log\n{(self.logs / f'{name}.log').read_text(errors='replace')[-chars:]}"
            for name, _ in self.started
        )

    def stop(self) -> None:
        for _, proc in reversed(self.started):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in reversed(self.started):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    response = requests.post(
        f"http://127.0.0.1:{port}/graphql", json={"query": query, "variables": variables or {}}, timeout=10
    )
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


LOCATION_QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError { __typename } } } } }
"""


def location_loaded(port: int) -> bool:
    try:
        entries = graphql(port, LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
    except requests.RequestException:
        return False
    return [e["locationOrLoadError"] and e["locationOrLoadError"]["__typename"] for e in entries] == [
        "RepositoryLocation"
    ]


RUNS_QUERY = """
query Runs($job: String!) {
  runsOrError(filter: {pipelineName: $job}) {
    ... on Runs { results { runId status rootRunId parentRunId tags { key value } } }
  }
}
"""


def test_isolated_runs_crash_and_retry_on_the_production_topology(tmp_path, registry_data, gcs):
    from membership_assets.registry.store import MembersStore
    from membership_assets.simulators.django_registry import DjangoRegistrySimulator

    home, runs_dir = tmp_path / "dagster_home", tmp_path / "runs"
    home.mkdir()
    topology_instance(home, runs_dir)
    code_port, web_port = free_port(), free_port()
    started = time.monotonic()

    with (
        postgres_database("dagster_instance") as instance_url,
        postgres_database("members") as members_url,
        DjangoRegistrySimulator(registry_data, token=SIMULATED_DJANGO_TOKEN, default_page_size=50) as sim,
    ):
        members = members_url.render_as_string(hide_password=False)
        store = MembersStore.from_url(members)
        store.ensure_schema()  # migrated before the code serves (deploy/: the init container)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "MEMBERSHIP_"))},
            **instance_env(instance_url),
            **gcs.env,
            "DAGSTER_HOME": str(home),
            "DAGSTER_COMPUTE_LOG_BUCKET": gcs.bucket,
            "PYTHONPATH": str(ROOT),  # the daemon imports the isolating launcher from the tests
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `dagster`, as in the image
            "MEMBERSHIP_ENV": "local",
            "MEMBERSHIP_STATE_DIR": str(tmp_path / "state"),
            "MEMBERSHIP_SCRATCH_URL": f"gs://{gcs.bucket}/runs",
            "MEMBERS_DB_URL": members,
            # From the Kubernetes secret in production: the local default is a key file in each
            # run's own state directory, and a retry could not decrypt its parent's outputs.
            "MEMBERSHIP_PRIVACY_KEY_PASSWORD": "topology-test-privacy-key-" + uuid.uuid4().hex,
            "MEMBERSHIP_SCHEDULE_STATUS": "running",
            "REGISTRY_SYNC_CRON": "* * * * *",  # a tick within a minute instead of an hour
            "DJANGO_API_URL": sim.base_url,
            "ACTION_BUILDER_BASE_URL": "http://127.0.0.1:9/api/rest/v1",  # never reached here
            "MEMBERSHIP_CODE_SERVER_HOST": "127.0.0.1",
            "MEMBERSHIP_CODE_SERVER_PORT": str(code_port),
        }
        workspace = str(DEPLOY / "workspace.yaml")
        procs = Processes(tmp_path)
        try:
            procs.start("code_server", code_server_command(code_port), env, tmp_path)
            procs.start(
                "webserver",
                [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port), "-w", workspace],
                env,
                tmp_path,
            )
            # The daemon reloads an unreachable code location only once a minute: start it when
            # the code server serves the definitions, as a deployment's readiness probe would.
            wait_for("the webserver to load the code location", lambda: location_loaded(web_port), timeout=90)
            procs.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace], env, tmp_path)
            run_topology_checks(web_port, env, members_url, store, gcs, runs_dir)
        except BaseException:
            print(procs.tail())
            for log in sorted(runs_dir.glob("*/worker.log")):
                print(f"--- {log}\n{log.read_text(errors='replace')[-1500:]}")
            raise
        finally:
            procs.stop()
            kill_run_workers(env)
            store.engine.dispose()
    print(f"topology test: {time.monotonic() - started:.0f}s (budget: under two minutes)")


def instance_of(env: dict[str, str]):
    import dagster as dg

    with pytest.MonkeyPatch.context() as mp:
        for key in instance_env(postgres_server_url()):
            mp.setenv(key, env[key])
        for key, value in env.items():
            if key.startswith(("STORAGE_EMULATOR", "GOOGLE_CLOUD", "DAGSTER_COMPUTE")):
                mp.setenv(key, value)
        return dg.DagsterInstance.from_config(env["DAGSTER_HOME"])


def kill_run_workers(env: dict[str, str]) -> None:
    """Run workers live in their own sessions, like pods: stop any a failed test left behind."""
    from .isolated_launcher import PID_TAG

    with instance_of(env) as instance:
        for run in instance.get_runs():
            if PID_TAG in run.tags:
                with suppress(ProcessLookupError):
                    os.killpg(int(run.tags[PID_TAG]), signal.SIGKILL)


def run_topology_checks(web_port, env, members_url, store, gcs, runs_dir) -> None:
    import dagster as dg

    from .isolated_launcher import PID_TAG

    def runs() -> list[dict]:
        try:
            return graphql(web_port, RUNS_QUERY, {"job": "registry_sync"})["runsOrError"]["results"]
        except requests.RequestException:
            return []

    with holding_the_sync_lock(members_url) as waiting_for_lock, instance_of(env) as instance:
        # 1. The schedule ticks; its run's worker reaches membership_sync and waits for the lock,
        #    its upstream outputs already in the bucket.
        wait_for("the scheduled run to wait in membership_sync", waiting_for_lock, timeout=120)
        [first] = wait_for("the scheduled run in GraphQL", runs, timeout=10)
        assert {"key": "dagster/schedule_name", "value": "registry_hourly"} in first["tags"]
        assert first["status"] == "STARTED"
        assert gcs.names(f"runs/{first['runId']}/")  # intermediates in the bucket, not on the pod
        # 2. Kill its worker's whole process group: the pod dies.
        pid = int(instance.get_run_by_id(first["runId"]).tags[PID_TAG])
        os.killpg(pid, signal.SIGKILL)

    # 3. Monitoring fails the run; run_retries re-executes it from failure in a new worker.
    def retried() -> dict | None:
        by_id = {r["runId"]: r for r in runs()}
        retry = [r for r in by_id.values() if r["parentRunId"] == first["runId"]]
        failed = by_id.get(first["runId"], {}).get("status") == "FAILURE"
        return retry[0] if failed and retry and retry[0]["status"] == "SUCCESS" else None

    retry = wait_for("the run retry to succeed", retried, timeout=120)
    assert retry["rootRunId"] == first["runId"]
    assert {"key": "dagster/retry_number", "value": "1"} in retry["tags"]
    with instance_of(env) as instance:
        [failure] = instance.all_logs(first["runId"], of_type=dg.DagsterEventType.RUN_FAILURE)
        assert "Detected run worker status FAILED" in failure.message, failure.message
        # The retry started at the step that was killed: its inputs came from the bucket.
        steps = [
            e.step_key for e in instance.all_logs(retry["runId"], of_type=dg.DagsterEventType.STEP_START)
        ]
        assert steps[0] == "membership_sync" and "django_members" not in steps, steps

    # 4. Each worker had its own disk; nothing of the scratch on any of them; the chain's
    #    intermediates deleted from the bucket after success; both runs' compute logs kept there.
    #    (The schedule ticks every minute here: a later tick's run may exist beside the chain.)
    chain = [first["runId"], retry["runId"]]
    assert set(chain) <= {p.name for p in runs_dir.iterdir()}
    assert not [p for run_id in chain for p in (runs_dir / run_id).rglob("*") if p.name == "scratch"]
    assert [n for run_id in chain for n in gcs.names(f"runs/{run_id}/")] == []
    logs = gcs.names("compute-logs/")
    assert [n for n in logs if retry["runId"] in n], logs

    # 5. The sync was applied once, under the logical run (the scheduled run's id).
    entry = store.applied_entry(first["runId"])
    assert entry is not None and entry.source == "scheduled"
    assert entry.members_added > 0
    assert store.applied_entry(retry["runId"]) is None
