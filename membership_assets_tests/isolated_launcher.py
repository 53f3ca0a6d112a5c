"""A run launcher that isolates runs the way the Helm chart's K8sRunLauncher does, without a cluster.

K8sRunLauncher starts each run (and each retry) as a Kubernetes Job: a new pod running
``dagster api execute_run`` from the code location's image, with the instance config mounted
at $DAGSTER_HOME and nothing else shared. Here each run gets a new process group (killing it
is the pod dying) with its own working directory, its own DAGSTER_HOME (a copy of the
launcher's dagster.yaml, so the instance's local storage is the run's own), its own
MEMBERSHIP_STATE_DIR and its own TMPDIR. Whatever a retry needs must therefore come from the
shared services: Postgres and the (emulated) bucket. Run monitoring asks the launcher whether
the worker is alive, as it asks Kubernetes whether the Job's pod failed.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import dagster._check as check
from dagster import Field, StringSource
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData

PID_TAG = "membership_test/run_worker_pid"


class IsolatedRunLauncher(RunLauncher, ConfigurableClass):
    def __init__(self, runs_dir: str, inst_data: ConfigurableClassData | None = None):
        self.runs_dir = Path(runs_dir)
        self._inst_data = inst_data
        self._workers: dict[str, subprocess.Popen] = {}
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls):
        return {"runs_dir": Field(StringSource, description="Each run's own directory goes here.")}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **config_value)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        root = self.runs_dir / run.run_id
        home, work, state, tmp = (root / d for d in ("dagster_home", "work", "state", "tmp"))
        for d in (home, work, state, tmp):
            d.mkdir(parents=True)
        # The pod's instance: the same dagster.yaml (the chart mounts one configmap everywhere).
        launcher_home = Path(os.environ["DAGSTER_HOME"])
        (home / "dagster.yaml").write_text((launcher_home / "dagster.yaml").read_text())
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "MEMBERSHIP_STATE_DIR": str(state),
            "TMPDIR": str(tmp),
        }
        args = ExecuteRunArgs(
            job_origin=check.not_none(run.job_code_origin),
            run_id=run.run_id,
            instance_ref=None,
            set_exit_code_on_failure=True,
        ).get_command_args()
        log = open(root / "worker.log", "wb")  # noqa: SIM115 - the worker owns it
        worker = subprocess.Popen(
            args, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._workers[run.run_id] = worker
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(worker.pid)})
        self._instance.report_engine_event(
            f"Started an isolated run worker (pid {worker.pid}) in {root}", run, cls=self.__class__
        )

    def _pid(self, run_id: str) -> int | None:
        run = self._instance.get_run_by_id(run_id)
        return int(run.tags[PID_TAG]) if run and PID_TAG in run.tags else None

    def terminate(self, run_id: str) -> bool:
        pid = self._pid(run_id)
        if pid is None:
            return False
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = self._workers.get(run.run_id)
        if worker is None:  # launched before this process started: is its process there?
            pid = self._pid(run.run_id)
            alive = pid is not None and Path(f"/proc/{pid}").exists()
            return CheckRunHealthResult(WorkerStatus.RUNNING if alive else WorkerStatus.FAILED)
        code = worker.poll()
        if code is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        if code == 0:
            return CheckRunHealthResult(WorkerStatus.SUCCESS)
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker exited with {code}")
