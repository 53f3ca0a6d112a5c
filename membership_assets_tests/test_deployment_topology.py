"""The production topology on this machine: Postgres instance storage, the code location's gRPC
code server (deploy/Dockerfile's command), dagster-daemon and dagster-webserver, each its own
process with deploy/dagster.yaml and deploy/workspace.yaml used unchanged.

A schedule tick launches registry_sync against the registry simulator; its run worker is killed
mid-request; the crash is detected, the run fails, and the run retry of deploy/dagster.yaml
re-executes it to success, applying the sync once under the logical run's id. The webserver's
GraphQL shows both runs.
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
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from membership_assets.environment import SIMULATED_DJANGO_TOKEN

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
def instance_database() -> Iterator[dict[str, str]]:
    """A fresh database for Dagster's storage on the test Postgres, dropped afterwards."""
    import sqlalchemy as sa

    url = postgres_server_url()
    name = f"dagster_instance_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield {
            "DAGSTER_PG_HOST": url.host or "127.0.0.1",
            "DAGSTER_PG_PORT": str(url.port or 5432),
            "DAGSTER_PG_DB": name,
            "DAGSTER_PG_USERNAME": url.username or "postgres",
            "DAGSTER_PG_PASSWORD": url.password or "",
        }
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


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


def test_schedule_tick_crash_and_retry_on_the_production_topology(tmp_path, registry_data):
    from membership_assets.registry.store import MembersStore
    from membership_assets.simulators.django_registry import DjangoRegistrySimulator

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text())  # as shipped
    state = tmp_path / "state"
    code_port, web_port = free_port(), free_port()
    started = time.monotonic()

    with (
        instance_database() as pg_env,
        DjangoRegistrySimulator(registry_data, token=SIMULATED_DJANGO_TOKEN, default_page_size=50) as sim,
    ):
        # The first listing request hangs, so the run is surely mid-step when its worker is killed;
        # the retry's requests are answered normally.
        hang = sim.faults.add(path_pattern="members", delay=60, times=1)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "MEMBERSHIP_"))},
            **pg_env,
            "DAGSTER_HOME": str(home),
            "MEMBERSHIP_ENV": "local",
            "MEMBERSHIP_STATE_DIR": str(state),
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
            wait_for("the webserver to load the code location", lambda: location_loaded(web_port), timeout=60)
            procs.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace], env, tmp_path)
            run_topology_checks(hang, web_port, env, state, MembersStore)
        except BaseException:
            print(procs.tail())
            raise
        finally:
            procs.stop()
    print(f"topology test: {time.monotonic() - started:.0f}s (budget: under two minutes)")


def run_topology_checks(hang, web_port, env, state, MembersStore) -> None:
    import dagster as dg

    def runs() -> list[dict]:
        try:
            return graphql(web_port, RUNS_QUERY, {"job": "registry_sync"})["runsOrError"]["results"]
        except requests.RequestException:
            return []

    # 1. The schedule ticks and its run's worker is mid-request to the registry.
    wait_for("the registry_hourly tick to reach the registry", lambda: hang.hits, timeout=100)
    [first] = wait_for("the scheduled run in GraphQL", runs, timeout=10)
    assert {"key": "dagster/schedule_name", "value": "registry_hourly"} in first["tags"]
    assert first["status"] == "STARTED"

    # 2. Kill its run worker (the process the code server started for the run).
    with pytest.MonkeyPatch.context() as mp:
        for key in (
            "DAGSTER_PG_HOST",
            "DAGSTER_PG_PORT",
            "DAGSTER_PG_DB",
            "DAGSTER_PG_USERNAME",
            "DAGSTER_PG_PASSWORD",
        ):
            mp.setenv(key, env[key])
        instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    with instance:
        [started_event] = [
            e
            for e in instance.all_logs(first["runId"], of_type=dg.DagsterEventType.ENGINE_EVENT)
            if e.message.startswith("Started process for run")
        ]
        worker_pid = int(started_event.dagster_event.engine_event_data.metadata["pid"].value)
        os.kill(worker_pid, signal.SIGKILL)

        # 3. The crash fails the run; run_retries re-executes it; the retry succeeds.
        def retried() -> dict | None:
            by_id = {r["runId"]: r for r in runs()}
            retry = [r for r in by_id.values() if r["parentRunId"] == first["runId"]]
            failed = by_id.get(first["runId"], {}).get("status") == "FAILURE"
            if failed and retry and retry[0]["status"] == "SUCCESS":
                return retry[0]
            return None

        retry = wait_for("the run retry to succeed", retried, timeout=90)
        assert retry["rootRunId"] == first["runId"]
        assert {"key": "dagster/retry_number", "value": "1"} in retry["tags"]
        failure = instance.all_logs(first["runId"], of_type=dg.DagsterEventType.RUN_FAILURE)
        crash = instance.all_logs(first["runId"], of_type=dg.DagsterEventType.ENGINE_EVENT)
        assert failure, "the killed run was not marked failed"
        assert any("was terminated by signal 9 (SIGKILL)" in e.message for e in crash), [
            e.message for e in crash
        ]

    # 4. The sync was applied once, under the logical run (the scheduled run's id).
    store = MembersStore.from_url(f"sqlite:///{state / 'members.sqlite'}")
    entry = store.applied_entry(first["runId"])
    store.engine.dispose()
    assert entry is not None and entry.source == "scheduled"
    assert entry.members_added > 0
