"""The audit warehouse's settings: BigQuery in production, DuckDB under the state dir locally."""

from __future__ import annotations

from typing import Any

from dagster_gcp import BigQueryResource
from pydantic import SecretStr

from ..config import Settings, setting
from ..settings import is_production, state_dir
from .resources import AuditWarehouse, BigQueryWarehouse, DuckDBWarehouse


class WarehouseSettings(Settings):
    GROUP = "Audit warehouse"

    project: str | None = setting(
        "BIGQUERY_PROJECT",
        kind="string",
        shown_default="ADC's project",
        meaning="the audit warehouse's project (production uses BigQuery; local uses DuckDB)",
        production=True,
    )
    dataset: str = setting(
        "BIGQUERY_DATASET",
        AuditWarehouse.model_fields["dataset"].default,
        kind="string",
        meaning="the audit dataset (`membership_audit_analyst` holds the analyst views)",
        production=True,
    )
    location: str | None = setting(
        "BIGQUERY_LOCATION", kind="string", shown_default="BigQuery's default", meaning="dataset location"
    )
    credentials: SecretStr | None = setting(
        "BIGQUERY_CREDENTIALS_PASSWORD",
        kind="JSON secret",
        shown_default="Application Default Credentials",
        meaning="service-account JSON for BigQuery (and scratch in Cloud Storage)",
    )
    analyst_readers: str = setting(
        "BIGQUERY_ANALYST_READERS",
        "",
        kind="comma-separated members",
        shown_default="none",
        meaning="who may read the analyst views, e.g. `group:analysts@example.org`",
    )

    def resources(self, env: str | None = None) -> dict[str, Any]:
        if not is_production(env):
            return {"warehouse": DuckDBWarehouse(path=str(state_dir() / "warehouse.duckdb"))}
        return {
            "warehouse": BigQueryWarehouse(
                bigquery=BigQueryResource(project=self.project, location=self.location),
                dataset=self.dataset,
                credentials_json=self.env_var("credentials"),
                analyst_readers=self.analyst_readers,
            )
        }
