"""Intermediates are the run's own: concurrent runs don't interfere, re-execution reads its parent's
outputs, nothing readable is left on disk, and a run chain that succeeded leaves nothing at all."""

import time
from pathlib import Path

import dagster as dg
import pytest

from membership_assets.action_builder.checkpoint import ScanCheckpoint
from membership_assets.privacy import cipher
from membership_assets.scratch import RunScratchIOManager

MARKER = "Þórunn Member-Marker 1201743399"  # stands for a member table's contents


class Value(dg.Config):
    value: str
    fail: bool = False


@dg.asset
def source(config: Value) -> str:
    return f"{MARKER} {config.value}"


@dg.asset
def sink(context: dg.AssetExecutionContext, config: Value, source: str) -> dg.MaterializeResult:
    if config.fail:
        raise RuntimeError("sink failed")
    return dg.MaterializeResult(metadata={"seen": source.removeprefix(MARKER).strip()})


def scratch_job():
    """Module level, so Dagster can reconstruct it for real re-executions."""
    return dg.Definitions(
        assets=[source, sink],
        jobs=[dg.define_asset_job("scratch_job")],
        resources={"io_manager": RunScratchIOManager()},
        executor=dg.in_process_executor,
    ).resolve_job_def("scratch_job")


def _config(value: str, **sink) -> dict:
    return {"ops": {"source": {"config": {"value": value}}, "sink": {"config": {"value": value, **sink}}}}


def _seen(instance: dg.DagsterInstance, run_id: str) -> str:
    """What the run's sink read from its input."""
    [mat] = [
        r.asset_materialization
        for r in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        if r.asset_materialization.asset_key == dg.AssetKey("sink")
    ]
    return mat.metadata["seen"].value


def _readable_files(root: Path, text: str) -> list[Path]:
    needles = [text.encode(), b"1201743399"]
    return [p for p in root.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles)]


def _scratch_runs(home: Path) -> list[str]:
    scratch = home / "storage" / "scratch"
    return sorted(p.name for p in scratch.iterdir()) if scratch.exists() else []


@pytest.fixture
def home_instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance, home


def _run(instance, run_config) -> tuple[str, bool]:
    with dg.execute_job(dg.reconstructable(scratch_job), instance=instance, run_config=run_config) as r:
        return r.run_id, r.success


def test_reexecuting_an_old_run_reads_its_own_intermediates_not_a_newer_runs(home_instance):
    instance, home = home_instance
    old_id, ok = _run(instance, _config("a", fail=True))
    assert not ok
    new_id, ok = _run(instance, _config("b"))
    assert ok and _seen(instance, new_id) == "b"
    # The failed run's intermediates are kept for re-execution, but nobody can read them.
    assert _scratch_runs(home) == [old_id]
    assert not _readable_files(home, MARKER)
    with dg.execute_job(
        dg.reconstructable(scratch_job),
        instance=instance,
        run_config=_config("a"),
        reexecution_options=dg.ReexecutionOptions.from_failure(old_id, instance),
    ) as again:
        assert again.success
        assert _seen(instance, again.run_id) == "a"  # the old run's own input, not run b's
    assert _scratch_runs(home) == []  # the chain succeeded: its intermediates are gone


def test_two_concurrent_runs_do_not_overwrite_each_others_inputs(tmp_path):
    io = RunScratchIOManager(base_path=str(tmp_path / "scratch"))
    key = dg.AssetKey("django_members")

    def out(run_id):
        return dg.build_output_context(run_id=run_id, step_key="django_members", name="result", asset_key=key)

    # Interleaved as two overlapping runs would be: both write before either reads.
    io.handle_output(out("run-a"), f"{MARKER} a")
    io.handle_output(out("run-b"), f"{MARKER} b")
    for run_id, expected in (("run-a", "a"), ("run-b", "b")):
        ctx = dg.build_input_context(upstream_output=out(run_id), asset_key=key)
        assert io.load_input(ctx) == f"{MARKER} {expected}"
    assert not _readable_files(tmp_path, MARKER)


def test_scan_checkpoints_are_encrypted_at_rest(tmp_path):
    path = tmp_path / "cp.sqlite"
    cp = ScanCheckpoint(path, "run-1", cipher=cipher())
    cp.save("people", "p1", {"given_name": "Þórunn", "family_name": "Marker-Jónsdóttir"})
    cp.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"Marker-J" not in raw and "Þórunn".encode() not in raw
    resumed = ScanCheckpoint(path, "run-1", cipher=cipher())
    assert resumed.load("people") == {"p1": {"given_name": "Þórunn", "family_name": "Marker-Jónsdóttir"}}
    resumed.close()


def test_production_intermediates_go_where_every_run_worker_sees_them(monkeypatch):
    from membership_assets.definitions import resources_for

    monkeypatch.setenv("MEMBERSHIP_SCRATCH_URL", "gs://membership-scratch/runs")
    assert resources_for("local")["io_manager"].base_path == "gs://membership-scratch/runs"


# -- production scratch in object storage (gcp-storage-emulator) ---------------------------------

ISOLATING_LAUNCHER = {"module": "membership_assets_tests.isolated_launcher", "class": "IsolatedRunLauncher"}


def gcs_scratch_job():
    """scratch_job with its intermediates in the emulated bucket (module level: reconstructable)."""
    return dg.Definitions(
        assets=[source, sink],
        jobs=[dg.define_asset_job("scratch_job")],
        resources={"io_manager": RunScratchIOManager(base_path="gs://membership-scratch/runs")},
        executor=dg.in_process_executor,
    ).resolve_job_def("scratch_job")


def _gcs_readable(emulator, text: str) -> list[str]:
    needles = [text.encode(), b"1201743399"]
    bucket = emulator.client().bucket(emulator.bucket)
    return [n for n in emulator.names() if any(x in bucket.blob(n).download_as_bytes() for x in needles)]


def test_gcs_scratch_outlives_the_run_worker_and_is_deleted_after_success(gcs_env, tmp_path):
    """Write, re-execute from failure in another process's view of the bucket, delete on success."""
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        with dg.execute_job(
            dg.reconstructable(gcs_scratch_job), instance=instance, run_config=_config("a", fail=True)
        ) as failed:
            assert not failed.success
        names = gcs_env.names("runs/")
        assert names == [f"runs/{failed.run_id}/source/result"]
        assert not _gcs_readable(gcs_env, MARKER)  # encrypted at rest in the bucket too
        assert not (tmp_path / "storage" / "scratch").exists()  # nothing on the worker's disk
        with dg.execute_job(
            dg.reconstructable(gcs_scratch_job),
            instance=instance,
            run_config=_config("a"),
            reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance),
        ) as again:
            assert again.success
            assert _seen(instance, again.run_id) == "a"  # read the failed run's output from the bucket
        assert gcs_env.names("runs/") == []  # the chain succeeded: nothing left


def test_gcs_purge_removes_only_outputs_older_than_keep_days(gcs_env):
    io = RunScratchIOManager(base_path="gs://membership-scratch/purge")
    key = dg.AssetKey("django_members")
    for run_id in ("old-run", "new-run"):
        ctx = dg.build_output_context(run_id=run_id, step_key="django_members", name="result", asset_key=key)
        io.handle_output(ctx, f"{MARKER} {run_id}")
    store = io._store(None)
    store.purge_older_than(86400)  # a day: both are younger
    assert len(gcs_env.names("purge/")) == 2
    time.sleep(1.1)  # object timestamps have one-second resolution
    store.purge_older_than(0.5)
    assert gcs_env.names("purge/") == []
    with pytest.raises(ValueError, match="gs://bucket/prefix"):
        RunScratchIOManager(base_path="gs://membership-scratch")._store(None)  # never a whole bucket


def test_isolated_runs_refuse_pod_local_scratch_before_any_step(tmp_path):
    overrides = {"run_launcher": ISOLATING_LAUNCHER}
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides=overrides) as instance:
        # Not entered as a context: that would initialize the refused resource once more.
        result = dg.execute_job(
            dg.reconstructable(scratch_job), instance=instance, run_config=_config("a"), raise_on_error=False
        )
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        assert run.status == dg.DagsterRunStatus.FAILURE
        [refusal] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RESOURCE_INIT_FAILURE)
        message = refusal.dagster_event.event_specific_data.error.message
        assert "IsolatedRunLauncher" in message and "MEMBERSHIP_SCRATCH_URL=gs://" in message
        assert not instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
        assert not (tmp_path / "storage" / "scratch").exists()


def test_production_scratch_and_state_rules(tmp_path):
    from membership_assets.scratch import scratch_refusal, state_dir_refusal

    k8s, default = "K8sRunLauncher", "DefaultRunLauncher"
    assert scratch_refusal("gs://b/p", k8s, production=True) is None
    assert "its own pod" in scratch_refusal("", k8s, production=False)
    assert "its own pod" in scratch_refusal("/var/lib/scratch", k8s, production=True)
    assert "MEMBERSHIP_SCRATCH_URL" in scratch_refusal("", default, production=True)
    assert scratch_refusal("/srv/shared/scratch", default, production=True) is None  # one VM
    assert scratch_refusal("", default, production=False) is None  # the local default
    assert "not a mounted volume" in state_dir_refusal(str(tmp_path), k8s)  # the pod's own disk
    assert state_dir_refusal("/", k8s) is None  # a mount point
    assert state_dir_refusal(str(tmp_path), default) is None


def test_production_scratch_uses_the_bigquery_service_account(monkeypatch):
    from membership_assets.definitions import resources_for

    monkeypatch.setenv("MEMBERSHIP_SCRATCH_URL", "gs://membership-scratch/runs")
    monkeypatch.setenv("BIGQUERY_CREDENTIALS_PASSWORD", '{"type": "service_account"}')
    monkeypatch.setenv("MEMBERSHIP_STATE_DIR", "/var/lib/membership_assets")
    io = resources_for("production")["io_manager"]
    assert io.production and io.state_dir == "/var/lib/membership_assets"
    assert io.credentials_json == dg.EnvVar("BIGQUERY_CREDENTIALS_PASSWORD")  # never the value itself
