"""Intermediates between steps: scoped to the run, encrypted at rest, deleted when the run succeeds.

Dagster's default filesystem IO manager pickles each asset to ``$DAGSTER_HOME/storage/<asset>``:
one file per asset for all runs, in plaintext. Two runs then overwrite each other's inputs, a
re-executed old run loads newer runs' outputs, and full member tables (kennitala, name, email)
sit on disk indefinitely. Here every output is written under its own run's id (a re-execution
reads its parent's outputs: Dagster names the run that produced each one), encrypted with a key
derived from ``MEMBERSHIP_PRIVACY_KEY_PASSWORD``; when a run ends with every step done and none
failed, its outputs and those of the runs it re-executed are deleted. Outputs of failed runs are
kept for "re-execute from failure" and purged after ``keep_days``.

Production sets ``MEMBERSHIP_SCRATCH_URL`` (``gs://bucket/prefix``) so every run worker sees the
same scratch; locally it defaults to the Dagster instance's storage directory. When runs are
isolated (a run launcher other than Dagster's default, e.g. the Helm chart's ``K8sRunLauncher``:
each run and each retry in a new pod), a run with pod-local scratch is refused before its first
step: a retry from failure could never find what the crashed pod wrote.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import time
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from .config import Settings, setting
from .privacy import cipher
from .settings import is_production, state_dir


class _LocalStore:
    def __init__(self, root: str):
        self.root = Path(root)

    def write(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # a reader never sees half a file

    def read(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.exists() else None

    def delete_run(self, run_id: str) -> None:
        shutil.rmtree(self.root / run_id, ignore_errors=True)

    def purge_older_than(self, seconds: float) -> None:
        if not self.root.exists():
            return
        cutoff = time.time() - seconds
        for run_dir in self.root.iterdir():
            if run_dir.is_dir() and run_dir.stat().st_mtime < cutoff:
                shutil.rmtree(run_dir, ignore_errors=True)


class _GcsStore:
    """gs://bucket/prefix through google-cloud-storage: the given service-account JSON (the
    BigQuery one), else Application Default Credentials (Workload Identity on GKE)."""

    def __init__(self, url: str, credentials_json: str = ""):
        from google.cloud import storage

        bucket, _, prefix = url.removeprefix("gs://").partition("/")
        if not bucket or not prefix.strip("/"):
            # The purge deletes old objects under the prefix: never a whole, possibly shared, bucket.
            raise ValueError(f"scratch URL {url!r} needs a bucket and a prefix: gs://bucket/prefix")
        if credentials_json and not os.getenv("STORAGE_EMULATOR_HOST"):
            client = storage.Client.from_service_account_info(json.loads(credentials_json))
        else:
            client = storage.Client()
        self.bucket = client.bucket(bucket)
        self.prefix = prefix.strip("/")

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}"

    def write(self, key: str, data: bytes) -> None:
        self.bucket.blob(self._name(key)).upload_from_string(data)

    def read(self, key: str) -> bytes | None:
        from google.api_core.exceptions import NotFound

        try:
            return self.bucket.blob(self._name(key)).download_as_bytes()
        except NotFound:
            return None

    def delete_run(self, run_id: str) -> None:
        for blob in self.bucket.list_blobs(prefix=self._name(run_id) + "/"):
            blob.delete()

    def purge_older_than(self, seconds: float) -> None:
        # Only failed run chains leave objects here, so the listing stays short; the bucket's
        # lifecycle rule (docs/production.md) is the backstop if no run ever ends again.
        cutoff = time.time() - seconds
        for blob in self.bucket.list_blobs(prefix=self._name("")):
            if blob.updated is not None and blob.updated.timestamp() < cutoff:
                blob.delete()


class ScratchNotSharedError(RuntimeError):
    """The run's intermediates or checkpoints would be lost with its pod: the run does not start."""


def launcher_class(instance: dg.DagsterInstance | None) -> str:
    """The class name of the instance's run launcher, read from its config (not instantiated)."""
    ref = getattr(instance, "_ref", None)
    data = getattr(ref, "run_launcher_data", None)
    return data.class_name if data is not None else "DefaultRunLauncher"


def scratch_refusal(base_path: str, launcher: str, production: bool) -> str | None:
    """Why runs may not start with this scratch, or None. Only object storage outlives a pod."""
    if base_path.startswith("gs://"):
        return None
    where = base_path or "the Dagster instance's storage directory"
    if launcher != "DefaultRunLauncher":
        return (
            f"runs are launched by {launcher}, each run and each retry in its own pod, but step "
            f"outputs would go to {where} on the pod's own disk, where a retry of a crashed run "
            "cannot find them: set MEMBERSHIP_SCRATCH_URL=gs://bucket/prefix"
        )
    if production and not base_path:
        return "production needs MEMBERSHIP_SCRATCH_URL (gs://bucket/prefix, or a directory all run workers share)"
    return None


def state_dir_refusal(state_dir: str, launcher: str) -> str | None:
    """Scan checkpoints and reports must be on a mounted volume when runs get their own pods."""
    if not state_dir or launcher == "DefaultRunLauncher" or os.path.ismount(state_dir):
        return None
    return (
        f"runs are launched by {launcher}, but MEMBERSHIP_STATE_DIR={state_dir} is not a mounted "
        "volume: a retried scan could not resume from its checkpoints. Mount the "
        "membership-assets-state volume there (deploy/k8s/membership-state-pvc.yaml)"
    )


class RunScratchIOManager(dg.ConfigurableIOManager):
    """Pickled, encrypted step outputs under ``<base>/<run id>/<step>/<output>``."""

    base_path: str = Field(
        default="",
        description="Local directory or gs://bucket/prefix (MEMBERSHIP_SCRATCH_URL); empty = the "
        "Dagster instance's storage directory.",
    )
    keep_days: float = Field(default=7.0, description="Outputs of failed runs are kept this long.")
    credentials_json: str = Field(
        default="", description="Service-account JSON for gs:// (BIGQUERY_CREDENTIALS_PASSWORD); empty = ADC."
    )
    production: bool = Field(default=False, description="Refuse runs without MEMBERSHIP_SCRATCH_URL.")
    state_dir: str = Field(
        default="",
        description="Production: MEMBERSHIP_STATE_DIR (scan checkpoints, reports), which must be a "
        "mounted volume when runs are isolated.",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Refuse the run before its first step when what it leaves for a retry would be lost."""
        launcher = launcher_class(context.instance)
        problem = scratch_refusal(self.base_path, launcher, self.production) or (
            state_dir_refusal(self.state_dir, launcher) if self.production else None
        )
        if problem:
            raise ScratchNotSharedError(problem)

    def _store(self, instance: dg.DagsterInstance | None) -> _LocalStore | _GcsStore:
        base = self.base_path
        if not base:
            if instance is None:
                raise dg.DagsterInvariantViolationError("scratch needs a base_path outside a run")
            base = str(Path(instance.storage_directory()) / "scratch")
        return _GcsStore(base, self.credentials_json) if base.startswith("gs://") else _LocalStore(base)

    @staticmethod
    def _key(run_id: str, step_key: str, output_name: str, mapping_key: str | None = None) -> str:
        parts = [run_id, step_key, output_name] + ([mapping_key] if mapping_key else [])
        return "/".join(p.replace("/", "_") for p in parts)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        key = self._key(context.run_id, context.step_key, context.name, context.mapping_key)
        store = self._store(context.step_context.instance if context._step_context is not None else None)
        store.write(key, cipher().encrypt(pickle.dumps(obj, protocol=5)))

    def load_input(self, context: dg.InputContext) -> Any:
        upstream = context.upstream_output
        try:
            run_id = upstream.run_id if upstream is not None else None
        except dg.DagsterInvariantViolationError:
            run_id = None
        if upstream is None or run_id is None:
            raise dg.DagsterInvariantViolationError(
                f"input {context.name} has no upstream output in this run or its parents"
            )
        key = self._key(run_id, upstream.step_key, upstream.name, upstream.mapping_key)
        data = self._store(None if self.base_path else context.instance).read(key)
        if data is None:
            raise dg.DagsterInvariantViolationError(
                f"no intermediate for {upstream.step_key}.{upstream.name} of run {upstream.run_id}: "
                "intermediates live only as long as their run chain is unfinished; materialize the "
                "upstream assets in the same run"
            )
        return pickle.loads(cipher().decrypt(data))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        instance, run = context.instance, context.dagster_run
        if instance is None or run is None:
            return
        store = self._store(instance)
        if run_completed(instance, run):
            for run_id in run_lineage(instance, run):
                store.delete_run(run_id)
        store.purge_older_than(self.keep_days * 86400)


def run_completed(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Every step of ``run`` succeeded or was skipped, none failed (teardown may run per step)."""
    failed = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    if failed:
        return False
    done = {
        r.step_key
        for r in instance.all_logs(
            run.run_id, of_type={dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_SKIPPED}
        )
    }
    snapshot_id = run.execution_plan_snapshot_id
    if snapshot_id is None:
        return False
    plan = instance.get_execution_plan_snapshot(snapshot_id)
    wanted = set(plan.step_keys_to_execute or [s.key for s in plan.steps])
    return wanted <= done


def run_lineage(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """``run`` and every run it re-executed, back to the root."""
    ids, current = [run.run_id], run
    while current is not None and current.parent_run_id and current.parent_run_id not in ids:
        ids.append(current.parent_run_id)
        current = instance.get_run_by_id(current.parent_run_id)
    return ids


class ScratchSettings(Settings):
    GROUP = "Environment and state"

    url: str = setting(
        "MEMBERSHIP_SCRATCH_URL",
        "",
        kind="`gs://bucket/prefix` or path",
        shown_default="local: `$DAGSTER_HOME/storage/scratch`",
        meaning="encrypted step outputs every run worker sees (required in production: each run pod reads its parent's outputs on a retry)",
        production=True,
    )

    def io_manager(self, env: str | None = None, credentials_json: Any = "") -> RunScratchIOManager:
        """Where steps hand data to each other: gs://bucket/prefix in production, so every run
        worker sees it (with the warehouse's service account, ``credentials_json``, or ADC);
        locally the Dagster instance's storage directory."""
        production = is_production(env)
        return RunScratchIOManager(
            base_path=self.url,
            credentials_json=credentials_json if production else "",
            production=production,
            state_dir=str(state_dir()) if production else "",
        )
