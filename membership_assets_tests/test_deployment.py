"""The deployment directory: instance config, Helm values and image agree with Dagster and each other."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"

# Facts from Dagster's official chart (dagster-io/dagster, helm/dagster/values.schema.json at
# bdb8547fab49, and templates/configmap-instance.yaml for the untyped runMonitoring/runRetries
# objects): the JSON types of every key path our values use. `[]` is a list item, `*` any key of a
# string map; "k8s" is a Kubernetes object the chart passes through (not looked into).
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
    assert not values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
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
    assert set(production) - set(local) == {"storage", "run_coordinator"}


@pytest.mark.parametrize("name", ["deploy", "helm"])
def test_instance_config_is_valid_for_dagster(name, tmp_path):
    from dagster._core.instance.config import dagster_instance_config

    config = instance_yaml() if name == "deploy" else helm_values()["additionalInstanceConfig"]
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    dagster_instance_config(str(tmp_path))  # raises on any unknown key or wrong type


def test_image_runs_the_code_server_as_non_root_after_the_ci_install():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines() if line.strip() and not line.startswith("#")]
    user = lines.index("USER dagster")
    assert any(
        "-o dagster" in line and "/opt/membership_assets" in line for line in lines[:user]
    )  # .venv goes here
    assert lines.index("RUN bash scripts/bootstrap.sh") > user  # installed as, and run as, non-root
    assert not any(line.startswith("USER") for line in lines[user + 1 :])
    [cmd] = [json.loads(line[4:]) for line in lines if line.startswith("CMD ")]
    assert cmd[:3] == ["dagster", "code-server", "start"]
    deployment = helm_values()["dagster-user-deployments"]["deployments"][0]
    assert cmd[cmd.index("-p") + 1] == str(deployment["port"]) and "EXPOSE 4000" in lines
    assert all(arg in cmd for arg in deployment["codeServerArgs"])  # the chart starts the same server


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
