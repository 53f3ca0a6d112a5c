"""What an outage leaves undone, done by the next ordinary run: no human needed.

* A sync that applied while the audit warehouse was down owes it its history: the members DB
  records that debt in the apply's own transaction (``store.history_owed``), and
  ``history_catch_up`` (a step of every registry_sync run) delivers it, idempotently.
* A sync that failed while the members DB was down could not write its ``failed`` row: the
  failure is kept in the Dagster run's tags (and the run record itself), and the next run's
  ``history_catch_up`` writes it to ``membership_sync_log``, where the sync API reads it.
"""

import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import dagster as dg

from ..run_tags import is_tagged_dry_run, run_source
from ..warehouse.assets import deliver_owed_history
from ..warehouse.resources import AuditWarehouse
from .resources import MembersDatabase
from .store import MembersStore, SyncLogEntry

UNLOGGED_TAG = "membership/unlogged_failure"  # the failed row a down members DB could not take
LOOKBACK = timedelta(days=35)  # as far back as the warehouse mirror of the sync log reaches
# The jobs whose failures are syncs' failures. A preview (registry_preview) writes no sync log or
# history, failed or not: its run in Dagster is its record.
SYNC_JOBS = ("registry_sync",)
SYNC_STEPS = {dg.AssetKey("django_members"), dg.AssetKey("membership_sync")}
# A run that failed with no row and no kept entry (its worker was lost, or it failed before any
# sync step ran): what is known for sure, and nothing an upstream or a database said.
LOST_FAILURE = "the run failed before it could log this sync; nothing was applied (see the run in Dagster)"


def keep_unlogged_failure(
    context: dg.AssetExecutionContext | dg.OpExecutionContext, entry: SyncLogEntry, db_exc: Exception
) -> None:
    """The members DB refused the failed row: keep it with the run for the next run to write."""
    kept = {**asdict(entry), "sync_time": entry.sync_time.isoformat()}
    context.instance.add_run_tags(context.run.run_id, {UNLOGGED_TAG: json.dumps(kept, default=str)})
    context.log.warning(
        f"membership_sync_log is unreachable ({type(db_exc).__name__}): this failure is kept with "
        "the run and written to the sync log by the next registry_sync run"
    )


def _entry_from_run(instance: dg.DagsterInstance, record: dg.RunRecord) -> SyncLogEntry:
    run = record.dagster_run
    kept = run.tags.get(UNLOGGED_TAG)
    if kept:
        data = json.loads(kept)
        return SyncLogEntry(**{**data, "sync_time": datetime.fromisoformat(data["sync_time"])})
    step, kind = None, "RunFailure"
    for event in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)[:1]:
        step = event.step_key
        error = event.dagster_event.step_failure_data.error if event.dagster_event else None
        kind = error.cls_name if error is not None and error.cls_name else kind
    start = record.start_time or record.create_timestamp.timestamp()
    return SyncLogEntry(
        id=run.root_run_id or run.run_id,
        source=run_source(run),
        status="failed",
        sync_time=datetime.fromtimestamp(start, UTC),
        dry_run=is_tagged_dry_run(run),
        errors={"step": step, "type": kind, "error": LOST_FAILURE},
        duration_ms=int((record.end_time - start) * 1000) if record.end_time else None,
        run_id=run.run_id,
    )


def _was_a_sync(run: dg.DagsterRun) -> bool:
    """The run set out to sync (not, say, a re-execution of only the history steps)."""
    return not run.asset_selection or bool(SYNC_STEPS & set(run.asset_selection))  # empty: the whole job


def log_unlogged_failures(instance: dg.DagsterInstance, store: MembersStore, limit: int = 200) -> list[str]:
    """Write a ``failed`` row for every recently failed sync run whose sync has no row."""
    records = [
        record
        for job in SYNC_JOBS
        for record in instance.get_run_records(
            dg.RunsFilter(
                job_name=job,
                statuses=[dg.DagsterRunStatus.FAILURE],
                updated_after=datetime.now(UTC) - LOOKBACK,
            ),
            limit=limit,
        )
        if _was_a_sync(record.dagster_run)
    ]
    latest: dict[str, dg.RunRecord] = {}
    for record in sorted(records, key=lambda r: r.create_timestamp, reverse=True):
        run = record.dagster_run  # newest first: a sync's latest failed attempt speaks for it
        latest.setdefault(run.root_run_id or run.run_id, record)
    missing = sorted(set(latest) - store.logged_ids(list(latest)))
    for sync_id in missing:
        store.record_failure(_entry_from_run(instance, latest[sync_id]))
    return missing


def _run_started_at(instance: dg.DagsterInstance, run_id: str) -> datetime | None:
    record = instance.get_run_record_by_id(run_id)
    return datetime.fromtimestamp(record.start_time, UTC) if record and record.start_time else None


@dg.asset(
    key=["audit", "history_catch_up"],
    group_name="registry",
    output_required=False,
    tags={"dagster/kind/warehouse": ""},
)
def history_catch_up(
    context: dg.AssetExecutionContext, members_db: MembersDatabase, warehouse: AuditWarehouse
):
    """Every run, before anything else: failed syncs the members DB could not log are logged,
    and history earlier syncs owe the warehouse (it was down) is delivered, exactly once."""
    if is_tagged_dry_run(context.run):
        context.log.info("dry run: owed history and unlogged failures are left for the next real run")
        return
    store = members_db.store()
    logged = log_unlogged_failures(context.instance, store)
    if logged:
        context.log.warning(f"logged {len(logged)} failed sync(s) the members DB missed: {', '.join(logged)}")
    written = deliver_owed_history(store, warehouse, lambda run_id: _run_started_at(context.instance, run_id))
    if written["syncs"]:
        context.log.info(f"delivered the owed history of {written['syncs']} sync(s): {written}")
    yield dg.MaterializeResult(
        metadata={"failures_logged": len(logged), **{f"delivered_{k}": v for k, v in written.items()}}
    )
