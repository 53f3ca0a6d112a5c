"""History assets: each run's extracts and findings appended to the audit warehouse.

Side effects (tag deletions) write their own audit rows at the moment they act; these assets
archive what the runs read, concluded and applied.
"""

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg
import pandas as pd

from ..privacy import scrub_json
from ..registry.outcome import SyncOutcome
from ..registry.resources import MembersDatabase
from ..registry.store import APPLIED, MembersStore
from .audit import RunIdentity, record, run_identity
from .resources import AuditWarehouse
from .schema import TABLES

GROUP = "audit_history"
Rows = Callable[[Any, RunIdentity], pd.DataFrame]


def _as_frame(value: Any, run: RunIdentity) -> pd.DataFrame:
    return value if isinstance(value, pd.DataFrame) else pd.DataFrame([value])


def _with_sync_id(value: pd.DataFrame, run: RunIdentity) -> pd.DataFrame:
    # The logical (root) run id is the sync id, as in the sync log and the deltas: re-executions
    # of one sync must join to it.
    return value.assign(sync_id=run.run_id)


def _sync_delta(value: SyncOutcome, run: RunIdentity) -> pd.DataFrame:
    return value.delta.assign(sync_id=value.sync_id, dry_run=value.dry_run)


def log_rows(log: pd.DataFrame) -> pd.DataFrame:
    """Rows of the members DB's sync log as warehouse rows: each in its own sync's partition,
    its run_id the logical run (the sync id: the root of any re-executions, as the schema says;
    the members DB keeps the attempt's run id)."""
    log = log.copy()
    # Analysts read this column: scrub rows written before errors were scrubbed at the source.
    log["errors"] = log["errors"].map(lambda e: None if e is None else json.dumps(scrub_json(json.loads(e))))
    return log.rename(columns={"id": "sync_id"}).assign(
        run_id=lambda f: f["sync_id"], run_started_at=lambda f: f["sync_time"]
    )


def sync_log_rows(members_db: MembersDatabase) -> pd.DataFrame:
    """The members DB's sync log of the last 35 days, as warehouse rows.

    Re-mirroring a window catches failed syncs, whose runs never reach the history step.
    """
    return log_rows(members_db.store().sync_log_since(datetime.now(timezone.utc) - timedelta(days=35)))


def _by_sync(frame: pd.DataFrame, started: dict[str, Any]) -> pd.DataFrame:
    """Stamp rows with their sync's logical run, as the normal history steps do."""
    return frame.assign(run_id=frame["sync_id"], run_started_at=frame["sync_id"].map(started))


def _utc(value: Any) -> pd.Timestamp:
    """A stored time as UTC (SQLite gives it back without its zone)."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def deliver_owed_history(
    store: MembersStore, warehouse: AuditWarehouse, run_started_at: Callable[[str], datetime | None]
) -> dict[str, int]:
    """Write every sync's history the warehouse has not confirmed (an outage, a crash between
    apply and history): deltas and rejects of applied syncs, then each owed sync's log row.

    Idempotent: each table's slice (sync id / logical run) is replaced, never appended to; the
    syncs are marked delivered only after every write went through.
    """
    owed = store.history_owed()
    if not owed:
        return {"syncs": 0}
    log = log_rows(store.sync_log_of([sync_id for sync_id, _ in owed]))
    started = {s: run_started_at(s) or _utc(t) for s, t in zip(log["sync_id"], log["sync_time"], strict=True)}
    applied = log.loc[log["status"].isin(APPLIED) & ~log["dry_run"].astype(bool), "sync_id"].tolist()
    frames = {
        "membership_deltas": _by_sync(
            store.changes_of(applied, with_sync_id=True).assign(dry_run=False), started
        ),
        "registry_rejects": _by_sync(store.rejects_of(applied), started),
        # Last: once a sync's log row is in the warehouse, so are its deltas and rejects.
        "membership_sync_log": log,
    }
    written = {"syncs": len(owed)}
    for table, frame in frames.items():
        written[table] = warehouse.write(table, frame) if len(frame) else 0
    store.history_delivered(owed)
    return written


def column_schema(table: str) -> dg.TableSchema:
    """The audit table's columns, as schema.py defines them, for the asset's page in the UI."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(c.name, c.type, description=c.description or None) for c in TABLES[table].columns
        ]
    )


def _write(
    context: dg.AssetExecutionContext,
    warehouse: AuditWarehouse,
    table: str,
    frame: pd.DataFrame,
    stamp: bool = True,
):
    # Columns the table does not know fail the write (schema.conform): drift is never dropped.
    written = record(warehouse, table, frame, run_identity(context), stamp=stamp)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": written,
            "table": warehouse.table_ref(table),
            "backend": warehouse.kind,
        }
    )


def history_asset(table: str, source: str, to_rows: Rows = _as_frame) -> dg.AssetsDefinition:
    """An asset that appends the ``source`` asset's rows to audit table ``table``."""

    @dg.asset(
        name=table,
        key_prefix=["audit"],
        group_name=GROUP,
        ins={"rows": dg.AssetIn(key=source)},
        description=f"History: {TABLES[table].description}",
        tags={"dagster/kind/warehouse": ""},
        metadata={"dagster/column_schema": column_schema(table)},
    )
    def _history(
        context: dg.AssetExecutionContext, warehouse: AuditWarehouse, rows: Any
    ) -> dg.MaterializeResult:
        return _write(context, warehouse, table, to_rows(rows, run_identity(context)))

    return _history


@dg.asset(
    name="membership_sync_log",
    key_prefix=["audit"],
    group_name=GROUP,
    ins={"sync": dg.AssetIn(key="membership_sync")},
    # Written last: the sync's deltas and rejects are in the warehouse before its log row.
    deps=[dg.AssetKey(["audit", "membership_deltas"]), dg.AssetKey(["audit", "registry_rejects"])],
    description="History: the members DB's sync log (failed syncs included).",
    tags={"dagster/kind/warehouse": ""},
    metadata={"dagster/column_schema": column_schema("membership_sync_log")},
)
def membership_sync_log_history(
    context: dg.AssetExecutionContext,
    warehouse: AuditWarehouse,
    members_db: MembersDatabase,
    sync: SyncOutcome,
) -> dg.MaterializeResult:
    # Dry runs do not materialize membership_sync, so this only runs after a real sync.
    store = members_db.store()
    owed = store.history_owed(sync_ids=[sync.sync_id])
    result = _write(context, warehouse, "membership_sync_log", sync_log_rows(members_db), stamp=False)
    store.history_delivered(owed)  # this sync's whole history is in (the steps above wrote it)
    return result


action_builder_history = [
    history_asset("ab_scan_runs", "ab_scan"),
    history_asset("ab_people", "ab_people"),
    history_asset("ab_connections", "ab_connections"),
    history_asset("ab_taggings", "ab_taggings"),
    history_asset("ab_mismatches", "membership_mismatches"),
]

registry_history = [
    history_asset("registry_members_raw", "django_members", _with_sync_id),
    history_asset("registry_rejects", "member_rejects", _with_sync_id),
    history_asset("membership_deltas", "membership_sync", _sync_delta),
    membership_sync_log_history,
]
