"""The deployment directory: instance config, Helm values and image agree with Dagster and each other.

What is checked here, and where each fact comes from:
- deploy/dagster.yaml and the instance config the chart would write (the blocks rendered below
  and additionalInstanceConfig) are validated by Dagster 1.13.27 itself (the installed package).
- Every key path and JSON type of deploy/helm/values.yaml against CHART_KEYS, recorded by hand from
  dagster-io/dagster: helm/dagster/values.schema.json at bdb8547fab49, the schema sources
  schema/charts/dagster/subschema/compute_log_manager.py (007010702fbd), concurrency.py and
  migrate.py (0f2d9d8ee175), and templates/configmap-instance.yaml at 835892b45aaa for the
  untyped runMonitoring/runRetries; the user deployment's initContainers from
  charts/dagster-user-deployments/templates/deployment-user.yaml (042cec960565).
- How the chart turns our run-coordinator and concurrency values into instance config, re-done in
  Python after templates/helpers/instance/_run-coordinator.tpl (091d841894c2) and
  _concurrency.tpl (99dc34fc9b04), with Helm's rule that values merge over the chart's defaults
  and null deletes a default key.
Those commits are the chart sources we could read; which of them the released chart 1.13.27 was
built from is not verified here. Not checked at all: that the chart renders (no helm binary), that
Kubernetes accepts the objects (no cluster), the chart's own default values, the image build (no
Docker daemon). docs/production.md says the same to the operator.
"""

from __future__ import annotations

import json
import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"

# The JSON types of every key path our values use. `[]` is a list item, `*` any key of a string
# map; "k8s" is a Kubernetes object the chart passes through (not looked into).
CHART_KEYS: dict[str, set[str]] = {
    "global": {"object"},
    "global.postgresqlSecretName": {"string"},
    "postgresql": {"object"},
    "postgresql.enabled": {"boolean"},
    "postgresql.postgresqlHost": {"string"},
    "postgresql.postgresqlUsername": {"string"},
    "postgresql.postgresqlDatabase": {"string"},
    "postgresql.postgresqlScheme": {"string"},
    "postgresql.service": {"object"},
    "postgresql.service.port": {"integer"},
    "generatePostgresqlPasswordSecret": {"boolean"},
    "telemetry": {"object"},
    "telemetry.enabled": {"boolean"},
    "dagster-user-deployments": {"object"},
    "dagster-user-deployments.enabled": {"boolean"},
    "dagster-user-deployments.enableSubchart": {"boolean"},
    "dagster-user-deployments.deployments": {"array"},
    "dagster-user-deployments.deployments[]": {"object"},
    "dagster-user-deployments.deployments[].name": {"string"},
    "dagster-user-deployments.deployments[].image": {"object"},
    "dagster-user-deployments.deployments[].image.repository": {"string"},
    "dagster-user-deployments.deployments[].image.tag": {"string", "integer", "null"},
    "dagster-user-deployments.deployments[].image.pullPolicy": {"Always", "IfNotPresent", "Never"},
    "dagster-user-deployments.deployments[].codeServerArgs": {"array"},
    "dagster-user-deployments.deployments[].codeServerArgs[]": {"string"},
    "dagster-user-deployments.deployments[].port": {"integer"},
    "dagster-user-deployments.deployments[].includeConfigInLaunchedRuns": {"object"},
    "dagster-user-deployments.deployments[].includeConfigInLaunchedRuns.enabled": {"boolean"},
    "dagster-user-deployments.deployments[].env": {"object", "array"},
    "dagster-user-deployments.deployments[].env.*": {"string"},
    "dagster-user-deployments.deployments[].envSecrets": {"array"},
    "dagster-user-deployments.deployments[].envSecrets[]": {"k8s"},
    "dagster-user-deployments.deployments[].volumes": {"array"},
    "dagster-user-deployments.deployments[].volumes[]": {"k8s"},
    "dagster-user-deployments.deployments[].volumeMounts": {"array"},
    "dagster-user-deployments.deployments[].volumeMounts[]": {"k8s"},
    "dagster-user-deployments.deployments[].podSecurityContext": {"k8s"},
    "dagster-user-deployments.deployments[].initContainers": {"array"},
    "dagster-user-deployments.deployments[].initContainers[]": {"k8s"},
    "computeLogManager": {"object"},
    "computeLogManager.type": {
        "NoOpComputeLogManager",
        "AzureBlobComputeLogManager",
        "GCSComputeLogManager",
        "S3ComputeLogManager",
        "CustomComputeLogManager",
    },
    "computeLogManager.config": {"object"},
    "computeLogManager.config.gcsComputeLogManager": {"object", "null"},
    "computeLogManager.config.gcsComputeLogManager.bucket": {"string", "object"},
    "computeLogManager.config.gcsComputeLogManager.prefix": {"string", "object", "null"},
    "computeLogManager.config.gcsComputeLogManager.localDir": {"string", "object", "null"},
    "computeLogManager.config.gcsComputeLogManager.jsonCredentialsEnvvar": {"string", "object", "null"},
    "computeLogManager.config.gcsComputeLogManager.uploadInterval": {"integer", "null"},
    "runLauncher": {"object"},
    "runLauncher.type": {"CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher"},
    "runLauncher.config": {"object"},
    "runLauncher.config.k8sRunLauncher": {"object", "null"},
    "runLauncher.config.k8sRunLauncher.imagePullPolicy": {"Always", "IfNotPresent", "Never"},
    "runLauncher.config.k8sRunLauncher.loadInclusterConfig": {"boolean"},
    "runLauncher.config.k8sRunLauncher.envConfigMaps": {"array"},
    "runLauncher.config.k8sRunLauncher.envSecrets": {"array"},
    "runLauncher.config.k8sRunLauncher.envSecrets[]": {"k8s"},
    "runLauncher.config.k8sRunLauncher.envVars": {"array"},
    "runLauncher.config.k8sRunLauncher.envVars[]": {"string"},
    "runLauncher.config.k8sRunLauncher.volumes": {"array"},
    "runLauncher.config.k8sRunLauncher.volumes[]": {"k8s"},
    "runLauncher.config.k8sRunLauncher.volumeMounts": {"array"},
    "runLauncher.config.k8sRunLauncher.volumeMounts[]": {"k8s"},
    "dagsterDaemon": {"object"},
    "dagsterDaemon.enabled": {"boolean"},
    "dagsterDaemon.runCoordinator": {"object"},
    "dagsterDaemon.runCoordinator.enabled": {"boolean"},
    "dagsterDaemon.runCoordinator.type": {"QueuedRunCoordinator", "CustomRunCoordinator"},
    "dagsterDaemon.runCoordinator.config": {"object"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator": {"object", "null"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.maxConcurrentRuns": {
        "integer",
        "object",
        "null",
    },
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits": {"array", "null"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[]": {"object"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[].key": {"string"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[].value": {
        "string",
        "object",
        "null",
    },
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[].value.applyLimitPerUniqueValue": {
        "boolean"
    },
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[].limit": {"integer"},
    # helm/dagster/schema/.../subschema/concurrency.py (Concurrency, ConcurrencyRuns, ConcurrencyPools)
    "concurrency": {"object"},
    "concurrency.enabled": {"boolean"},
    "concurrency.runs": {"object"},
    "concurrency.runs.maxConcurrentRuns": {"integer", "null"},
    "concurrency.runs.tagConcurrencyLimits": {"array"},
    "concurrency.runs.tagConcurrencyLimits[]": {"object"},
    "concurrency.runs.tagConcurrencyLimits[].key": {"string"},
    "concurrency.runs.tagConcurrencyLimits[].value": {"string", "object", "null"},
    "concurrency.runs.tagConcurrencyLimits[].value.applyLimitPerUniqueValue": {"boolean"},
    "concurrency.runs.tagConcurrencyLimits[].limit": {"integer"},
    "concurrency.pools": {"object"},
    "concurrency.pools.defaultLimit": {"integer", "null"},
    "concurrency.pools.granularity": {"string", "null"},
    "dagsterDaemon.runMonitoring": {"object"},
    "dagsterDaemon.runMonitoring.enabled": {"boolean"},
    "dagsterDaemon.runMonitoring.startTimeoutSeconds": {"integer"},
    "dagsterDaemon.runMonitoring.cancelTimeoutSeconds": {"integer"},
    "dagsterDaemon.runMonitoring.maxResumeRunAttempts": {"integer"},
    "dagsterDaemon.runMonitoring.pollIntervalSeconds": {"integer"},
    "dagsterDaemon.runMonitoring.freeSlotsAfterRunEndSeconds": {"integer"},
    "dagsterDaemon.runRetries": {"object"},
    "dagsterDaemon.runRetries.enabled": {"boolean"},
    "additionalInstanceConfig": {"instance"},  # Dagster instance config, checked by Dagster below
    "retention": {"object"},
    "retention.enabled": {"boolean"},
    "retention.schedule": {"object"},
    "retention.schedule.purgeAfterDays": {"integer", "object"},
    "retention.sensor": {"object"},
    "retention.sensor.purgeAfterDays": {"integer", "object"},
    **{
        f"retention.sensor.purgeAfterDays.{k}": {"integer"}
        for k in ("skipped", "success", "failure", "started")
    },
}
# Keys the chart requires in these objects (values.schema.json "required").
CHART_REQUIRED = {
    "dagster-user-deployments.deployments[]": {"name", "image", "port"},
    "dagster-user-deployments.deployments[].image": {"repository", "pullPolicy"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[]": {"key", "limit"},
    "concurrency.runs.tagConcurrencyLimits[]": {"key", "limit"},
    "retention.sensor.purgeAfterDays": {"skipped", "success", "failure", "started"},
    "computeLogManager": {"type", "config"},
    "computeLogManager.config.gcsComputeLogManager": {"bucket"},
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {str: "string", dict: "object", list: "array"}[type(value)]


def chart_violations(values: Any, path: str = "") -> list[str]:
    """Every key path of ``values`` the chart does not know, or whose value has another type."""
    found: list[str] = []
    for key, value in values.items() if isinstance(values, dict) else []:
        child = f"{path}.{key}" if path else key
        if child not in CHART_KEYS and f"{path}.*" in CHART_KEYS:
            child = f"{path}.*"
        found += _check(child, value)
    return found


def _check(path: str, value: Any) -> list[str]:
    allowed = CHART_KEYS.get(path)
    if allowed is None:
        return [f"{path}: not a key of the chart"]
    if allowed & {"k8s", "instance"}:
        return []
    kind = _json_type(value)
    if kind not in allowed and not (kind == "string" and value in allowed):
        return [f"{path}: {kind} {value!r} where the chart takes {sorted(allowed)}"]
    missing = CHART_REQUIRED.get(path, set()) - set(value) if isinstance(value, dict) else set()
    found = [f"{path}: missing {sorted(missing)}"] if missing else []
    if isinstance(value, list):
        for item in value:
            found += _check(f"{path}[]", item)
    elif isinstance(value, dict):
        found += chart_violations(value, path)
    return found


def helm_values() -> dict:
    return yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


def instance_yaml() -> dict:
    return yaml.safe_load((DEPLOY / "dagster.yaml").read_text())


def test_helm_values_use_only_the_charts_keys_with_its_types():
    assert chart_violations(helm_values()) == []


def test_the_chart_check_catches_typos_and_wrong_types():
    values = helm_values()
    values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["maxConcurentRuns"] = 4
    values["dagster-user-deployments"]["deployments"][0]["port"] = "4000"
    values["retention"]["sensor"]["purgeAfterDays"].pop("started")
    assert chart_violations(values) == [
        "dagster-user-deployments.deployments[].port: string '4000' where the chart takes ['integer']",
        "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.maxConcurentRuns: not a key of the chart",
        "retention.sensor.purgeAfterDays: missing ['started']",
    ]


def test_helm_values_carry_the_instance_settings_of_dagster_yaml():
    """The chart writes its own dagster.yaml: the same limits, retries, monitoring and retention."""
    values, instance = helm_values(), instance_yaml()
    # Limits in one place only: the chart and Dagster refuse them in the run coordinator as well.
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert set(queued.values()) == {None}  # null: deletes any chart default (see the rendering test)
    concurrency, runs, pools = (
        values["concurrency"],
        instance["concurrency"]["runs"],
        instance["concurrency"]["pools"],
    )
    assert concurrency["enabled"]
    assert concurrency["runs"]["maxConcurrentRuns"] == runs["max_concurrent_runs"]
    assert concurrency["runs"]["tagConcurrencyLimits"] == runs["tag_concurrency_limits"]
    assert concurrency["pools"]["defaultLimit"] == pools["default_limit"]
    assert concurrency["pools"]["granularity"] == pools["granularity"]
    assert values["additionalInstanceConfig"]["run_retries"] == instance["run_retries"]
    assert not values["dagsterDaemon"]["runRetries"]["enabled"]  # else the chart writes a 2nd block
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    for key, value in instance["run_monitoring"].items():
        if key == "max_runtime_seconds":  # configmap-instance.yaml (835892b45aaa) does not write it
            continue
        camel = re.sub(r"_(\w)", lambda m: m.group(1).upper(), key)
        assert monitoring[camel] == value, key
    assert (
        values["retention"]["schedule"]["purgeAfterDays"]
        == instance["retention"]["schedule"]["purge_after_days"]
    )
    sensor = values["retention"]["sensor"]["purgeAfterDays"]
    assert {k: sensor[k] for k in instance["retention"]["sensor"]["purge_after_days"]} == (
        instance["retention"]["sensor"]["purge_after_days"]
    )
    assert values["telemetry"]["enabled"] == instance["telemetry"]["enabled"]
    assert (
        values["postgresql"]["postgresqlScheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]
    )


def test_production_instance_keeps_the_local_instance_settings():
    """deploy/dagster.yaml is the project's dagster.yaml plus Postgres and the queue."""
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    production = instance_yaml()
    for key, value in local.items():
        assert production[key] == value, key
    assert set(production) - set(local) == {"storage", "compute_logs", "run_coordinator"}


@pytest.mark.parametrize("name", ["deploy", "helm"])
def test_instance_config_is_valid_for_dagster(name, tmp_path):
    from dagster._core.instance.config import dagster_instance_config

    config = instance_yaml() if name == "deploy" else helm_values()["additionalInstanceConfig"]
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    dagster_instance_config(str(tmp_path))  # raises on any unknown key or wrong type


def dockerfile_lines() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")  # join continued lines
    return [" ".join(line.split()) for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_image_installs_the_locked_versions_without_dev_extras_and_runs_as_non_root():
    lines = dockerfile_lines()
    [install] = [line for line in lines if "pip install" in line]
    assert "pip install -c constraints.txt ." in install  # the project, not editable, no extras
    assert "-e " not in install and "[dev]" not in install and "|| true" not in install
    assert not any("|| true" in line or "bootstrap.sh" in line for line in lines)
    copies = [line for line in lines if line.startswith("COPY ") and "--from=" not in line]
    assert any("constraints.txt" in line for line in copies)
    assert not any("membership_assets_tests" in line or "scripts" in line for line in copies)
    # The run stage: only the built venv, then a non-root user to the end.
    stages = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    assert len(stages) == 2
    final = lines[stages[-1] :]
    assert [line for line in final if line.startswith("COPY ")] == ["COPY --from=build /opt/venv /opt/venv"]
    users = [line for line in final if line.startswith("USER ")]
    assert users == ["USER dagster"] and final.index("USER dagster") < len(final) - 1
    [cmd] = [json.loads(line[4:]) for line in lines if line.startswith("CMD ")]
    assert cmd[:3] == ["dagster", "code-server", "start"]
    deployment = helm_values()["dagster-user-deployments"]["deployments"][0]
    assert cmd[cmd.index("-p") + 1] == str(deployment["port"]) and "EXPOSE 4000" in lines
    assert all(arg in cmd for arg in deployment["codeServerArgs"])  # the chart starts the same server


def locked_versions() -> dict[str, str]:
    pins = [line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line]
    return {_canonical(name): version.strip() for name, version in pins}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_ci_runs_exactly_the_locked_versions():
    """CI installs with -c constraints.txt (bootstrap.sh), so the image gets what CI tested. A
    dependency added to pyproject.toml without `bash scripts/lock.sh` fails here."""
    locked = locked_versions()
    installed = {
        _canonical(d.metadata["Name"]): d.version
        for d in metadata.distributions()
        if _canonical(d.metadata["Name"]) not in {"membership-assets", "pip", "setuptools", "wheel"}
    }
    assert {n: v for n, v in installed.items() if locked.get(n) != v} == {}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    direct = {_canonical(re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0]) for req in wanted}
    assert direct - set(locked) == set()
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert "-c constraints.txt -e '.[dev]'" in bootstrap and "constraints.txt -nt" in bootstrap


def test_image_tags_are_immutable_and_the_migration_runs_the_same_image():
    values = helm_values()
    deployment = values["dagster-user-deployments"]["deployments"][0]
    image = deployment["image"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert image["tag"] == version and image["pullPolicy"] == "IfNotPresent"
    assert values["runLauncher"]["config"]["k8sRunLauncher"]["imagePullPolicy"] == "IfNotPresent"
    [migrate] = deployment["initContainers"]
    assert migrate["image"] == f"{image['repository']}:{image['tag']}"
    assert migrate["command"] == ["python", "-m", "membership_assets", "migrate"]
    assert {"secretRef": {"name": "membership-assets-secrets"}} in migrate["envFrom"]
    assert {"name": "MEMBERSHIP_ENV", "value": "production"} in migrate["env"]
    assert not [v for v in _strings(values) if v == "latest" or v.endswith(":latest")]


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_runs_share_scratch_in_object_storage_and_state_on_a_declared_volume():
    values = helm_values()
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["env"]["MEMBERSHIP_SCRATCH_URL"].startswith("gs://")
    pvc = yaml.safe_load((DEPLOY / "k8s" / "membership-state-pvc.yaml").read_text())
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    for where in (deployment, launcher):  # the code server and every run pod
        [volume] = where["volumes"]
        assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        [mount] = where["volumeMounts"]
        assert mount == {"name": volume["name"], "mountPath": deployment["env"]["MEMBERSHIP_STATE_DIR"]}


def test_compute_logs_go_to_cloud_storage_in_both_instance_configs():
    instance = instance_yaml()["compute_logs"]
    assert (instance["module"], instance["class"]) == (
        "dagster_gcp.gcs.compute_log_manager",
        "GCSComputeLogManager",
    )
    chart = helm_values()["computeLogManager"]
    assert chart["type"] == "GCSComputeLogManager"
    gcs = chart["config"]["gcsComputeLogManager"]
    assert gcs["prefix"] == instance["config"]["prefix"]
    assert gcs["uploadInterval"] == instance["config"]["upload_interval"]
    bucket = helm_values()["dagster-user-deployments"]["deployments"][0]["env"]["MEMBERSHIP_SCRATCH_URL"]
    assert bucket.removeprefix("gs://").split("/")[0] == gcs["bucket"]  # one bucket, two prefixes


# -- the instance config the chart writes from our run-coordinator and concurrency values ---------


def helm_merge(defaults: Any, values: Any) -> Any:
    """Helm's coalescing of user values over chart defaults: maps merge, null deletes a key."""
    if not (isinstance(defaults, dict) and isinstance(values, dict)):
        return values
    merged = dict(defaults)
    for key, value in values.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = helm_merge(defaults.get(key), value)
    return merged


def rendered_limits(values: dict, chart_defaults: dict) -> dict:
    """The run_coordinator and concurrency blocks of the chart's dagster.yaml, as its templates
    (_run-coordinator.tpl, _concurrency.tpl) write them; raises where _concurrency.tpl `fail`s."""
    merged = helm_merge(chart_defaults, values)
    queued = merged["dagsterDaemon"]["runCoordinator"]["config"].get("queuedRunCoordinator") or {}
    coordinator: dict[str, Any] = {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}
    config = {}
    if queued.get("maxConcurrentRuns"):  # Go templates: -1 is true, 0 and missing are not
        config["max_concurrent_runs"] = queued["maxConcurrentRuns"]
    if queued.get("tagConcurrencyLimits"):
        config["tag_concurrency_limits"] = queued["tagConcurrencyLimits"]
    if config:
        coordinator["config"] = config
    concurrency = merged.get("concurrency", {})
    runs, pools = concurrency.get("runs", {}), concurrency.get("pools", {})
    if runs.get("maxConcurrentRuns") is not None and queued.get("maxConcurrentRuns") is not None:
        raise ValueError(
            "chart: Cannot set both concurrency.runs.maxConcurrentRuns and queuedRunCoordinator's"
        )
    block: dict[str, Any] = {}
    rendered_pools = {"default_limit": pools.get("defaultLimit"), "granularity": pools.get("granularity")}
    if any(v is not None for v in rendered_pools.values()):
        block["pools"] = {k: v for k, v in rendered_pools.items() if v is not None}
    rendered_runs = {
        "max_concurrent_runs": runs.get("maxConcurrentRuns"),
        "tag_concurrency_limits": runs.get("tagConcurrencyLimits") or None,
    }
    if any(v is not None for v in rendered_runs.values()):
        block["runs"] = {k: v for k, v in rendered_runs.items() if v is not None}
    return {"run_coordinator": coordinator, **({"concurrency": block} if concurrency.get("enabled") else {})}


def _dagster_accepts(config: dict, tmp_path: Path) -> None:
    from dagster._core.instance.config import dagster_instance_config

    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    dagster_instance_config(str(tmp_path))  # raises on any unknown key, wrong type or conflict


# Chart defaults the values must survive: none, and the pattern that broke an earlier chart (a
# run-coordinator max_concurrent_runs of -1 next to the pools).
CHART_DEFAULTS = [
    {},
    {"dagsterDaemon": {"runCoordinator": {"config": {"queuedRunCoordinator": {"maxConcurrentRuns": -1}}}}},
    {"dagsterDaemon": {"runCoordinator": {"config": {"queuedRunCoordinator": {"tagConcurrencyLimits": []}}}}},
]


@pytest.mark.parametrize("defaults", CHART_DEFAULTS, ids=["no-default", "default-minus-one", "default-empty"])
def test_the_charts_limits_blocks_are_accepted_by_dagster_whatever_the_charts_defaults(defaults, tmp_path):
    rendered = rendered_limits(helm_values(), defaults)
    assert "config" not in rendered["run_coordinator"]
    assert rendered["concurrency"]["pools"] == instance_yaml()["concurrency"]["pools"]
    assert rendered["concurrency"]["runs"] == instance_yaml()["concurrency"]["runs"]
    _dagster_accepts({**rendered, **helm_values()["additionalInstanceConfig"]}, tmp_path)


def test_without_the_nulls_a_chart_default_of_minus_one_is_what_dagster_refuses(tmp_path):
    from dagster._core.errors import DagsterInvalidConfigError

    values = helm_values()
    values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"] = {}
    values["concurrency"]["runs"].pop("maxConcurrentRuns")  # else the chart itself fails
    rendered = rendered_limits(values, CHART_DEFAULTS[1])
    assert rendered["run_coordinator"]["config"] == {"max_concurrent_runs": -1}
    with pytest.raises(DagsterInvalidConfigError, match="incompatible with the `concurrency > runs`"):
        _dagster_accepts(rendered, tmp_path)


def test_secrets_come_from_a_kubernetes_secret_as_password_variables():
    values = helm_values()
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert not [k for k in deployment["env"] if k.endswith("_PASSWORD")]  # never in plain values
    secret = {"name": "membership-assets-secrets"}
    assert secret in deployment["envSecrets"]
    assert secret in values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]
    assert deployment["env"]["MEMBERSHIP_ENV"] == "production"


def test_dev_starts_the_stand_ins_and_dagster_dev_with_the_projects_instance(tmp_path, monkeypatch):
    import subprocess

    import membership_assets.__main__ as cli

    seen: dict[str, Any] = {"sims": "never started"}

    class Simulators:  # the real ones bind the fixed ports 8765/8766, which tests must not
        action_builder = django = None

        def __enter__(self):
            seen["sims"] = "up"
            return self

        def __exit__(self, *exc):
            seen["sims"] = "down"

    class DagsterDev:
        pid = 2**22 + 7  # no such process: nothing of it is left to stop

        def __init__(self, command, env, **popen_options):
            home = Path(env["DAGSTER_HOME"])
            seen.update(
                command=command, config=(home / "dagster.yaml").read_text(), sims_meanwhile=seen["sims"]
            )

        def wait(self, timeout=None):
            return 0

        poll = wait

    monkeypatch.setattr("membership_assets.simulators.local.LocalSimulators", Simulators)
    monkeypatch.setattr(subprocess, "Popen", DagsterDev)
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry: {enabled: true}\n")  # a stale copy is replaced
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MEMBERSHIP_ENV", "local")

    assert cli.main(["dev", "--", "-p", "3001"]) == 0
    assert Path(seen["command"][0]).name == "dagster"
    assert seen["command"][1:] == ["dev", "-m", "membership_assets.definitions", "-p", "3001"]
    assert seen["config"] == (ROOT / "dagster.yaml").read_text()
    assert (seen["sims_meanwhile"], seen["sims"]) == ("up", "down")
