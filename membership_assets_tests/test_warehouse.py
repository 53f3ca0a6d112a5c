"""Audit history on DuckDB and on a BigQuery-API emulator: idempotent, queryable, same answers."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import dagster as dg
import pandas as pd
import pytest

from membership_assets.simulators.action_builder import ActionBuilderSimulator
from membership_assets.simulators.action_builder_seed import SeedConfig, generate_campaign
from membership_assets.simulators.django_registry import DjangoRegistrySimulator, generate_registry
from membership_assets.warehouse.audit import RunIdentity, record
from membership_assets.warehouse.queries import analyst_sql, query_names, run_analyst_query
from membership_assets.warehouse.schema import TABLES, conform

from . import flows
from .conftest import BIGQUERY_URL_ENV, dropped_after, emulator_warehouse


@dataclass
class World:
    ab: ActionBuilderSimulator
    django: DjangoRegistrySimulator
    warehouse: object


@contextmanager
def running_world(tmp_path, warehouse, monkeypatch):
    """Both simulators with fixed seeds, a fresh members DB, exported for reconstructed jobs."""
    ab_data = generate_campaign(SeedConfig(people=150, units=8, seed=31))
    with (
        ActionBuilderSimulator(ab_data, rate_limit=None) as ab,
        DjangoRegistrySimulator(generate_registry(300, seed=32)) as django,
    ):
        settings = {
            "ab_url": ab.base_url,
            "ab_credentials": ab.credentials_json,
            "campaign_id": ab_data.campaign_id,
            "django_url": django.base_url,
            "django_token": django.token,
            "members_db_url": f"sqlite:///{tmp_path / 'members.sqlite'}",
            "checkpoint_path": str(tmp_path / "checkpoints.sqlite"),
            "reports_dir": str(tmp_path / "reports"),
            "outbox": str(tmp_path / "outbox"),
            **flows.warehouse_env(warehouse),
        }
        for key, value in flows.world_env(settings).items():
            monkeypatch.setenv(key, value)
        yield World(ab=ab, django=django, warehouse=warehouse)


@pytest.fixture
def world(tmp_path, monkeypatch):
    # Re-execution logic is the same for every backend; the BigQuery write path has its own tests.
    with running_world(tmp_path, _warehouse("duckdb", tmp_path), monkeypatch) as w:
        yield w


def rows(n: int, run: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "person_id": f"p{i}",
                "inactive": i % 2 == 0,
                "unit_name": f"Unit {i % 3}",
                "reasons": "unit_missing",
                "outdated_taggings": i,
            }
            for i in range(n)
        ]
    )


def test_schema_refuses_columns_it_does_not_know():
    with pytest.raises(ValueError, match="not in the schema"):
        conform(TABLES["ab_mismatches"], pd.DataFrame([{"person_id": "p", "surprise": 1}]))


def test_writing_a_slice_twice_replaces_it_and_other_slices_stay(audit_warehouse):
    t0 = datetime(2026, 10, 1, tzinfo=timezone.utc)
    first = RunIdentity("run-a", "run-a", t0)
    second = RunIdentity("run-b", "run-b", t0 + timedelta(days=1))
    assert record(audit_warehouse, "ab_mismatches", rows(5, "a"), first) == 5
    assert record(audit_warehouse, "ab_mismatches", rows(5, "a"), first) == 5
    record(audit_warehouse, "ab_mismatches", rows(3, "b"), second)
    record(audit_warehouse, "ab_mismatches", rows(4, "a"), first)  # a re-execution found 4
    got = audit_warehouse.query(
        "SELECT run_id, COUNT(*) AS n FROM {dataset}.ab_mismatches GROUP BY run_id ORDER BY run_id"
    )
    assert got.to_dict("records") == [{"run_id": "run-a", "n": 4}, {"run_id": "run-b", "n": 3}]


def test_types_round_trip(audit_warehouse):
    t0 = datetime(2026, 10, 1, 12, 30, tzinfo=timezone.utc)
    record(audit_warehouse, "ab_mismatches", rows(2, "a"), RunIdentity("run-a", "run-a", t0))
    got = audit_warehouse.query(
        "SELECT person_id, inactive, outdated_taggings, run_started_at FROM {dataset}.ab_mismatches ORDER BY person_id"
    )
    assert got["person_id"].tolist() == ["p0", "p1"]
    assert [bool(x) for x in got["inactive"]] == [True, False]
    assert [int(x) for x in got["outdated_taggings"]] == [0, 1]
    stamp = pd.Timestamp(got["run_started_at"][0])
    assert (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp) == pd.Timestamp(t0)


def test_an_empty_warehouse_answers_every_query_with_no_rows(audit_warehouse):
    params = {"start": "2026-01-01 00:00:00", "end": "2027-01-01 00:00:00"}  # unused ones are ignored
    for name in query_names():
        assert audit_warehouse.query(analyst_sql(name, **params)).empty, name


def test_query_parameters_are_plain_values_only():
    with pytest.raises(ValueError, match="needs"):
        analyst_sql("lost_eligibility", start="2026-01-01 00:00:00")
    with pytest.raises(ValueError, match="not a plain value"):
        analyst_sql("lost_eligibility", start="x' OR 1=1 --", end="2026-01-01")


def window() -> dict[str, str]:
    today = datetime.now(timezone.utc).date()
    return {"start": f"{today - timedelta(days=1)} 00:00:00", "end": f"{today + timedelta(days=1)} 00:00:00"}


def analyst_answers(warehouse) -> dict[str, pd.DataFrame]:
    return {
        "lost_eligibility": run_analyst_query(warehouse, "lost_eligibility", **window()),
        "mismatches_by_unit": run_analyst_query(warehouse, "mismatches_by_unit"),
        "sync_history": run_analyst_query(warehouse, "sync_history", **window()),
        "tag_deletions": run_analyst_query(warehouse, "tag_deletions"),
        "tag_repairs": run_analyst_query(warehouse, "tag_repairs"),
    }


def check_expected_answers(world, runs, answers) -> None:
    """The rows the README's analyst queries must return after two demo runs."""
    # Who lost eligibility: exactly the active members who left the registry between the runs.
    lost = answers["lost_eligibility"]
    expected_lost = sorted(k for k in runs.churn["left"] if k in runs.active_before_churn)
    assert sorted(lost["kennitala"]) == expected_lost and expected_lost
    assert set(lost["new_status"]) == {"removed"}

    # Mismatch count by unit, for each of the two full scans: the planted truth, twice.
    truth = world.ab.data.truth
    per_unit_people = [t["unit_name"] for t in truth.values() if not t["inactive"]]
    per_unit = pd.Series(per_unit_people).value_counts()
    by_unit = answers["mismatches_by_unit"]
    assert by_unit["run_started_at"].nunique() == 2
    for _, scan in by_unit.groupby("run_started_at"):
        assert dict(zip(scan["unit_name"], scan["mismatches"].astype(int), strict=True)) == per_unit.to_dict()

    # Sync history: the first sync added everyone, the second applied the month's churn.
    history = answers["sync_history"].sort_values("sync_time")
    assert history["sync_id"].tolist() == runs.registry_runs
    assert history["status"].tolist() == ["partial", "partial"]
    second = history.iloc[1]
    n = len(runs.churn["left"])
    assert (int(second["members_added"]), int(second["members_removed"]), int(second["members_updated"])) == (
        n,
        n,
        n,
    )

    # Tag cleanup: a dry run, then the same taggings deleted for real.
    planned = sum(len(t["outdated_tagging_ids"]) for t in truth.values())
    by_run = answers["tag_deletions"].groupby(["run_id", "action"])["taggings"].sum().astype(int).to_dict()
    assert by_run == {(runs.tag_runs[0], "dry_run"): planned, (runs.tag_runs[1], "deleted"): planned}

    # Tag repair (a dry run in both): every active mismatch would be repaired, each run.
    repairs = answers["tag_repairs"]
    would = repairs[repairs["outcome"] == "would repair (dry run)"].set_index("run_id")["people"].astype(int)
    assert would.to_dict() == {run: len(per_unit_people) for run in runs.tag_runs}


def test_after_two_demo_runs_duckdb_answers_the_analyst_queries(tmp_path, monkeypatch):
    with running_world(tmp_path, _warehouse("duckdb", tmp_path), monkeypatch) as w:
        runs = flows.two_demo_runs(w, dg.DagsterInstance.ephemeral())
        check_expected_answers(w, runs, analyst_answers(w.warehouse))


@pytest.mark.bigquery
def test_the_same_flow_on_the_bigquery_emulator_returns_the_same_rows(tmp_path, monkeypatch):
    import os

    if not os.environ.get(BIGQUERY_URL_ENV):
        pytest.skip(
            f"{BIGQUERY_URL_ENV} not set: scripts/test.sh starts the emulator where Python 3.13 exists"
        )
    answers = {}
    for backend in ("duckdb", "bigquery"):
        (tmp_path / backend).mkdir()
        with (
            dropped_after(_warehouse(backend, tmp_path / backend)) as warehouse,
            running_world(tmp_path / backend, warehouse, monkeypatch) as w,
        ):
            runs = flows.two_demo_runs(w, dg.DagsterInstance.ephemeral())
            found = analyst_answers(w.warehouse)  # via google-cloud-bigquery on the emulator
            check_expected_answers(w, runs, found)
            answers[backend] = {k: _stable(v) for k, v in found.items()}
    for name in query_names():
        pd.testing.assert_frame_equal(answers["duckdb"][name], answers["bigquery"][name], check_dtype=False)


def _warehouse(kind: str, path):
    from membership_assets.warehouse.resources import DuckDBWarehouse

    if kind == "duckdb":
        return DuckDBWarehouse(path=str(path / "audit.duckdb"))
    return emulator_warehouse()


def _stable(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop what differs between two identical flows (run ids, times), keep the substance."""
    volatile = {"sync_id", "sync_time", "run_id", "attempt_run_id", "run_started_at", "duration_ms"}
    keep = [c for c in frame.columns if c not in volatile]
    out = frame[keep].astype(object).where(frame[keep].notna(), None).map(_plain)
    return out.sort_values(keep).reset_index(drop=True)


def _plain(value):
    """Backends return numbers as int64, Int64 or float: compare them as Python ints."""
    import numbers

    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    return value


def targets(world):
    kind = world.warehouse.kind
    return flows.TARGETS[(kind, "registry_sync")], flows.TARGETS[(kind, "action_builder_tag_sync")]


def test_reexecuting_runs_leaves_row_counts_unchanged(world):
    sync_job, tag_job = targets(world)
    dry = flows.tag_run_config(dry_run=True)  # upstream stays as it was: same world, same rows
    with dg.instance_for_test() as instance:
        with dg.execute_job(dg.reconstructable(sync_job), instance=instance) as sync:
            assert sync.success
        with dg.execute_job(dg.reconstructable(tag_job), instance=instance, run_config=dry) as tags:
            assert tags.success
        before = flows.table_counts(world.warehouse)
        assert all(n > 0 for n in before.values()), before

        run_id, root = flows.reexecute(sync_job, instance, sync.run_id)
        assert root == sync.run_id and run_id != sync.run_id
        flows.reexecute(tag_job, instance, tags.run_id, dry)

        assert flows.table_counts(world.warehouse) == before
        log = world.warehouse.query("SELECT sync_id, status FROM {dataset}.membership_sync_log")
        assert log["sync_id"].tolist() == [sync.run_id] and log["status"].tolist() == ["partial"]


def test_a_sync_applied_by_a_reexecution_is_mirrored_under_its_root_run_id(world):
    """The sync log's run_id in the warehouse is the logical (root) run, as the schema says, even
    when the re-execution's attempt is the one that applied the sync."""
    sync_job, _ = targets(world)
    world.django.faults.add(path_pattern="/api/members", status=503, times=None)
    with dg.instance_for_test() as instance:
        with dg.execute_job(dg.reconstructable(sync_job), instance=instance) as first:
            assert not first.success
        world.django.faults.clear()
        with dg.execute_job(
            dg.reconstructable(sync_job),
            instance=instance,
            reexecution_options=dg.ReexecutionOptions.from_failure(first.run_id, instance),
        ) as retry:
            assert retry.success and retry.dagster_run.root_run_id == first.run_id
    log = world.warehouse.query("SELECT sync_id, run_id, status FROM {dataset}.membership_sync_log")
    assert log.to_dict("records") == [{"sync_id": first.run_id, "run_id": first.run_id, "status": "partial"}]
    deltas = world.warehouse.query("SELECT DISTINCT run_id FROM {dataset}.membership_deltas")
    assert deltas["run_id"].tolist() == [first.run_id]


def test_a_reexecuted_cleanup_keeps_its_deletions_on_record_once(world):
    planned = sorted(tid for t in world.ab.data.truth.values() for tid in t["outdated_tagging_ids"])
    live = flows.tag_run_config(dry_run=False)
    _, tag_job = targets(world)
    with dg.instance_for_test() as instance:
        with dg.execute_job(dg.reconstructable(tag_job), instance=instance, run_config=live) as tags:
            assert tags.success
        # The re-execution finds every outdated tagging already gone.
        flows.reexecute(tag_job, instance, tags.run_id, live)
    audit = world.warehouse.query(
        "SELECT tagging_id, action, attempt_run_id FROM {dataset}.ab_tagging_deletions ORDER BY tagging_id"
    )
    assert audit["tagging_id"].tolist() == planned
    assert set(audit["action"]) == {"deleted"} and set(audit["attempt_run_id"]) == {tags.run_id}
