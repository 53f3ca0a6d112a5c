"""Stamp rows with the run they belong to and hand them to the warehouse: the one write path."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from .resources import AuditWarehouse
from .schema import TABLES


@dataclass(frozen=True)
class RunIdentity:
    run_id: str  # logical run: the root of a chain of re-executions
    attempt_run_id: str
    started_at: datetime


def run_identity(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> RunIdentity:
    run = context.run
    root = run.root_run_id or run.run_id
    started = None
    record = context.instance.get_run_record_by_id(root)
    if record is not None and record.start_time:
        started = datetime.fromtimestamp(record.start_time, tz=UTC)
    return RunIdentity(run_id=root, attempt_run_id=run.run_id, started_at=started or datetime.now(UTC))


def previous_attempts(warehouse: AuditWarehouse, table: str, run: RunIdentity) -> pd.DataFrame:
    """Rows earlier attempts of this logical run wrote to ``table`` (empty on a first attempt)."""
    if run.attempt_run_id == run.run_id:
        return pd.DataFrame(columns=TABLES[table].column_names)
    if not re.fullmatch(r"[0-9a-f-]{36}", run.run_id):
        raise ValueError(f"unexpected run id {run.run_id!r}")
    return warehouse.query(f"SELECT * FROM {{dataset}}.{table} WHERE run_id = '{run.run_id}'")


def record(
    warehouse: AuditWarehouse, table: str, rows: pd.DataFrame, run: RunIdentity, *, stamp: bool = True
) -> int:
    """Append ``rows`` to ``table`` for this run (idempotently replacing the run's slice).

    ``stamp=False`` keeps the rows' own run_id/run_started_at (mirrors of facts from other runs).
    """
    frame = rows.copy()
    if stamp:
        frame["run_id"] = run.run_id
        frame["run_started_at"] = run.started_at
    if "attempt_run_id" in TABLES[table].column_names:
        # Rows carried over from an earlier attempt keep that attempt's id.
        earlier = frame["attempt_run_id"] if "attempt_run_id" in frame.columns else None
        frame["attempt_run_id"] = (
            run.attempt_run_id if earlier is None else earlier.fillna(run.attempt_run_id)
        )
    return warehouse.write(table, frame)
