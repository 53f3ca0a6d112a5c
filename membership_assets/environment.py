"""The one switch between the embedded default and production services.

``MEMBERSHIP_ENV=local`` (default): the local Action Builder and Django simulators over HTTP,
DuckDB for audit history, a SQLite members database and an .eml outbox, all under
``MEMBERSHIP_STATE_DIR`` (default ``./.local``). No credentials needed.

``MEMBERSHIP_ENV=production``: the real services, configured by environment variables; secrets
follow the ``{NAME}_PASSWORD`` convention and are read at run launch (``EnvVar``), never shown in
the UI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_gcp import BigQueryResource

from .action_builder.resources import ActionBuilderResource
from .notify.resources import FileOutboxEmail, Recipients, SendGridEmail
from .registry.resources import DjangoRegistryResource, MembersDatabase, RegistrySyncPolicy
from .warehouse.resources import BigQueryWarehouse, DuckDBWarehouse

LOCAL = "local"
PRODUCTION = "production"

# Fixed loopback ports, so `python -m membership_assets simulators` and `dagster dev` meet.
ACTION_BUILDER_SIM_PORT = 8765
DJANGO_SIM_PORT = 8766
SIMULATED_AB_TOKEN = "simulated-action-builder-token"  # not secrets: the simulators' own tokens
SIMULATED_DJANGO_TOKEN = "simulated-django-token"


def get_environment() -> str:
    env = os.getenv("MEMBERSHIP_ENV", LOCAL).strip().lower()
    if env not in (LOCAL, PRODUCTION):
        raise ValueError(f"MEMBERSHIP_ENV must be {LOCAL!r} or {PRODUCTION!r}, not {env!r}")
    return env


def state_dir() -> Path:
    return Path(os.getenv("MEMBERSHIP_STATE_DIR", ".local")).resolve()


def local_rate_limit() -> float:
    """The simulator enforces this and the client paces to it (production: 4 req/s)."""
    return float(os.getenv("ACTION_BUILDER_RATE_LIMIT", "100"))


def local_resources() -> dict[str, Any]:
    state = state_dir()
    ab_url = os.getenv("ACTION_BUILDER_BASE_URL", f"http://127.0.0.1:{ACTION_BUILDER_SIM_PORT}/api/rest/v1")
    return {
        "action_builder": ActionBuilderResource(
            credentials=json.dumps({"api_token": SIMULATED_AB_TOKEN, "subdomain": "simulated"}),
            base_url=ab_url,
            campaign_id=os.getenv("ACTION_BUILDER_CAMPAIGN_ID", ""),
            rate_limit=local_rate_limit(),
            checkpoint_path=str(state / "checkpoints" / "action_builder.sqlite"),
            reports_dir=str(state / "reports"),
            **action_builder_names(),
        ),
        "email": FileOutboxEmail(directory=str(state / "outbox"), from_address="membership-sync@localhost"),
        "recipients": Recipients(
            tag_report=os.getenv("REPORT_RECIPIENTS", "organizers@example.org"),
            admins=os.getenv("ADMIN_EMAILS", "admins@example.org"),
        ),
        "warehouse": DuckDBWarehouse(path=str(state / "warehouse.duckdb")),
        "django": DjangoRegistryResource(
            base_url=os.getenv("DJANGO_API_URL", f"http://127.0.0.1:{DJANGO_SIM_PORT}"),
            api_key=SIMULATED_DJANGO_TOKEN,
        ),
        "members_db": MembersDatabase(
            url=os.getenv("MEMBERS_DB_URL", f"sqlite:///{state / 'members.sqlite'}")
        ),
        "registry_policy": registry_policy(),
    }


def registry_policy() -> RegistrySyncPolicy:
    """Guard thresholds, each overridable by an environment variable."""
    defaults = RegistrySyncPolicy()
    return RegistrySyncPolicy(
        max_removals=int(os.getenv("REGISTRY_MAX_REMOVALS", defaults.max_removals)),
        max_removal_fraction=float(os.getenv("REGISTRY_MAX_REMOVAL_FRACTION", defaults.max_removal_fraction)),
        max_shrink_fraction=float(os.getenv("REGISTRY_MAX_SHRINK_FRACTION", defaults.max_shrink_fraction)),
        max_reject_fraction=float(os.getenv("REGISTRY_MAX_REJECT_FRACTION", defaults.max_reject_fraction)),
        status_map=os.getenv("REGISTRY_STATUS_MAP", defaults.status_map),
    )


def _secret(name: str) -> Any:
    """EnvVar when set (resolved at launch, hidden in the UI), else empty (optional secrets)."""
    return dg.EnvVar(name) if os.getenv(name) else ""


# The campaign's own names for what tag hygiene reads (the scan checks them against its catalog).
ACTION_BUILDER_NAME_VARIABLES = {
    "unit_field": "ACTION_BUILDER_UNIT_FIELD",
    "membership_type_field": "ACTION_BUILDER_TYPE_FIELD",
    "membership_status_field": "ACTION_BUILDER_STATUS_FIELD",
    "unit_connection_type": "ACTION_BUILDER_CONNECTION_TYPE",
    "unit_entity_type": "ACTION_BUILDER_UNIT_ENTITY_TYPE",
}


def action_builder_names() -> dict[str, str]:
    """Field, connection type and entity type names set by environment variable (else defaults)."""
    return {
        field: os.environ[var] for field, var in ACTION_BUILDER_NAME_VARIABLES.items() if var in os.environ
    }


def production_resources() -> dict[str, Any]:
    state = state_dir()
    return {
        "action_builder": ActionBuilderResource(
            credentials=dg.EnvVar("ACTION_BUILDER_CREDENTIALS_PASSWORD"),
            campaign_id=os.getenv("ACTION_BUILDER_CAMPAIGN_ID", ""),
            rate_limit=float(os.getenv("ACTION_BUILDER_RATE_LIMIT", "4")),
            checkpoint_path=str(state / "checkpoints" / "action_builder.sqlite"),
            reports_dir=str(state / "reports"),
            **action_builder_names(),
        ),
        "email": SendGridEmail(
            api_key=dg.EnvVar("SENDGRID_API_KEY_PASSWORD"),
            from_address=os.getenv("EMAIL_FROM", "membership-sync@example.org"),
        ),
        "recipients": Recipients(
            tag_report=os.getenv("REPORT_RECIPIENTS", ""), admins=os.getenv("ADMIN_EMAILS", "")
        ),
        "warehouse": BigQueryWarehouse(
            bigquery=BigQueryResource(
                project=os.getenv("BIGQUERY_PROJECT"), location=os.getenv("BIGQUERY_LOCATION")
            ),
            dataset=os.getenv("BIGQUERY_DATASET", "membership_audit"),
            credentials_json=_secret("BIGQUERY_CREDENTIALS_PASSWORD"),
        ),
        "django": DjangoRegistryResource(
            base_url=dg.EnvVar("DJANGO_API_URL"),
            api_key=dg.EnvVar("DJANGO_API_KEY_PASSWORD"),
            auth_scheme=os.getenv("DJANGO_AUTH_SCHEME", "Token"),
            members_path=os.getenv("DJANGO_MEMBERS_PATH", "api/members/eligible"),
        ),
        "members_db": MembersDatabase(url=dg.EnvVar("MEMBERS_DB_URL")),
        "registry_policy": registry_policy(),
    }


def resources_for(env: str | None = None) -> dict[str, Any]:
    return production_resources() if (env or get_environment()) == PRODUCTION else local_resources()
