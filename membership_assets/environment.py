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
import re
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

# Loopback ports of the simulators, the same in every process (`simulators`, `dev`, `demo` and the
# code location's resources), so they meet; set these variables when 8765/8766 are taken.
ACTION_BUILDER_SIM_PORT = int(os.getenv("ACTION_BUILDER_SIM_PORT", "8765"))
DJANGO_SIM_PORT = int(os.getenv("DJANGO_SIM_PORT", "8766"))
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


def sync_api_settings(env: str | None = None, host: str | None = None, port: int | None = None):
    """The webhook receiver / sync API's settings (a plain process, not a Dagster resource).

    Local: the members database of ``local_resources`` and the documented non-secret defaults,
    which only a server bound to loopback accepts. Production: ``REGISTRY_WEBHOOK_SECRET_PASSWORD``
    and ``MEMBERS_DB_URL`` are required; ``SYNC_API_KEY_PASSWORD`` is optional (without it the
    API accepts signed requests only); each ``..._PREVIOUS_PASSWORD`` is accepted too while a
    rotation is under way. Raises ``SyncApiConfigError`` listing every problem at once.
    """
    from .registry.credentials import LOCAL_API_KEY, LOCAL_WEBHOOK_SECRET
    from .registry.webhook import SyncApiConfigError, SyncApiSettings, settings_problems

    production = (env or get_environment()) == PRODUCTION
    d = SyncApiSettings(members_db_url="", webhook_secret="")
    problems: list[str] = []
    try:
        db_url = members_db_connection_url(env)
    except KeyError as exc:
        problems.append(f"{exc.args[0]} is not set (the members database)")
        db_url = ""
    if production:
        secret = os.getenv("REGISTRY_WEBHOOK_SECRET_PASSWORD")  # unset: settings_problems says so
        api_key = os.getenv("SYNC_API_KEY_PASSWORD")
    else:
        secret = os.getenv("REGISTRY_WEBHOOK_SECRET_PASSWORD", LOCAL_WEBHOOK_SECRET)
        api_key = os.getenv("SYNC_API_KEY_PASSWORD", LOCAL_API_KEY)
    if api_key is not None and not api_key.strip():
        problems.append("SYNC_API_KEY_PASSWORD is set but empty (unset it to accept signed requests only)")
    num = _NumberReader(problems)
    settings = SyncApiSettings(
        members_db_url=db_url,
        webhook_secret=secret or "",
        api_key=(api_key or "").strip(),
        previous_webhook_secret=os.getenv("REGISTRY_WEBHOOK_SECRET_PREVIOUS_PASSWORD", "").strip(),
        previous_api_key=os.getenv("SYNC_API_KEY_PREVIOUS_PASSWORD", "").strip(),
        allowed_networks=_csv("SYNC_API_ALLOWED_IPS"),
        trusted_proxies=_csv("SYNC_API_TRUSTED_PROXIES"),
        rate_per_second=num.get("SYNC_API_RATE_LIMIT", d.rate_per_second, float, 0.01, 100_000),
        rate_burst=num.get("SYNC_API_RATE_BURST", d.rate_burst, int, 1, 1_000_000),
        max_connections=num.get("SYNC_API_MAX_CONNECTIONS", d.max_connections, int, 16, 100_000),
        header_timeout=num.get("SYNC_API_HEADER_TIMEOUT", d.header_timeout, float, 0.1, 300),
        body_timeout=num.get("SYNC_API_BODY_TIMEOUT", d.body_timeout, float, 0.1, 300),
        keepalive_timeout=num.get("SYNC_API_KEEPALIVE_TIMEOUT", d.keepalive_timeout, float, 1, 300),
        db_timeout=num.get("SYNC_API_DB_TIMEOUT", d.db_timeout, float, 0.1, 300),
        max_pending_events=num.get("SYNC_API_MAX_PENDING_EVENTS", d.max_pending_events, int, 1, 10**9),
        stats_seconds=num.get("SYNC_API_STATS_SECONDS", d.stats_seconds, float, 0.1, 3600),
        host=host or os.getenv("SYNC_API_HOST", d.host),
        port=port if port is not None else num.get("SYNC_API_PORT", d.port, int, 0, 65535),
        auto_migrate=not production,
    )
    problems += settings_problems(settings, production)
    if problems:
        raise SyncApiConfigError(problems)
    return settings


def _csv(name: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in os.getenv(name, "").split(",") if n.strip())


class _NumberReader:
    """Numbers from the environment, strictly (ASCII, finite, in range); problems collected."""

    def __init__(self, problems: list[str]):
        self.problems = problems

    def get(self, name: str, default, kind: type, low: float, high: float):
        raw = os.getenv(name)
        if raw is None or not raw.strip():
            return default
        raw = raw.strip()
        pattern = r"[0-9]{1,12}" if kind is int else r"[0-9]{1,12}(\.[0-9]{1,6})?"
        value = kind(raw) if re.fullmatch(pattern, raw) else None
        if value is None or not low <= value <= high:
            shown = raw if len(raw) <= 20 and raw.isascii() and raw.isprintable() else "(unprintable)"
            kind_name = "an integer" if kind is int else "a number"
            self.problems.append(f"{name}={shown} must be {kind_name} from {low:g} to {high:g}")
            return default
        return value


def admin_settings(env: str | None = None, host: str = "127.0.0.1"):
    """The admin page's accounts (``SYNC_ADMIN_USERS_PASSWORD``: name:hash pairs), session secret
    (``SYNC_ADMIN_SESSION_SECRET_PASSWORD``; required in production when accounts exist, so
    every replica accepts a session), session length (``SYNC_ADMIN_SESSION_HOURS``, default 8),
    public origin behind a proxy (``SYNC_ADMIN_ORIGIN``) and the registry its preview reads.
    Local: the account ``admin`` / ``simulated-admin-password`` unless accounts are given, and
    only on a server bound to loopback (that password is public)."""
    import secrets

    from .registry.admin import AdminSettings
    from .registry.admin_auth import AdminConfigError, hash_password, parse_users, verify_password
    from .registry.credentials import LOCAL_ADMIN_PASSWORD, LOCAL_ADMIN_USER, is_loopback, weakness
    from .registry.preview import registry_planner

    production = (env or get_environment()) == PRODUCTION
    users = parse_users(os.getenv("SYNC_ADMIN_USERS_PASSWORD", ""))
    if not users and not production and is_loopback(host):
        users = {LOCAL_ADMIN_USER: hash_password(LOCAL_ADMIN_PASSWORD)}
    elif production or not is_loopback(host):
        public = [name for name, stored in users.items() if verify_password(LOCAL_ADMIN_PASSWORD, stored)]
        if public:
            raise AdminConfigError(
                f"SYNC_ADMIN_USERS_PASSWORD: the password of {', '.join(public)} is the public local default"
            )
    secret = os.getenv("SYNC_ADMIN_SESSION_SECRET_PASSWORD", "")
    if not secret and production and users:
        raise AdminConfigError("SYNC_ADMIN_SESSION_SECRET_PASSWORD is required with admin accounts")
    if secret and (production or not is_loopback(host)) and (problem := weakness(secret)):
        raise AdminConfigError(f"SYNC_ADMIN_SESSION_SECRET_PASSWORD {problem}")
    resources = resources_for(env)
    django = resources["django"]
    values = {k: getattr(django, k) for k in type(django).model_fields}
    values = {k: (v.get_value() if isinstance(v, dg.EnvVar) else v) for k, v in values.items()}
    planner = None
    if values.get("base_url") and values.get("api_key"):
        planner = registry_planner(DjangoRegistryResource(**values), resources["registry_policy"])
    return AdminSettings(
        users=users,
        # Without a configured secret (local), sessions last until this process restarts.
        session_secret=secret or secrets.token_urlsafe(32),
        session_seconds=_session_seconds(os.getenv("SYNC_ADMIN_SESSION_HOURS", "8")),
        public_origin=os.getenv("SYNC_ADMIN_ORIGIN", "").rstrip("/"),
        planner=planner,
    )


def _session_seconds(hours: str) -> int:
    from .registry.admin_auth import AdminConfigError

    try:
        seconds = int(float(hours) * 3600)
    except ValueError:
        seconds = 0
    if not 60 <= seconds <= 7 * 24 * 3600:
        raise AdminConfigError("SYNC_ADMIN_SESSION_HOURS is a number of hours between 0.02 and 168")
    return seconds


def preflight_settings(env: str | None = None):
    """What the preflight reads beyond the jobs' resources: ``SENDGRID_API_URL`` (default
    SendGrid's), ``SYNC_API_URL`` (the webhook receiver's base URL as Django reaches it) and the
    webhook secret the receiver and Django share."""
    from .preflight import PreflightSettings
    from .registry.credentials import LOCAL_WEBHOOK_SECRET

    production = (env or get_environment()) == PRODUCTION
    default_secret = "" if production else LOCAL_WEBHOOK_SECRET
    return PreflightSettings(
        sendgrid_api_url=os.getenv("SENDGRID_API_URL", PreflightSettings.sendgrid_api_url),
        sync_api_url=os.getenv("SYNC_API_URL", ""),
        webhook_secret=os.getenv("REGISTRY_WEBHOOK_SECRET_PASSWORD", default_secret),
        production=production,
    )


def scratch_io_manager(env: str | None = None) -> RunScratchIOManager:
    """Where steps hand data to each other: gs://bucket/prefix in production, so every run worker
    sees it (MEMBERSHIP_SCRATCH_URL, with the BigQuery service account or ADC); locally the
    Dagster instance's storage directory."""
    production = (env or get_environment()) == PRODUCTION
    return RunScratchIOManager(
        base_path=os.getenv("MEMBERSHIP_SCRATCH_URL", ""),
        credentials_json=_secret("BIGQUERY_CREDENTIALS_PASSWORD") if production else "",
        production=production,
        state_dir=str(state_dir()) if production else "",
    )


def resources_for(env: str | None = None) -> dict[str, Any]:
    resources = production_resources() if (env or get_environment()) == PRODUCTION else local_resources()
    return {**resources, "io_manager": scratch_io_manager(env)}
