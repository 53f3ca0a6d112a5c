"""The receiver as deployed: the Kubernetes manifests agree with the image, the Helm values'
secret and the receiver's own limits; the documented Django snippet retries a 429 as told."""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
import re
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from membership_assets.registry.webhook import SyncApiSettings
from membership_assets_tests.sync_api_process import STRONG_SECRET, SyncApiProcess, production_env

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "deploy" / "k8s" / "sync-api.yaml"
DEFAULTS = SyncApiSettings(members_db_url="", webhook_secret="")


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text())}


@pytest.fixture(scope="module")
def container(manifests) -> dict:
    [c] = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


def helm_user_deployment() -> dict:
    values = yaml.safe_load((ROOT / "deploy" / "helm" / "values.yaml").read_text())
    return values["dagster-user-deployments"]["deployments"][0]


def test_the_deployment_runs_the_receiver_from_the_code_location_image(container):
    assert container["command"][:4] == ["python", "-m", "membership_assets", "sync-api"]
    image = helm_user_deployment()["image"]
    assert container["image"] == f"{image['repository']}:{image['tag']}"  # the same immutable tag
    port = container["ports"][0]["containerPort"]
    assert container["command"][-2:] == ["--port", str(port)] and "0.0.0.0" in container["command"]


def test_probes_health_and_readiness(container):
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    readiness = container["readinessProbe"]
    assert readiness["httpGet"]["path"] == "/readyz"
    assert (
        readiness["timeoutSeconds"] > DEFAULTS.db_timeout
    )  # a slow database answers 503, not a probe timeout


def test_it_runs_non_root_read_only_with_resources(manifests, container):
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    dockerfile_uid = re.search(r"--uid (\d+)", (ROOT / "deploy" / "Dockerfile").read_text()).group(1)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == dockerfile_uid
    assert pod["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])


def test_secrets_come_from_the_helm_values_secret(container):
    secret_name = helm_user_deployment()["envSecrets"][0]["name"]
    env = {e["name"]: e for e in container["env"]}
    refs = {n: e["valueFrom"]["secretKeyRef"] for n, e in env.items() if "valueFrom" in e}
    assert refs and all(r["name"] == secret_name and r["key"] == n for n, r in refs.items())
    required = {n for n, r in refs.items() if not r.get("optional")}
    assert required == {"REGISTRY_WEBHOOK_SECRET_PASSWORD", "MEMBERS_DB_URL", "MEMBERS_DB_PASSWORD"}
    assert env["MEMBERSHIP_ENV"]["value"] == "production"
    source = (ROOT / "membership_assets" / "settings.py").read_text()
    source += (ROOT / "membership_assets" / "registry" / "settings.py").read_text()
    source += (ROOT / "membership_assets" / "registry" / "webhook.py").read_text()
    assert all(f'"{name}"' in source for name in env if name != "DAGSTER_HOME"), "a variable nobody reads"


def test_the_service_and_ingress_reach_the_container_with_the_receivers_limits(manifests, container):
    service, ingress = manifests["Service"], manifests["Ingress"]
    labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    assert all(p["backend"]["service"]["name"] == service["metadata"]["name"] for p in paths)
    assert {p["path"] for p in paths} == {"/api/", "/admin"}  # probes are not published
    notes = ingress["metadata"]["annotations"]
    body_limit = notes["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert int(body_limit.rstrip("k")) * 1024 <= DEFAULTS.max_body_bytes
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) <= DEFAULTS.body_timeout
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SYNC_API_TRUSTED_PROXIES"], "behind the ingress, the forwarded address must be trusted"
    assert int(env["SYNC_API_MAX_CONNECTIONS"]) < 65536


# -- the Django side --------------------------------------------------------------------------


def snippet_post(markdown: str):
    """``_post`` of the documented Django signals snippet, as a function."""
    block = re.search(r"```python\n(.*?membership/signals\.py.*?)```", markdown, re.S).group(1)
    source = textwrap.dedent(block)
    tree = ast.parse(source)
    [func] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_post"]
    return ast.get_source_segment(source, func), source


DJANGO_GUIDE = ROOT / "docs" / "django-integration.md"


def test_the_snippet_is_written_once_and_linked():
    """One copy to keep right: the Django guide holds the file, the other pages link to it."""
    holders = [
        p.name
        for p in sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
        if "membership/signals.py:" in p.read_text()
    ]
    assert holders == ["django-integration.md"]
    snippet_post(DJANGO_GUIDE.read_text())  # it parses and has _post
    assert "(django-integration.md)" in (ROOT / "docs" / "sync-api.md").read_text()
    assert "(docs/django-integration.md)" in (ROOT / "README.md").read_text()


def test_the_django_snippet_waits_out_a_429_and_delivers(tmp_path):
    from membership_assets_tests.test_sync_api_hardening import migrated, pending

    url = f"sqlite:///{tmp_path / 'members.sqlite'}"
    migrated(url).engine.dispose()
    func_source, _ = snippet_post(DJANGO_GUIDE.read_text())
    # One webhook, then Retry-After: 2 (a Django bulk save hitting the flood limit).
    env = production_env(url, SYNC_API_RATE_BURST="1", SYNC_API_RATE_LIMIT="0.5")
    with SyncApiProcess(env) as server:
        namespace = {
            "hashlib": hashlib,
            "hmac": hmac,
            "requests": requests,
            "time": time,
            "URL": f"{server.base}/api/webhooks/registry",
            "SECRET": STRONG_SECRET.encode(),
        }
        exec(compile(func_source, "docs/django-integration.md", "exec"), namespace)
        started = time.perf_counter()
        for member_id in (1, 2):
            body = json.dumps(
                {
                    "event_id": str(uuid.uuid4()),
                    "event": "member.saved",
                    "member_id": member_id,
                    "occurred_at": "2026-06-01T12:00:00+00:00",
                }
            ).encode()
            namespace["_post"](body)
        elapsed = time.perf_counter() - started
        log = server.log
    assert pending(url) == 2  # the second was answered 429 first, then delivered
    assert "rate_limited" in log and elapsed >= 1.9


def test_the_receiver_benchmark_runs(capsys):
    from benchmarks.webhook_receiver import main

    assert main(["--seconds", "1", "--clients", "2", "--requests", "10", "--idle", "20"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["throughput"]["accepted"] > 0 and set(result["throughput"]["statuses"]) == {"202"}
    idle = result["latency_with_idle_connections"]
    assert idle["statuses"] == {"202": 10} and idle["idle_open_at_end"] == 20
    assert len(result["machine"]["load_average_before"]) == 3
