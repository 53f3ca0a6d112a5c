"""Schema before code: the migration that runs before a release's code server starts (the init
container of deploy/helm/values.yaml, `python -m membership_assets migrate` in production mode)
is safe when two pods start it at once, and a no-op when the schema is already at head."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from membership_assets.registry import migrate

from .test_deployment_topology import holding_the_sync_lock, postgres_database, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.deployment]


def _migrate(url: str) -> subprocess.Popen:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEMBERS")},
        "MEMBERSHIP_ENV": "production",  # as the init container runs it: no auto-migration anywhere else
        "MEMBERS_DB_URL": url,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "membership_assets", "migrate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_two_migrations_started_at_once_upgrade_once_and_both_succeed():
    from membership_assets.registry.store import MembersStore

    with postgres_database("members_migrate") as url:
        members = url.render_as_string(hide_password=False)
        # Both pods reach the lock before either holds it: the test holds it until both wait.
        with holding_the_sync_lock(url) as waiting:
            pods = [_migrate(members), _migrate(members)]
            wait_for("both migrations to wait for the lock", lambda: waiting() == 2, timeout=60)
        outputs = [pod.communicate(timeout=120)[0] for pod in pods]
        assert [pod.returncode for pod in pods] == [0, 0], outputs
        done = sorted("upgraded from an empty database" in out for out in outputs)
        assert done == [False, True], outputs  # one applied the revisions, one found them applied
        assert any(f"already at {migrate.head()}" in out for out in outputs), outputs
        store = MembersStore.from_url(members)
        try:
            assert store.ensure_schema(migrate=False) == (migrate.head(), migrate.head())
        finally:
            store.engine.dispose()
        # Re-running (every pod restart) changes nothing.
        again = _migrate(members)
        assert again.wait(timeout=120) == 0 and "already at" in again.stdout.read()
