"""Audit warehouse backends: DuckDB on the embedded default, BigQuery in production.

Both expose the same two calls: ``write(table, rows)`` (idempotent slice replace, see schema.py)
and ``query(sql)`` where ``{dataset}`` in the SQL names the audit dataset. BigQuery writes use
batch load jobs into a staging table (never streaming inserts, which cannot be deleted for ~90
minutes) and one transaction that replaces the slice; tables are day-partitioned on
``run_started_at`` and clustered by their slice key.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import dagster as dg
import pandas as pd
from dagster_gcp import BigQueryResource
from pydantic import Field, PrivateAttr

from ..privacy import pseudonym_secret
from .analyst import KEY_TABLE, all_tables, analyst_dataset, view_sql
from .schema import TABLES, Table, conform

_DUCK_TYPES = {
    "STRING": "VARCHAR",
    "INT64": "BIGINT",
    "FLOAT64": "DOUBLE",
    "BOOL": "BOOLEAN",
    "TIMESTAMP": "TIMESTAMP",  # naive UTC: no ICU extension needed for analysts' date functions
}


class AuditWarehouse(dg.ConfigurableResource):
    """Interface of the audit history store."""

    dataset: str = Field(default="membership_audit", description="Dataset (BigQuery) / schema (DuckDB).")
    # Tables this resource instance already created or found (one check per table per run).
    _ensured: set[str] = PrivateAttr(default_factory=set)

    @property
    def kind(self) -> str:
        raise NotImplementedError

    def write(self, table: str, rows: pd.DataFrame) -> int:
        raise NotImplementedError

    def query(self, sql: str) -> pd.DataFrame:
        raise NotImplementedError

    def publish_analyst_views(self) -> list[str]:
        """Create the analysts' views without direct identifiers (analyst.py); returns their names."""
        raise NotImplementedError

    def table_ref(self, table: str) -> str:
        return f"{self.dataset}.{table}"

    def _table(self, name: str) -> Table:
        if name not in TABLES:
            raise KeyError(f"unknown audit table {name!r}")
        return TABLES[name]


class DuckDBWarehouse(AuditWarehouse):
    """Local stand-in: one DuckDB file, same tables and column names as BigQuery."""

    path: str = Field(default=".local/warehouse.duckdb")
    lock_timeout_seconds: float = 60.0

    @property
    def kind(self) -> str:
        return "duckdb"

    @contextmanager
    def _connect(self) -> Iterator[Any]:
        from pathlib import Path

        import duckdb

        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_seconds
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(self.path)
                break
            except duckdb.IOException as exc:
                # DuckDB allows one writer process per file; another run may hold it briefly.
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        try:
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.dataset}"')
            yield con
        finally:
            con.close()

    def _ensure(self, con: Any, table: Table) -> None:
        cols = ", ".join(f'"{c.name}" {_DUCK_TYPES[c.type]}' for c in table.columns)
        con.execute(f'CREATE TABLE IF NOT EXISTS "{self.dataset}"."{table.name}" ({cols})')
        self._ensured.add(table.name)

    def write(self, table: str, rows: pd.DataFrame) -> int:
        spec = self._table(table)
        frame = conform(spec, rows)
        for c in spec.columns:
            if c.type == "TIMESTAMP":
                frame[c.name] = frame[c.name].dt.tz_convert("UTC").dt.tz_localize(None)
        with self._connect() as con:
            self._ensure(con, spec)
            if frame.empty:
                return 0
            cols = ", ".join(f'"{c}"' for c in spec.column_names)
            key = spec.slice_key
            con.register("incoming", frame)
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(
                    f'DELETE FROM "{self.dataset}"."{table}" WHERE "{key}" IN '
                    f'(SELECT DISTINCT "{key}" FROM incoming)'
                )
                con.execute(f'INSERT INTO "{self.dataset}"."{table}" ({cols}) SELECT {cols} FROM incoming')
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
            finally:
                con.unregister("incoming")
        return len(frame)

    def query(self, sql: str) -> pd.DataFrame:
        with self._connect() as con:
            for spec in TABLES.values():
                if spec.name not in self._ensured:
                    self._ensure(con, spec)
            return con.execute(sql.replace("{dataset}", f'"{self.dataset}"')).df()

    def publish_analyst_views(self) -> list[str]:
        """Views without direct identifiers in schema ``{dataset}_analyst`` (see analyst.py)."""
        analyst = analyst_dataset(self.dataset)
        key = f'"{self.dataset}"."{KEY_TABLE}"'
        with self._connect() as con:
            for spec in TABLES.values():
                self._ensure(con, spec)
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{analyst}"')
            con.execute(f"CREATE OR REPLACE TABLE {key} (secret VARCHAR)")
            con.execute(f"INSERT INTO {key} VALUES (?)", [pseudonym_secret()])
            for spec in all_tables():
                source, view = f'"{self.dataset}"."{spec.name}"', f'"{analyst}"."{spec.name}"'
                con.execute(view_sql(spec, source=source, key=key, view=view, dialect="duckdb"))
        return [f"{analyst}.{spec.name}" for spec in all_tables()]


class BigQueryWarehouse(AuditWarehouse):
    """Production history in BigQuery.

    Credentials, in order: ``api_endpoint`` (a local BigQuery-API emulator, anonymous), the
    ``BIGQUERY_CREDENTIALS_PASSWORD`` service-account JSON, else dagster-gcp's BigQueryResource
    (base64 ``gcp_credentials`` or Application Default Credentials).
    """

    bigquery: BigQueryResource
    credentials_json: str = Field(
        default="", description="Service-account JSON (BIGQUERY_CREDENTIALS_PASSWORD)."
    )
    api_endpoint: str = Field(default="", description="Emulator endpoint, e.g. http://127.0.0.1:9050.")
    analyst_readers: str = Field(
        default="",
        description="Who may read the analyst views (BIGQUERY_ANALYST_READERS), e.g. group:analysts@org.is",
    )

    @property
    def kind(self) -> str:
        return "bigquery"

    @contextmanager
    def client(self) -> Iterator[Any]:
        from google.cloud import bigquery

        project = self.bigquery.project
        location = self.bigquery.location
        if self.api_endpoint:
            from google.auth.credentials import AnonymousCredentials

            client = bigquery.Client(
                project=project or "local-project",
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": self.api_endpoint},
                location=location,
            )
        elif self.credentials_json:
            from google.oauth2 import service_account

            info = json.loads(self.credentials_json)
            creds = service_account.Credentials.from_service_account_info(info)
            client = bigquery.Client(
                project=project or info.get("project_id"), credentials=creds, location=location
            )
        else:
            with self.bigquery.get_client() as client:
                yield client
            return
        try:
            yield client
        finally:
            client.close()

    def _full(self, client: Any, table: str) -> str:
        return f"{client.project}.{self.dataset}.{table}"

    def _ensure(self, client: Any, spec: Table) -> None:
        from google.api_core.exceptions import Conflict
        from google.cloud import bigquery

        if spec.name in self._ensured:
            return
        if not self._ensured:
            client.create_dataset(bigquery.Dataset(f"{client.project}.{self.dataset}"), exists_ok=True)
        table = bigquery.Table(self._full(client, spec.name), schema=_bq_schema(spec))
        table.description = spec.description
        table.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field="run_started_at"
        )
        table.clustering_fields = [spec.slice_key]
        with suppress(Conflict):  # a concurrent run created it first
            client.create_table(table, exists_ok=True)
        self._ensured.add(spec.name)

    def write(self, table: str, rows: pd.DataFrame) -> int:
        from google.cloud import bigquery

        spec = self._table(table)
        frame = conform(spec, rows)
        with self.client() as client:
            self._ensure(client, spec)
            if frame.empty:
                return 0
            target = self._full(client, table)
            staging = self._full(client, f"_staging_{table}_{uuid.uuid4().hex[:12]}")
            job = client.load_table_from_json(
                _json_rows(frame, spec),
                staging,
                job_config=bigquery.LoadJobConfig(
                    schema=_bq_schema(spec), write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE
                ),
            )
            job.result()
            cols = ", ".join(spec.column_names)
            key = spec.slice_key
            # One job, one transaction: readers never see the slice deleted but not yet rewritten.
            script = (
                "BEGIN TRANSACTION; "
                f"DELETE FROM `{target}` WHERE {key} IN (SELECT DISTINCT {key} FROM `{staging}`); "
                f"INSERT INTO `{target}` ({cols}) SELECT {cols} FROM `{staging}`; "
                "COMMIT TRANSACTION; "
                f"DROP TABLE `{staging}`;"
            )
            try:
                client.query(script).result()
            except Exception:
                client.delete_table(staging, not_found_ok=True)
                raise
        return len(frame)

    def publish_analyst_views(self) -> list[str]:
        """Authorized views without direct identifiers in dataset ``{dataset}_analyst``.

        One script job writes the pseudonym key table and (re)creates every view; then each view
        is authorized on the audit dataset and ``analyst_readers`` may read the analyst dataset.
        """
        from google.cloud import bigquery

        with self.client() as client:
            for spec in TABLES.values():
                self._ensure(client, spec)
            analyst = analyst_dataset(self.dataset)
            client.create_dataset(bigquery.Dataset(f"{client.project}.{analyst}"), exists_ok=True)
            key = f"`{client.project}.{self.dataset}.{KEY_TABLE}`"
            statements = [f"CREATE OR REPLACE TABLE {key} AS SELECT @secret AS secret"]
            for spec in all_tables():
                source = f"`{self._full(client, spec.name)}`"
                view = f"`{client.project}.{analyst}.{spec.name}`"
                statements.append(view_sql(spec, source=source, key=key, view=view, dialect="bigquery"))
            secret = bigquery.ScalarQueryParameter("secret", "STRING", pseudonym_secret())
            job = bigquery.QueryJobConfig(query_parameters=[secret])
            client.query(";\n".join(statements) + ";", job_config=job).result()
            self._authorize(client, analyst)
        return [f"{analyst}.{spec.name}" for spec in all_tables()]

    def _authorize(self, client: Any, analyst: str) -> None:
        from google.cloud import bigquery

        source = client.get_dataset(f"{client.project}.{self.dataset}")
        entries = list(source.access_entries)
        for spec in all_tables():
            view = {"projectId": client.project, "datasetId": analyst, "tableId": spec.name}
            entry = bigquery.AccessEntry(None, "view", view)
            if entry not in entries:
                entries.append(entry)
        source.access_entries = entries
        readers = [r.strip() for r in self.analyst_readers.split(",") if r.strip()]
        try:
            client.update_dataset(source, ["access_entries"])
            if readers:
                target = client.get_dataset(f"{client.project}.{analyst}")
                grants = list(target.access_entries)
                for reader in readers:
                    kind, _, who = reader.partition(":")
                    entity = {"group": "groupByEmail", "user": "userByEmail"}.get(kind, "groupByEmail")
                    grants.append(bigquery.AccessEntry("READER", entity, who or kind))
                target.access_entries = grants
                client.update_dataset(target, ["access_entries"])
        except Exception:
            if not self.api_endpoint:  # the emulator keeps no access lists; production must
                raise

    def query(self, sql: str) -> pd.DataFrame:
        with self.client() as client:
            for spec in TABLES.values():
                self._ensure(client, spec)
            rows = client.query_and_wait(sql.replace("{dataset}", f"`{client.project}.{self.dataset}`"))
            arrow = rows.to_arrow(create_bqstorage_client=False)
            return arrow.to_pandas(types_mapper=_NULLABLE.get)


def _nullable_types() -> dict[Any, Any]:
    import pyarrow as pa

    return {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}


_NULLABLE = _nullable_types()


def _json_rows(frame: pd.DataFrame, spec: Table) -> list[dict[str, Any]]:
    """Rows for a JSON load job: plain Python values, ISO timestamps, None for missing."""
    kinds = {c.name: c.type for c in spec.columns}
    out = []
    for record in frame.to_dict("records"):
        row = {}
        for name, value in record.items():
            if (
                value is None
                or value is pd.NA
                or value is pd.NaT
                or (isinstance(value, float) and value != value)
            ):
                row[name] = None
            elif kinds[name] == "TIMESTAMP":
                row[name] = pd.Timestamp(value).isoformat()
            elif kinds[name] == "INT64":
                row[name] = int(value)
            elif kinds[name] == "FLOAT64":
                row[name] = float(value)
            elif kinds[name] == "BOOL":
                row[name] = bool(value)
            else:
                row[name] = str(value)
        out.append(row)
    return out


def _bq_schema(spec: Table) -> list[Any]:
    from google.cloud import bigquery

    return [
        bigquery.SchemaField(c.name, c.type, mode="NULLABLE", description=c.description or None)
        for c in spec.columns
    ]
