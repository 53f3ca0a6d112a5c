"""Shared fixtures: simulators over real HTTP, resources pointing at them, temporary state."""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from membership_assets.action_builder.resources import ActionBuilderResource
from membership_assets.definitions import build_definitions
from membership_assets.notify.resources import FileOutboxEmail, Recipients
from membership_assets.simulators.action_builder import ActionBuilderSimulator
from membership_assets.simulators.action_builder_seed import CampaignData, SeedConfig, generate_campaign
from membership_assets.warehouse.resources import DuckDBWarehouse
from membership_assets_tests.browser import browser, page  # noqa: F401  (fixtures)
from membership_assets_tests.gcs import gcs, gcs_env  # noqa: F401  (fixtures)

# Pseudonyms and scratch encryption need a key; a test key instead of a generated ./.local one.
os.environ.setdefault("MEMBERSHIP_PRIVACY_KEY_PASSWORD", "test-only-privacy-key")


@pytest.fixture
def ab_campaign() -> CampaignData:
    return generate_campaign(SeedConfig(people=300, seed=11))


@pytest.fixture
def ab_sim(ab_campaign):
    with ActionBuilderSimulator(ab_campaign, rate_limit=None) as sim:
        yield sim


def ab_resource_for(sim: ActionBuilderSimulator, tmp_path: Path, **overrides) -> ActionBuilderResource:
    kwargs = dict(
        credentials=sim.credentials_json,
        base_url=sim.base_url,
        campaign_id=sim.data.campaign_id,
        rate_limit=2000.0,
        checkpoint_path=str(tmp_path / "checkpoints.sqlite"),
        reports_dir=str(tmp_path / "reports"),
        max_attempts=3,
    )
    kwargs.update(overrides)
    return ActionBuilderResource(**kwargs)


@pytest.fixture
def ab_resource(ab_sim, tmp_path) -> ActionBuilderResource:
    return ab_resource_for(ab_sim, tmp_path)


@pytest.fixture
def outbox(tmp_path) -> Path:
    return tmp_path / "outbox"


def alert_admins_of(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult, defs: dg.Definitions):
    """Run the failure-alert sensor for a failed run, as the daemon would."""
    from membership_assets.notify.sensors import email_admins_on_failure

    [failure] = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    ctx = dg.build_run_status_sensor_context(
        sensor_name="email_admins_on_failure",
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),  # with tags added while it ran
        dagster_event=failure.dagster_event,
        resources={"email": defs.resources["email"], "recipients": defs.resources["recipients"]},
    ).for_run_failure()
    email_admins_on_failure(ctx)


@pytest.fixture
def alert_admins(instance):
    return lambda result, defs: alert_admins_of(instance, result, defs)


@pytest.fixture
def warehouse(tmp_path) -> DuckDBWarehouse:
    return DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))


@pytest.fixture
def local_resources(ab_resource, outbox, warehouse, tmp_path) -> dict:
    from membership_assets.registry.resources import (
        DjangoRegistryResource,
        MembersDatabase,
        RegistrySyncPolicy,
    )

    return {
        "action_builder": ab_resource,
        "email": FileOutboxEmail(directory=str(outbox)),
        "recipients": Recipients(
            tag_report="organizers@example.org, steward@example.org", admins="admins@example.org"
        ),
        "warehouse": warehouse,
        # The registry's resources, never reached by Action Builder jobs (that port is closed).
        "django": DjangoRegistryResource(base_url="http://127.0.0.1:9", api_key="unused"),
        "members_db": MembersDatabase(url=f"sqlite:///{tmp_path / 'members.sqlite'}"),
        "registry_policy": RegistrySyncPolicy(),
    }


@pytest.fixture
def defs(local_resources) -> dg.Definitions:
    return build_definitions(local_resources)


@pytest.fixture
def instance():
    # In memory: runs, events and sensor state behave the same, without Dagster's own SQLite
    # event log paying a disk sync per event (that made up most of each job's test time).
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


# -- registry ------------------------------------------------------------------------------------

POSTGRES_URL_ENV = "MEMBERS_TEST_DB_URL"


def postgres_server_url():
    """The test Postgres's URL (scripts/postgres.sh); skips the test where there is none."""
    import os

    import sqlalchemy as sa

    base = os.environ.get(POSTGRES_URL_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_URL_ENV} not set: run the suite with scripts/test.sh to get a real Postgres")
    return sa.make_url(base)


def _postgres_url(worker_id: str) -> str:
    """A database of this xdist worker's own on the test Postgres (scripts/postgres.sh)."""
    import sqlalchemy as sa

    url = postgres_server_url()
    name = f"{url.database}_{worker_id}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def members_db_url(request, tmp_path, worker_id):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'members.sqlite'}"
        return
    from membership_assets.registry.store import MembersStore

    url = _postgres_url(worker_id)
    store = MembersStore.from_url(url)
    store.drop_schema()  # every test starts from an empty database
    store.engine.dispose()
    yield url


@pytest.fixture
def store(members_db_url):
    from membership_assets.registry.store import MembersStore

    s = MembersStore.from_url(members_db_url)
    s.ensure_schema()
    yield s
    s.engine.dispose()


@pytest.fixture
def registry_data():
    from membership_assets.simulators.django_registry import generate_registry

    return generate_registry(400, seed=21)


@pytest.fixture
def django_sim(registry_data):
    from membership_assets.simulators.django_registry import DjangoRegistrySimulator

    with DjangoRegistrySimulator(registry_data, default_page_size=50) as sim:
        yield sim


@pytest.fixture
def registry_resources(django_sim, members_db_url, outbox, warehouse):
    from membership_assets.registry.resources import (
        DjangoRegistryResource,
        MembersDatabase,
        RegistrySyncPolicy,
    )

    return {
        "django": DjangoRegistryResource(
            base_url=django_sim.base_url,
            api_key=django_sim.token,
            page_size=50,
            rate_limit=1000,
            max_attempts=2,
        ),
        "members_db": MembersDatabase(url=members_db_url),
        "registry_policy": RegistrySyncPolicy(),
        "email": FileOutboxEmail(directory=str(outbox)),
        "recipients": Recipients(tag_report="organizers@example.org", admins="admins@example.org"),
        "warehouse": warehouse,
    }


@pytest.fixture
def registry_defs(registry_resources, ab_resource):
    return build_definitions({**registry_resources, "action_builder": ab_resource})


# -- audit warehouse -----------------------------------------------------------------------------

BIGQUERY_URL_ENV = "BIGQUERY_EMULATOR_URL"


def bigquery_emulator_url() -> str:
    """The local-bigquery emulator's URL (scripts/bigquery_emulator.sh); skips the test where there is none."""
    import os

    url = os.environ.get(BIGQUERY_URL_ENV)
    if not url:
        pytest.skip(
            f"{BIGQUERY_URL_ENV} not set: scripts/test.sh starts the emulator where Python 3.13 exists"
        )
    return url


EMULATOR_PROJECT = "membership-test"
EMULATOR_DATASET_PREFIXES = ("audit_", "preflight_")  # the datasets tests make (and drop)
STALE_DATASET_AGE = timedelta(hours=1)  # no test runs that long: older ones were left behind


def emulator_warehouse(prefix: str = "audit"):
    """A BigQuery warehouse on the emulator, in a dataset of its own."""
    import uuid

    from dagster_gcp import BigQueryResource

    from membership_assets.warehouse.resources import BigQueryWarehouse

    url = bigquery_emulator_url()
    sweep_stale_emulator_datasets(url)
    return BigQueryWarehouse(
        bigquery=BigQueryResource(project=EMULATOR_PROJECT),
        dataset=f"{prefix}_{uuid.uuid4().hex[:10]}",
        api_endpoint=url,
    )


@functools.cache
def sweep_stale_emulator_datasets(url: str) -> None:
    """Once per test process: delete the test datasets that earlier runs left on the emulator
    (killed runs, code from before drop_emulator_datasets); they slow every emulator call. Only
    datasets older than any test can run, so another run's tests on the same emulator keep theirs."""
    from google.api_core.exceptions import NotFound
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(
        project=EMULATOR_PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": url}
    )
    cutoff = datetime.now(timezone.utc) - STALE_DATASET_AGE
    try:
        for item in client.list_datasets():
            if not item.dataset_id.startswith(EMULATOR_DATASET_PREFIXES):
                continue
            try:
                created = client.get_dataset(item.reference).created
            except NotFound:  # the other xdist worker's sweep was first
                continue
            if created is not None and created < cutoff:
                client.delete_dataset(item.reference, delete_contents=True, not_found_ok=True)
    finally:
        client.close()


def drop_emulator_datasets(warehouse) -> None:
    """Delete a test's dataset and its analysts' dataset from the emulator.

    Every table left behind makes each later emulator call slower (the emulator looks through all
    of its tables on each call): without this, the suite's last BigQuery tests ran 3-5x slower
    than its first."""
    from membership_assets.warehouse.analyst import analyst_dataset

    with warehouse.client() as client:
        for name in (warehouse.dataset, analyst_dataset(warehouse.dataset)):
            client.delete_dataset(f"{client.project}.{name}", delete_contents=True, not_found_ok=True)


@contextmanager
def dropped_after(warehouse):
    """Yields the warehouse; a BigQuery one's datasets are deleted afterwards (see above)."""
    try:
        yield warehouse
    finally:
        if warehouse.kind == "bigquery":
            drop_emulator_datasets(warehouse)


@pytest.fixture(params=["duckdb", pytest.param("bigquery", marks=pytest.mark.bigquery)])
def audit_warehouse(request, tmp_path):
    """The same tests against DuckDB and against the local-bigquery emulator (BigQuery REST API)."""
    if request.param == "duckdb":
        yield DuckDBWarehouse(path=str(tmp_path / "audit.duckdb"))
        return
    with dropped_after(emulator_warehouse()) as warehouse:  # every test in its own dataset
        yield warehouse


# -- scheduling ----------------------------------------------------------------------------------

# The slowest tests, slowest first (--durations: daemons, killed workers, the BigQuery emulator).
# They start first, so the two xdist workers (scripts/test.sh) end together on short tests instead
# of one of them idling while the other runs a long test collected last (test_warehouse.py is).
SLOW_FIRST = (
    "test_deployment_topology.py::test_isolated_runs_crash_and_retry_on_the_production_topology",
    "test_pool_crash.py::test_a_run_killed_inside_each_pooled_step_is_retried_and_frees_its_pool",
    "test_warehouse.py::test_the_same_flow_on_the_bigquery_emulator_returns_the_same_rows",
    "test_dev_command.py::test_one_sigint_stops_dev_and_every_process_it_started",
    "test_recovery.py::test_a_warehouse_outage_during_an_applied_sync_heals_on_the_next_run[postgres-bigquery]",
    "test_recovery.py::test_a_warehouse_outage_mid_cleanup_is_healed_by_the_next_cleanup",
    "test_ab_repair_crash.py::test_sigkill_during_live_repairs_leaves_an_audit_that_reexecution_settles",
    "test_ab_report_email.py::test_at_most_one_report_a_day_across_runs_and_processes[60_people]",
    "test_ab_crash.py::test_sigkill_during_live_deletions_leaves_an_audit_that_reexecution_settles",
    "test_warehouse.py::test_a_sync_applied_by_a_reexecution_is_mirrored_under_its_root_run_id",
    "test_analyst_views.py::test_analyst_views_carry_pseudonyms_and_no_direct_identifiers[bigquery]",
    "test_registry_safety.py::test_generated_interleavings_never_remove_a_member_present_throughout[sqlite]",
    "test_registry_safety.py::test_generated_interleavings_never_remove_a_member_present_throughout[postgres]",
    "test_recovery.py::test_owed_history_of_several_syncs_is_delivered_once_on_either_warehouse[postgres-bigquery]",
    "test_warehouse.py::test_writing_a_slice_twice_replaces_it_and_other_slices_stay[bigquery]",
    "test_warehouse.py::test_an_empty_warehouse_answers_every_query_with_no_rows[bigquery]",
    "test_preflight.py::test_bigquery_dataset_missing_then_present_with_the_expected_schema",
    "test_warehouse.py::test_types_round_trip[bigquery]",
)


def pytest_collection_modifyitems(config, items):
    """Known-slow tests first, in SLOW_FIRST's order; every other test keeps its place."""
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.rsplit("/", 1)[-1], len(rank)))
