"""Audit warehouse preflight: dataset, tables and their schema, load/query permissions, views.

Read-only: metadata reads, a permission test and a dry-run query (no bytes billed, nothing
written). Where an endpoint does not implement a call (an emulator), the line says "not checked".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..warehouse.analyst import all_tables, analyst_dataset
from ..warehouse.schema import TABLES
from .core import Check, fail, ok, safe_error, skip

SYSTEM = "BigQuery"
LOAD_PERMISSIONS = ["bigquery.tables.getData", "bigquery.tables.updateData"]
LEGACY_TYPES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}
ACCOUNT_FIX = "grant the service account roles/bigquery.dataEditor on the dataset and roles/bigquery.jobUser"


def check_warehouse(warehouse: Any) -> list[Check]:
    if warehouse.kind != "bigquery":
        return [_duckdb_check(warehouse)]
    with warehouse.client() as client:
        return check_bigquery(client, warehouse.dataset)


def _duckdb_check(warehouse: Any) -> Check:
    path = Path(warehouse.path)
    where = f"DuckDB {path}"
    if path.exists():
        return ok("Warehouse", "local history", f"{where} exists")
    return ok("Warehouse", "local history", f"{where} is created by the first run")


def check_bigquery(client: Any, dataset: str) -> list[Check]:
    from google.api_core.exceptions import Forbidden, NotFound

    ref = f"{client.project}.{dataset}"
    try:
        client.get_dataset(ref)
    except NotFound:
        return [
            fail(
                SYSTEM,
                "dataset",
                f"{ref} does not exist",
                f"create it (bq mk --dataset {client.project}:{dataset}) or grant the service account "
                "roles/bigquery.dataEditor on the project so the first run creates it; or set BIGQUERY_DATASET",
            )
        ]
    except Forbidden as exc:
        return [fail(SYSTEM, "dataset", f"{ref}: access denied ({exc.code})", ACCOUNT_FIX)]
    out = [ok(SYSTEM, "dataset", f"{ref} exists")]
    existing = []
    problems = []
    for spec in TABLES.values():
        try:
            table = client.get_table(f"{ref}.{spec.name}")
        except NotFound:
            continue
        existing.append(spec.name)
        problems += schema_problems(spec, table.schema, f"{ref}.{spec.name}")
    missing = [n for n in TABLES if n not in existing]
    seen = f"{len(existing)} of {len(TABLES)} tables exist" + (
        f"; created on first write: {', '.join(missing)}" if missing else ""
    )
    if problems:
        out.append(
            fail(SYSTEM, "tables", seen + "; " + "; ".join(problems), "; ".join(_alter(p) for p in problems))
        )
    else:
        out.append(ok(SYSTEM, "tables", seen + ", schema as expected"))
    target = f"{ref}.{existing[0]}" if existing else None
    out.append(_permissions(client, target))
    out.append(_dry_run(client, target))
    out.append(_views(client, dataset))
    return out


def schema_problems(spec: Any, schema: list[Any], ref: str) -> list[str]:
    """Columns the code writes that the table lacks, or holds with another type."""
    have = {f.name: LEGACY_TYPES.get(f.field_type, f.field_type) for f in schema}
    problems = []
    for col in spec.columns:
        if col.name not in have:
            problems.append(f"`{ref}` lacks {col.name} {col.type}")
        elif have[col.name] != col.type:
            problems.append(f"`{ref}`.{col.name} is {have[col.name]}, expected {col.type}")
    return problems


def _alter(problem: str) -> str:
    if " lacks " in problem:
        table, _, column = problem.partition(" lacks ")
        return f"ALTER TABLE {table} ADD COLUMN {column}"
    return f"recreate the table with the expected type ({problem})"


def _permissions(client: Any, target: str | None) -> Check:
    if target is None:
        return skip(SYSTEM, "load permission", "no table yet to test permissions on")
    try:
        granted = set(client.test_iam_permissions(target, LOAD_PERMISSIONS).get("permissions", []))
    except Exception as exc:  # noqa: BLE001 - an endpoint without testIamPermissions
        return skip(SYSTEM, "load permission", f"testIamPermissions not available ({safe_error(exc)[:120]})")
    lacking = [p for p in LOAD_PERMISSIONS if p not in granted]
    if lacking:
        return fail(SYSTEM, "load permission", f"lacking {', '.join(lacking)} on {target}", ACCOUNT_FIX)
    return ok(SYSTEM, "load permission", f"{', '.join(LOAD_PERMISSIONS)} granted on {target}")


def _dry_run(client: Any, target: str | None) -> Check:
    from google.api_core.exceptions import Forbidden
    from google.cloud import bigquery

    if target is None:
        return skip(SYSTEM, "query permission", "no table yet to dry-run a query on")
    try:
        job = client.query(
            f"SELECT COUNT(*) FROM `{target}`",
            job_config=bigquery.QueryJobConfig(dry_run=True, use_query_cache=False),
        )
    except Forbidden as exc:
        return fail(SYSTEM, "query permission", f"dry-run query denied ({exc.code})", ACCOUNT_FIX)
    except Exception as exc:  # noqa: BLE001 - an endpoint without dry runs
        return skip(SYSTEM, "query permission", f"dry run not available ({safe_error(exc)[:120]})")
    return ok(SYSTEM, "query permission", f"dry-run query accepted ({job.total_bytes_processed or 0} bytes)")


def _views(client: Any, dataset: str) -> Check:
    from google.api_core.exceptions import NotFound

    analyst = f"{client.project}.{analyst_dataset(dataset)}"
    missing = []
    for spec in all_tables():
        try:
            client.get_table(f"{analyst}.{spec.name}")
        except NotFound:
            missing.append(spec.name)
    fix = "run `python -m membership_assets analyst-views` (needs roles/bigquery.dataOwner on both datasets)"
    if missing:
        return fail(SYSTEM, "analyst views", f"{len(missing)} missing in {analyst}", fix)
    return ok(SYSTEM, "analyst views", f"{len(all_tables())} views in {analyst}")
