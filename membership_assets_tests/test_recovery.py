"""Recovery completes by itself: after a warehouse outage the history is complete after the next
ordinary run (exactly once), and a sync that failed while the members DB was down is logged once
the DB is back; the admin alert says what was applied and what is pending."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager

import dagster as dg
import pytest

from membership_assets.definitions import build_definitions
from membership_assets.registry.resources import MembersDatabase
from membership_assets.registry.store import MembersStore
from membership_assets.warehouse.queries import run_analyst_query
from membership_assets.warehouse.resources import BigQueryWarehouse, DuckDBWarehouse

from .conftest import alert_admins_of

HOLD_LOCK = (
    "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('locked', flush=True); sys.stdin.read()"
)


@contextmanager
def duckdb_locked(path: str):
    """Another process holds the warehouse file (DuckDB allows one writer process): an outage."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


class _Refuse(http.server.BaseHTTPRequestHandler):
    def _refuse(self):
        body = b'{"error": {"code": 403, "message": "Access Denied", "status": "PERMISSION_DENIED"}}'
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _refuse

    def log_message(self, *args):
        pass


@contextmanager
def outage(warehouse):
    """The warehouse refuses every write for a while; yields the resource runs see meanwhile."""
    if isinstance(warehouse, DuckDBWarehouse):
        with duckdb_locked(warehouse.path):
            yield warehouse
        return
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        yield BigQueryWarehouse(bigquery=warehouse.bigquery, dataset=warehouse.dataset, api_endpoint=url)
    finally:
        server.shutdown()


def one_members_db_for_bigquery(request, warehouse) -> None:
    """The BigQuery emulator is slow (minutes per sync): its variants run on Postgres members DBs
    only. The members DB's side is the same code on either backend, covered by the DuckDB runs."""
    if (
        not isinstance(warehouse, DuckDBWarehouse)
        and request.node.callspec.params.get("members_db_url") == "sqlite"
    ):
        pytest.skip(
            "BigQuery variant runs with the Postgres members DB (the SQLite side is covered with DuckDB)"
        )


@pytest.fixture
def history_warehouse(request, audit_warehouse):
    """DuckDB or the BigQuery emulator; DuckDB gives up on a held lock after 1 s, not 60."""
    one_members_db_for_bigquery(request, audit_warehouse)
    if isinstance(audit_warehouse, DuckDBWarehouse):
        return DuckDBWarehouse(path=audit_warehouse.path, lock_timeout_seconds=1.0)
    return audit_warehouse


def _sync(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("registry_sync").execute_in_process(instance=instance, raise_on_error=False)


def _losses(django_sim, removed: int, suspended: int) -> set[str]:
    """Take eligibility from some active members upstream: some leave, some are suspended."""
    active = [m for m in django_sim.data.members if m["status"] == "active"][: removed + suspended]
    for m in active[:removed]:
        django_sim.remove(m["kennitala"])
    for m in active[removed:]:
        django_sim.update(m["kennitala"], status="suspended")
    return {m["kennitala"].replace("-", "") for m in active}


def _history_of(warehouse, sync_id: str) -> dict[str, int]:
    counts = {}
    for table, key in (
        ("membership_deltas", "sync_id"),
        ("membership_sync_log", "sync_id"),
        ("registry_rejects", "run_id"),
    ):
        frame = warehouse.query(f"SELECT * FROM {{dataset}}.{table} WHERE {key} = '{sync_id}'")
        counts[table] = len(frame)
        if table == "membership_deltas":  # each change once
            assert frame["kennitala"].is_unique
        if table == "membership_sync_log" and len(frame):
            assert list(frame["run_id"]) == [sync_id]  # the logical run, as the schema promises
    return counts


def test_a_warehouse_outage_during_an_applied_sync_heals_on_the_next_run(
    registry_resources, ab_resource, django_sim, members_db_url, instance, history_warehouse, outbox
):
    warehouse = history_warehouse
    resources = {**registry_resources, "action_builder": ab_resource}
    defs = build_definitions({**resources, "warehouse": warehouse})
    assert _sync(defs, instance).success  # the baseline
    lost = _losses(django_sim, removed=12, suspended=6)

    with outage(warehouse) as down:
        outage_defs = build_definitions({**resources, "warehouse": down})
        failed = _sync(outage_defs, instance)
    store = MembersStore.from_url(members_db_url)
    sync_id = failed.run_id
    applied = store.log_entry(sync_id)
    assert not failed.success and applied["status"] in ("success", "partial")  # applied all the same
    changes, rejects = store.changes_of(sync_id), store.rejects_of(sync_id)
    assert len(changes) == 18 and len(rejects) > 0
    assert [s for s, _ in store.history_owed()] == [sync_id]
    assert _history_of(warehouse, sync_id) == {
        "membership_deltas": 0,
        "membership_sync_log": 0,
        "registry_rejects": 0,
    }

    # The alert says what was applied and what history is pending, not "nothing half-applied".
    alert_admins_of(instance, failed, defs)
    [mail] = list(outbox.glob("*.eml"))
    text = mail.read_text()
    assert f"Applied: sync {sync_id}" in text and "12 removed" in text
    assert "History pending" in text and "membership_deltas" in text and "half-applied" not in text

    # The next ordinary run (no changes of its own) completes the history, exactly once.
    again = _sync(defs, instance)
    assert again.success
    expected = {
        "membership_deltas": len(changes),
        "membership_sync_log": 1,
        "registry_rejects": len(rejects),
    }
    assert _history_of(warehouse, sync_id) == expected
    assert store.history_owed() == []
    found = run_analyst_query(
        warehouse, "lost_eligibility", start="2000-01-01 00:00:00", end="2100-01-01 00:00:00"
    )
    assert set(found["kennitala"]) == lost
    assert _sync(defs, instance).success
    assert _history_of(warehouse, sync_id) == expected  # still once


def test_a_history_step_that_fails_after_apply_is_delivered_by_the_catch_up_alone(
    registry_resources, ab_resource, django_sim, members_db_url, instance, tmp_path
):
    """The catch-up step delivers, idempotently, even what the ordinary steps already wrote."""
    path = str(tmp_path / "warehouse.duckdb")
    warehouse = DuckDBWarehouse(path=path, lock_timeout_seconds=1.0)
    defs = build_definitions({**registry_resources, "warehouse": warehouse, "action_builder": ab_resource})
    first = _sync(defs, instance)
    assert first.success
    store = MembersStore.from_url(members_db_url)
    assert store.history_owed() == []  # the ordinary steps delivered it and said so
    before = _history_of(warehouse, first.run_id)
    with store.engine.begin() as conn:  # as if the run had died before marking it delivered
        conn.exec_driver_sql("UPDATE warehouse_history_owed SET delivered_at = NULL")
    assert _sync(defs, instance).success
    assert _history_of(warehouse, first.run_id) == before and store.history_owed() == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once we return: connections are refused


@pytest.mark.parametrize("down", ["closed_port", "sqlite_path_unusable"])
def test_a_sync_failing_while_the_members_db_is_down_is_logged_when_it_is_back(
    down, registry_resources, ab_resource, django_sim, members_db_url, instance, tmp_path, outbox
):
    if down == "closed_port":
        url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/nowhere"
    else:  # its directory is a file: no user, root included, can open it
        (tmp_path / "not_a_directory").write_text("")
        url = f"sqlite:///{tmp_path / 'not_a_directory' / 'members.sqlite'}"
    broken = build_definitions(
        {**registry_resources, "members_db": MembersDatabase(url=url), "action_builder": ab_resource}
    )
    failed = _sync(broken, instance)
    assert not failed.success
    assert "membership/unlogged_failure" in instance.get_run_by_id(failed.run_id).tags
    alert_admins_of(instance, failed, broken)
    [mail] = list(outbox.glob("*.eml"))
    assert (
        "Nothing was applied" in mail.read_text() and "next registry_sync run writes it" in mail.read_text()
    )

    # The database is back: the next ordinary run writes the failure, and the sync API shows it.
    defs = build_definitions({**registry_resources, "action_builder": ab_resource})
    assert _sync(defs, instance).success
    store = MembersStore.from_url(members_db_url)
    row = store.log_entry(failed.run_id)
    assert row is not None and row["status"] == "failed" and row["errors"]["step"] == "django_members"
    assert row["run_id"] == failed.run_id and row["source"] == "manual"
    assert _sync(defs, instance).success
    logged = store.sync_log_since(row["sync_time"])
    assert list(logged["id"]).count(failed.run_id) == 1  # once, however many runs look


def test_the_sync_api_status_shows_a_failure_logged_after_the_fact(
    registry_resources, ab_resource, django_sim, members_db_url, instance
):
    import requests

    from .test_registry_webhook import API_KEY, receiver

    url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/nowhere"
    broken = build_definitions(
        {**registry_resources, "members_db": MembersDatabase(url=url), "action_builder": ab_resource}
    )
    failed = _sync(broken, instance)
    assert not failed.success
    # The next run's catch-up step runs first; the registry then fails again (no change of its own).
    django_sim.faults.add(path_pattern="/api/members", status=503, times=None)
    defs = build_definitions({**registry_resources, "action_builder": ab_resource})
    second = _sync(defs, instance)
    assert not second.success
    with receiver(members_db_url) as base:
        status = requests.get(f"{base}/api/sync/status", headers={"X-Api-Key": API_KEY}, timeout=10).json()
        logs = requests.get(f"{base}/api/sync/logs", headers={"X-Api-Key": API_KEY}, timeout=10).json()
    ids = {row["id"]: row for row in logs["syncs"]}
    assert failed.run_id in ids and ids[failed.run_id]["status"] == "failed"
    assert ids[failed.run_id]["error"]["step"] == "django_members"
    assert status["last_sync"]["status"] == "failed"


def test_a_run_lost_before_it_logged_anything_is_logged_by_the_next_run(
    registry_resources, ab_resource, django_sim, members_db_url, instance
):
    """A worker killed before any step could log (or keep) the failure: the run record is enough."""
    from membership_assets.registry.recovery import LOST_FAILURE

    defs = build_definitions({**registry_resources, "action_builder": ab_resource})
    job = defs.resolve_job_def("registry_sync")
    lost = instance.create_run_for_job(job_def=job, tags={"membership/source": "scheduled"})
    instance.report_run_failed(lost)  # what run monitoring records for a dead worker
    preview = instance.create_run_for_job(job_def=defs.resolve_job_def("registry_preview"))
    instance.report_run_failed(preview)
    assert _sync(defs, instance).success
    store = MembersStore.from_url(members_db_url)
    row = store.log_entry(lost.run_id)
    assert row["status"] == "failed" and row["source"] == "scheduled" and not row["dry_run"]
    assert row["errors"] == {"step": None, "type": "RunFailure", "error": LOST_FAILURE}
    assert store.log_entry(preview.run_id) is None  # a preview writes no sync log, failed or not


# -- the tag cleanup ----------------------------------------------------------------------------


def test_a_warehouse_outage_mid_cleanup_is_healed_by_the_next_cleanup(
    local_resources, ab_sim, instance, tmp_path
):
    """DELETEs were sent, then the warehouse refused their outcomes: the outcomes were journaled
    next to the scan state first, and the next cleanup delivers them, exactly once."""
    from membership_assets.simulators.http import Fault

    from .test_ab_job import run_job

    path = str(tmp_path / "warehouse.duckdb")
    warehouse = DuckDBWarehouse(path=path, lock_timeout_seconds=1.0)
    defs = build_definitions({**local_resources, "warehouse": warehouse})
    planned = {tid for t in ab_sim.data.expected_mismatches().values() for tid in t.outdated_tagging_ids}
    slow = ab_sim.faults.add(Fault(method="DELETE", delay=3.0, times=None))
    locked = threading.Event()
    release = threading.Event()

    def lock_once_deleting():  # the outage starts while the DELETEs are on the wire
        while slow.hits == 0:
            threading.Event().wait(0.01)
        with duckdb_locked(path):
            locked.set()
            release.wait(120)

    holder = threading.Thread(target=lock_once_deleting, daemon=True)
    holder.start()
    failed = run_job(defs, instance, dry_run=False)
    release.set()
    holder.join(60)
    assert locked.is_set() and not failed.success
    ab_sim.faults.clear()
    gone = planned - set(ab_sim.data.taggings)
    assert gone  # the first batch of DELETEs went through; the outage stopped the rest
    audit = warehouse.query(
        f"SELECT * FROM {{dataset}}.ab_tagging_deletions WHERE run_id = '{failed.run_id}'"
    )
    assert set(audit.loc[audit["tagging_id"].isin(gone), "action"]) == {"sending"}  # outcomes missed

    # The next ordinary cleanup (a dry run) delivers them: what was deleted, and what never sent.
    expected = {t: "deleted" if t in gone else "pending" for t in planned}
    for _ in range(2):  # and once more: still exactly once
        assert run_job(defs, instance, dry_run=True).success
        audit = warehouse.query(
            f"SELECT tagging_id, action FROM {{dataset}}.ab_tagging_deletions WHERE run_id = '{failed.run_id}'"
        )
        assert (
            len(audit) == len(planned)
            and dict(zip(audit["tagging_id"], audit["action"], strict=True)) == expected
        )


def test_owed_history_of_several_syncs_is_delivered_once_on_either_warehouse(request, store, audit_warehouse):
    """Applied and failed syncs owe their history from the moment they are logged; one delivery
    writes them all (the run record may be gone: the sync time stands in), a second changes nothing."""
    one_members_db_for_bigquery(request, audit_warehouse)
    from membership_assets.registry.store import SyncLogEntry
    from membership_assets.warehouse.assets import deliver_owed_history

    from .test_registry_store import people, sync

    ids = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(3)]
    sync(store, people(30), ids[0])
    sync(store, people(30).head(20), ids[1])  # 10 removed
    store.record_failure(SyncLogEntry(id=ids[2], source="sensor", status="failed", errors={"step": "x"}))
    assert [s for s, _ in store.history_owed()] == ids
    for attempt in range(2):
        written = deliver_owed_history(store, audit_warehouse, lambda run_id: None)
        assert written == (
            {"syncs": 3, "membership_deltas": 40, "registry_rejects": 0, "membership_sync_log": 3}
            if attempt == 0
            else {"syncs": 0}
        )
        log = audit_warehouse.query("SELECT sync_id, run_id, status FROM {dataset}.membership_sync_log")
        assert sorted(log["sync_id"]) == ids and list(log["sync_id"]) == list(log["run_id"])
        deltas = audit_warehouse.query(
            "SELECT sync_id, COUNT(*) AS n FROM {dataset}.membership_deltas GROUP BY sync_id ORDER BY sync_id"
        )
        assert deltas.to_dict("records") == [{"sync_id": ids[0], "n": 30}, {"sync_id": ids[1], "n": 10}]
    store.history_delivered([])  # nothing owed: nothing to mark
    assert store.history_owed() == []
