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
from .privacy import with_password
from .registry.resources import DjangoRegistryResource, MembersDatabase, RegistrySyncPolicy
from .scratch import RunScratchIOManager
from .warehouse.resources import BigQueryWarehouse, DuckDBWarehouse

LOCAL = "local"
PRODUCTION = "production"

# Fixed loopback ports, so `python -m membership_assets simulators` and `dagster dev` meet.
ACTION_BUILDER_SIM_PORT = 8765
DJANGO_SIM_PORT = 8766
SIMULATED_AB_TOKEN = "simulated-action-builder-token"  # not secrets: the simulators' own tokens
SIMULATED_DJANGO_TOKEN = "simulated-django-token"


SCHEDULE_STATUS_VAR = "MEMBERSHIP_SCHEDULE_STATUS"


def _schedule_status() -> dg.DefaultScheduleStatus:
    value = (os.getenv(SCHEDULE_STATUS_VAR) or "stopped").strip().lower()
    if value not in ("running", "stopped"):
        raise ValueError(f"{SCHEDULE_STATUS_VAR} must be 'running' or 'stopped', not {value!r}")
    return dg.DefaultScheduleStatus.RUNNING if value == "running" else dg.DefaultScheduleStatus.STOPPED


# Schedules start stopped unless the deployment says `MEMBERSHIP_SCHEDULE_STATUS=running`; a
# schedule started or stopped in the UI keeps that state whatever this says.
SCHEDULE_DEFAULT_STATUS = _schedule_status()
# The hourly registry sync; a deployment may sync more often (the guards hold at any pace).
REGISTRY_SYNC_CRON = os.getenv("REGISTRY_SYNC_CRON", "0 * * * *")


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
        # Given URLs are passed as EnvVar (the UI shows the variable's name, never its value).
        "django": DjangoRegistryResource(
            base_url=_url("DJANGO_API_URL", f"http://127.0.0.1:{DJANGO_SIM_PORT}"),
            password=_secret("DJANGO_API_PASSWORD"),
            api_key=SIMULATED_DJANGO_TOKEN,
        ),
        "members_db": MembersDatabase(
            url=_url("MEMBERS_DB_URL", f"sqlite:///{state / 'members.sqlite'}"),
            password=_secret("MEMBERS_DB_PASSWORD"),
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
        missing_status=os.getenv("REGISTRY_MISSING_STATUS", defaults.missing_status).strip().lower(),
    )


def _secret(name: str) -> Any:
    """EnvVar when set (resolved at launch, hidden in the UI), else empty (optional secrets)."""
    return dg.EnvVar(name) if os.getenv(name) else ""


def _url(name: str, default: str) -> Any:
    """A service URL: EnvVar when set (hidden in the UI), else the local default."""
    return dg.EnvVar(name) if os.getenv(name) else default


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
            analyst_readers=os.getenv("BIGQUERY_ANALYST_READERS", ""),
        ),
        "django": DjangoRegistryResource(
            base_url=dg.EnvVar("DJANGO_API_URL"),
            password=_secret("DJANGO_API_PASSWORD"),
            api_key=_secret("DJANGO_API_KEY_PASSWORD"),  # or the token in DJANGO_API_PASSWORD
            auth_scheme=os.getenv("DJANGO_AUTH_SCHEME", "Token"),
            members_path=os.getenv("DJANGO_MEMBERS_PATH", "api/members/eligible"),
            whole_list_etag=os.getenv("DJANGO_WHOLE_LIST_ETAG", "").lower() == "true",
        ),
        "members_db": MembersDatabase(
            url=dg.EnvVar("MEMBERS_DB_URL"), password=_secret("MEMBERS_DB_PASSWORD"), auto_migrate=False
        ),
        "registry_policy": registry_policy(),
    }


def members_db_connection_url(env: str | None = None) -> str:
    """The members database URL with its password merged in, for the processes that connect
    outside a Dagster run (`migrate`, `sync-api`); never for showing."""
    db = resources_for(env)["members_db"]
    url = db.url.get_value() if isinstance(db.url, dg.EnvVar) else db.url
    if not url:
        raise KeyError("MEMBERS_DB_URL")
    password = db.password.get_value() if isinstance(db.password, dg.EnvVar) else db.password
    return with_password(url, password or "")


def sync_api_settings(env: str | None = None):
    """The webhook receiver / sync API's settings (a plain process, not a Dagster resource).

    Local: the members database of ``local_resources`` and the documented non-secret defaults.
    Production: ``REGISTRY_WEBHOOK_SECRET_PASSWORD`` and ``MEMBERS_DB_URL`` are required;
    ``SYNC_API_KEY_PASSWORD`` is optional (without it the API accepts signed requests only).
    """
    from .registry.webhook import LOCAL_API_KEY, LOCAL_WEBHOOK_SECRET, SyncApiSettings

    defaults = SyncApiSettings(members_db_url="", webhook_secret="")
    db_url = members_db_connection_url(env)
    if (env or get_environment()) == PRODUCTION:
        secret = os.environ["REGISTRY_WEBHOOK_SECRET_PASSWORD"]
        api_key = os.getenv("SYNC_API_KEY_PASSWORD", "")
    else:
        secret = os.getenv("REGISTRY_WEBHOOK_SECRET_PASSWORD", LOCAL_WEBHOOK_SECRET)
        api_key = os.getenv("SYNC_API_KEY_PASSWORD", LOCAL_API_KEY)
    networks = os.getenv("SYNC_API_ALLOWED_IPS", "")
    return SyncApiSettings(
        members_db_url=db_url,
        webhook_secret=secret,
        api_key=api_key,
        allowed_networks=tuple(n.strip() for n in networks.split(",") if n.strip()),
        rate_per_second=float(os.getenv("SYNC_API_RATE_LIMIT", defaults.rate_per_second)),
        rate_burst=int(os.getenv("SYNC_API_RATE_BURST", defaults.rate_burst)),
        host=os.getenv("SYNC_API_HOST", defaults.host),
        port=int(os.getenv("SYNC_API_PORT", defaults.port)),
        auto_migrate=(env or get_environment()) != PRODUCTION,
    )


def scratch_io_manager() -> RunScratchIOManager:
    """Where steps hand data to each other: gs://bucket/prefix in production, so every run worker
    sees it (MEMBERSHIP_SCRATCH_URL); locally the Dagster instance's storage directory."""
    return RunScratchIOManager(base_path=os.getenv("MEMBERSHIP_SCRATCH_URL", ""))


def resources_for(env: str | None = None) -> dict[str, Any]:
    resources = production_resources() if (env or get_environment()) == PRODUCTION else local_resources()
    return {**resources, "io_manager": scratch_io_manager()}
