"""The receiver's configuration, checked at startup of the real process: no public or weak
credentials where the internet can reach it, every problem listed at once, secret rotation."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import requests

from membership_assets.registry.credentials import LOCAL_API_KEY, LOCAL_WEBHOOK_SECRET, SHIPPED_CONSTANTS
from membership_assets_tests.sync_api_process import (
    STRONG_KEY,
    STRONG_SECRET,
    SyncApiProcess,
    event_body,
    production_env,
    run_to_exit,
    server_env,
    signed_api_headers,
    webhook_headers,
)

ROOT = Path(__file__).resolve().parent.parent
SCANNED = [ROOT / "membership_assets", ROOT / "benchmarks"]  # what runs servers and simulators
CREDENTIAL_NAME = ("TOKEN", "SECRET", "PASSWORD", "API_KEY")
NOT_VALUES = ("_HEADER", "_ENV", "_VAR", "_PREFIX", "_PATH", "_NAME")  # names of things, not credentials


def test_every_credential_like_constant_in_the_code_is_known_as_public():
    """One list of shipped constants: a new simulator token or default key must join it."""
    found = set()
    for path in (p for d in SCANNED for p in d.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                value = node.value.value
                credential = [
                    n
                    for n in names
                    if any(p in n.upper() for p in CREDENTIAL_NAME) and not n.endswith(NOT_VALUES)
                ]
                # An upper-case value is an environment variable's name, not a credential.
                if (
                    credential
                    and isinstance(value, str)
                    and len(value) >= 8
                    and " " not in value
                    and not value.isupper()
                ):
                    found.add((path.name, credential[0], value))
    missing = {f for f in found if f[2] not in SHIPPED_CONSTANTS}
    assert not missing, f"credential-like constants missing from SHIPPED_CONSTANTS: {missing}"
    assert LOCAL_WEBHOOK_SECRET in SHIPPED_CONSTANTS and LOCAL_API_KEY in SHIPPED_CONSTANTS


def test_production_lists_every_problem_at_once_naming_each_variable(store, members_db_url):
    env = production_env(
        members_db_url,
        REGISTRY_WEBHOOK_SECRET_PASSWORD=LOCAL_WEBHOOK_SECRET,  # the README's local constants
        SYNC_API_KEY_PASSWORD=LOCAL_API_KEY,
        REGISTRY_WEBHOOK_SECRET_PREVIOUS_PASSWORD="x",  # a 1-character previous secret
        SYNC_API_RATE_LIMIT="0",
        SYNC_API_PORT="\u00b2",
        SYNC_API_ALLOWED_IPS="10.0.0.0/8,not-a-network",
    )
    result = run_to_exit(env, args=())  # the port from SYNC_API_PORT (refused before binding)
    assert result.returncode == 2
    err = result.stderr
    for variable in (
        "REGISTRY_WEBHOOK_SECRET_PASSWORD is a constant shipped in the code",
        "SYNC_API_KEY_PASSWORD is a constant shipped in the code",
        "REGISTRY_WEBHOOK_SECRET_PREVIOUS_PASSWORD is shorter than 32 characters",
        "SYNC_API_RATE_LIMIT=0 must be",
        "SYNC_API_PORT=(unprintable) must be",
        "SYNC_API_ALLOWED_IPS: 'not-a-network' is not an IP address",
    ):
        assert variable in err
    assert "Traceback" not in err and "Uvicorn running" not in err


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            {"REGISTRY_WEBHOOK_SECRET_PASSWORD": "s", "SYNC_API_KEY_PASSWORD": ""},
            ["shorter than 32", "set but empty"],
        ),
        ({"REGISTRY_WEBHOOK_SECRET_PASSWORD": "a" * 40}, ["fewer than 8 distinct"]),
        ({"SYNC_API_KEY_PASSWORD": "prefix-" + LOCAL_API_KEY + "-0123456789"}, ["constant shipped"]),
    ],
    ids=["one_char_secret_blank_key", "repetitive_secret", "public_key_inside"],
)
def test_production_refuses_weak_credentials(store, members_db_url, overrides, expected):
    result = run_to_exit(production_env(members_db_url, **overrides))
    assert result.returncode == 2
    assert all(e in result.stderr for e in expected), result.stderr


def test_local_constants_are_refused_off_loopback_whatever_the_environment(tmp_path):
    """MEMBERSHIP_ENV unset and SYNC_API_HOST=0.0.0.0: the public local key must not guard it."""
    env = server_env(SYNC_API_HOST="0.0.0.0", MEMBERSHIP_STATE_DIR=str(tmp_path))
    result = run_to_exit(env)
    assert result.returncode == 2
    assert "REGISTRY_WEBHOOK_SECRET_PASSWORD is a constant shipped in the code" in result.stderr
    assert "SYNC_API_KEY_PASSWORD is a constant shipped in the code" in result.stderr
    assert "on 0.0.0.0 (not loopback)" in result.stderr


def test_local_constants_still_serve_on_loopback(tmp_path):
    with SyncApiProcess(server_env(MEMBERSHIP_STATE_DIR=str(tmp_path))) as server:
        body = event_body()
        resp = requests.post(
            f"{server.base}/api/webhooks/registry",
            data=body,
            headers=webhook_headers(body, secret=LOCAL_WEBHOOK_SECRET),
            timeout=10,
        )
        assert resp.status_code == 202
        status = requests.get(
            f"{server.base}/api/sync/status", headers={"X-Api-Key": LOCAL_API_KEY}, timeout=10
        )
        assert status.status_code == 200


def test_rotation_accepts_the_current_and_the_previous_secret_and_key(store, members_db_url):
    previous_secret, previous_key = STRONG_SECRET[::-1] + "-old", STRONG_KEY[::-1] + "-old"
    env = production_env(
        members_db_url,
        REGISTRY_WEBHOOK_SECRET_PREVIOUS_PASSWORD=previous_secret,
        SYNC_API_KEY_PREVIOUS_PASSWORD=previous_key,
    )
    with SyncApiProcess(env) as server:
        hook = f"{server.base}/api/webhooks/registry"
        for secret in (STRONG_SECRET, previous_secret):
            body = event_body()
            assert (
                requests.post(hook, data=body, headers=webhook_headers(body, secret), timeout=10).status_code
                == 202
            )
        body = event_body()
        wrong = webhook_headers(body, secret=STRONG_SECRET + "x")
        assert requests.post(hook, data=body, headers=wrong, timeout=10).status_code == 401
        for key in (STRONG_KEY, previous_key):
            r = requests.get(f"{server.base}/api/sync/status", headers={"X-Api-Key": key}, timeout=10)
            assert r.status_code == 200
        path = "/api/sync/logs?limit=3"
        for secret in (STRONG_SECRET, previous_secret):
            r = requests.get(
                server.base + path, headers=signed_api_headers("GET", path, secret=secret), timeout=10
            )
            assert r.status_code == 200
    assert store.engine  # the migrated database the production server required


def test_the_connection_limit_stays_below_the_file_limit():
    import resource

    from membership_assets.registry.sync_server import FD_RESERVE, connection_limit

    limit = connection_limit(10**9)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert 1 <= limit <= soft - FD_RESERVE
    assert connection_limit(100) == 100


def test_a_flood_of_log_lines_is_cut_to_a_budget_and_counted():
    import logging

    from membership_assets.registry.sync_server import BoundedFormatter, LogBudget

    budget = LogBudget(per_second=5)
    records = [
        logging.LogRecord("x", logging.WARNING, "f", 1, "rejected: %s", ("bad",), None) for _ in range(50)
    ]
    for r in records:
        r.created = 1000.5
    passed = [r for r in records if budget.filter(r)]
    assert len(passed) == 5
    later = logging.LogRecord("x", logging.WARNING, "f", 1, "rejected: %s", ("bad",), None)
    later.created = 1001.2
    assert budget.filter(later) and "45 log lines dropped" in later.getMessage()
    error = logging.LogRecord("x", logging.ERROR, "f", 1, "x\n\x1b[31m" + "y" * 5000, (), None)
    line = BoundedFormatter().format(error)
    assert "\n" not in line and "\x1b" not in line and len(line) <= 600
