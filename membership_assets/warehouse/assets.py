"""History assets: each run's extracts and findings appended to the audit warehouse.

Side effects (tag deletions, applied syncs) write their own audit rows at the moment they act;
these assets archive what the runs read and concluded.
"""

from collections.abc import Callable
from typing import Any

import dagster as dg
import pandas as pd

from .audit import record, run_identity
from .resources import AuditWarehouse
from .schema import TABLES

GROUP = "audit_history"


def _as_frame(value: Any) -> pd.DataFrame:
    return value if isinstance(value, pd.DataFrame) else pd.DataFrame([value])


def history_asset(
    table: str, source: str, to_rows: Callable[[Any], pd.DataFrame] = _as_frame
) -> dg.AssetsDefinition:
    """An asset that appends the ``source`` asset's rows to audit table ``table``."""
    spec = TABLES[table]

    @dg.asset(
        name=table,
        key_prefix=["audit"],
        group_name=GROUP,
        ins={"rows": dg.AssetIn(key=source)},
        description=f"History: {spec.description}",
        tags={"dagster/kind/warehouse": ""},
    )
    def _history(
        context: dg.AssetExecutionContext, warehouse: AuditWarehouse, rows: Any
    ) -> dg.MaterializeResult:
        frame = to_rows(rows)
        keep = [c for c in frame.columns if c in spec.column_names]
        written = record(warehouse, table, frame[keep], run_identity(context))
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": written,
                "table": warehouse.table_ref(table),
                "backend": warehouse.kind,
            }
        )

    return _history


action_builder_history = [
    history_asset("ab_scan_runs", "ab_scan"),
    history_asset("ab_people", "ab_people"),
    history_asset("ab_connections", "ab_connections"),
    history_asset("ab_taggings", "ab_taggings"),
    history_asset("ab_mismatches", "membership_mismatches"),
]
