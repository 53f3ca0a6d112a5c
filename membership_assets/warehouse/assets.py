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
from ..registry.resources import MembersDatabase
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


def _sync_delta(value: dict, run: RunIdentity) -> pd.DataFrame:
    return value["delta"].assign(sync_id=value["sync_id"], dry_run=value["dry_run"])


def sync_log_rows(members_db: MembersDatabase) -> pd.DataFrame:
    """The members DB's sync log of the last 35 days, as warehouse rows.

    Re-mirroring a window catches failed syncs, whose runs never reach the history step.
    Each row keeps its own sync's run and time, so it lives in that sync's partition.
    """
    log = members_db.store().sync_log_since(datetime.now(timezone.utc) - timedelta(days=35))
    # Analysts read this column: scrub rows written before errors were scrubbed at the source.
    log["errors"] = log["errors"].map(lambda e: None if e is None else json.dumps(scrub_json(json.loads(e))))
    return log.rename(columns={"id": "sync_id"}).assign(run_started_at=lambda f: f["sync_time"])


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
    keep = [c for c in frame.columns if c in TABLES[table].column_names]
    written = record(warehouse, table, frame[keep], run_identity(context), stamp=stamp)
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
    description="History: the members DB's sync log (failed syncs included).",
    tags={"dagster/kind/warehouse": ""},
    metadata={"dagster/column_schema": column_schema("membership_sync_log")},
)
def membership_sync_log_history(
    context: dg.AssetExecutionContext, warehouse: AuditWarehouse, members_db: MembersDatabase, sync: dict
) -> dg.MaterializeResult:
    # Dry runs do not materialize membership_sync, so this only runs after a real sync.
    return _write(context, warehouse, "membership_sync_log", sync_log_rows(members_db), stamp=False)


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
