"""The registry sync's settings: the Django API, the members database, the guards, the receiver
and the admin page, typed and read from the environment in one place."""

from __future__ import annotations

import secrets
from typing import Any

import dagster as dg
from pydantic import SecretStr

from ..config import CommaList, ConfigError, Flag, PlainFloat, PlainInt, Settings, setting
from ..privacy import with_password
from ..settings import (
    DJANGO_SIM_PORT,
    LOCAL_ADMIN_PASSWORD,
    LOCAL_ADMIN_USER,
    LOCAL_API_KEY,
    LOCAL_WEBHOOK_SECRET,
    SIMULATED_DJANGO_TOKEN,
    is_production,
    state_dir,
)
from .admin import AdminSettings
from .admin_auth import AdminConfigError, hash_password, parse_users, verify_password
from .client import MEMBERS_PATH
from .credentials import is_loopback, weakness
from .events import DebouncePolicy
from .guards import GuardPolicy
from .preview import registry_planner
from .resources import DjangoRegistryResource, MembersDatabase, RegistrySyncPolicy
from .webhook import SyncApiConfigError, SyncApiSettings, settings_problems

_GUARDS = GuardPolicy()
_POLICY = RegistrySyncPolicy()
_DEBOUNCE = DebouncePolicy()
_RECEIVER = SyncApiSettings(members_db_url="", webhook_secret="")


class RegistrySettings(Settings):
    GROUP = "Django registry and the sync"

    django_url: str = setting(
        "DJANGO_API_URL",
        "",
        local=f"http://127.0.0.1:{DJANGO_SIM_PORT}",
        kind="URL",
        shown_default="local: the Django stand-in",
        meaning="the registry's base URL (shown by its variable name in the UI; a user name in it pairs with `DJANGO_API_PASSWORD`)",
        production=True,
    )
    django_api_key: SecretStr | None = setting(
        "DJANGO_API_KEY_PASSWORD",
        kind="secret",
        shown_default="local: the stand-in's token",
        meaning="the registry's API token",
        production=True,
    )
    django_password: SecretStr | None = setting(
        "DJANGO_API_PASSWORD",
        kind="secret",
        shown_default="unset",
        meaning="the registry's API token by the `{NAME}_PASSWORD` convention (sent as `Authorization: Token …`, "
        "wins over `DJANGO_API_KEY_PASSWORD`); if `DJANGO_API_URL` names a user, that user's basic-auth password",
    )
    auth_scheme: str = setting(
        "DJANGO_AUTH_SCHEME",
        "Token",
        kind="`Token` or `Bearer`",
        meaning="the `Authorization` scheme of the registry",
    )
    members_path: str = setting(
        "DJANGO_MEMBERS_PATH", MEMBERS_PATH, kind="path", meaning="the members listing under `DJANGO_API_URL`"
    )
    whole_list_etag: Flag = setting(
        "DJANGO_WHOLE_LIST_ETAG",
        False,
        kind="boolean (`true`)",
        shown_default="false",
        meaning="`true` when the listing's ETag changes with any member (polling: 1 request per tick)",
    )
    members_db_url: str = setting(
        "MEMBERS_DB_URL",
        "",
        kind="SQLAlchemy URL without password",
        shown_default="local: SQLite under the state dir",
        meaning="the eligibility (members) database, e.g. `postgresql+psycopg://sync@host/ekklesia`; migrate it with `python -m membership_assets migrate` before deploying new code",
        production=True,
    )
    members_db_password: SecretStr | None = setting(
        "MEMBERS_DB_PASSWORD",
        kind="secret",
        shown_default="unset",
        meaning="the members database's password (merged into the URL at use, never shown)",
        production=True,
    )
    max_removals: PlainInt = setting(
        "REGISTRY_MAX_REMOVALS",
        _GUARDS.max_removals,
        kind="integer",
        meaning="guard: most members one sync (or rollback) may remove or take eligibility from (Entra's default)",
        ge=0,
        le=10**9,
    )
    max_removal_fraction: PlainFloat = setting(
        "REGISTRY_MAX_REMOVAL_FRACTION",
        _GUARDS.max_removal_fraction,
        kind="fraction",
        meaning="guard: most active/eligible members one sync may remove or take eligibility from, from 100 members (Okta's default)",
        ge=0,
        le=1,
    )
    max_shrink_fraction: PlainFloat = setting(
        "REGISTRY_MAX_SHRINK_FRACTION",
        _GUARDS.max_shrink_fraction,
        kind="fraction",
        meaning="guard: how much smaller than at the last successful sync the listing (or, for a rollback, the roll) may get",
        ge=0,
        le=1,
    )
    max_reject_fraction: PlainFloat = setting(
        "REGISTRY_MAX_REJECT_FRACTION",
        _GUARDS.max_reject_fraction,
        kind="fraction",
        meaning="guard: share of listed rows that may fail validation",
        ge=0,
        le=1,
    )
    status_map: str = setting(
        "REGISTRY_STATUS_MAP",
        _POLICY.status_map,
        kind="JSON object",
        shown_default="`active`; `suspended`/`unpaid` → suspended; `inactive`/`deleted` → removed",
        meaning="maps the registry's statuses to `active` / `suspended` / `removed`; any other status is rejected",
    )
    missing_status: str = setting(
        "REGISTRY_MISSING_STATUS",
        _POLICY.missing_status,
        kind="`reject` or `active`",
        meaning="rows with no status field: quarantined (a listing where no row has one fails the run), or all members in good standing (only for an endpoint that lists nobody else)",
    )
    sync_cron: str = setting(
        "REGISTRY_SYNC_CRON",
        "0 * * * *",
        kind="cron",
        meaning="when `registry_hourly` runs (Atlantic/Reykjavik)",
    )
    events_quiet_seconds: PlainFloat = setting(
        "REGISTRY_EVENTS_QUIET_SECONDS",
        _DEBOUNCE.quiet_seconds,
        kind="seconds",
        meaning="debounce: a webhook-started sync waits until no event arrived for this long",
        ge=0,
        le=3600,
    )
    events_max_wait_seconds: PlainFloat = setting(
        "REGISTRY_EVENTS_MAX_WAIT_SECONDS",
        _DEBOUNCE.max_wait_seconds,
        kind="seconds",
        meaning="debounce: ... or until the oldest pending event waited this long",
        ge=0,
        le=86400,
    )

    @property
    def debounce_policy(self) -> DebouncePolicy:
        return DebouncePolicy(
            quiet_seconds=self.events_quiet_seconds, max_wait_seconds=self.events_max_wait_seconds
        )

    def registry_policy(self) -> RegistrySyncPolicy:
        return RegistrySyncPolicy(
            max_removals=self.max_removals,
            max_removal_fraction=self.max_removal_fraction,
            max_shrink_fraction=self.max_shrink_fraction,
            max_reject_fraction=self.max_reject_fraction,
            status_map=self.status_map,
            missing_status=self.missing_status.strip().lower(),
        )

    def resources(self, env: str | None = None) -> dict[str, Any]:
        production = is_production(env)
        local_db = f"sqlite:///{state_dir() / 'members.sqlite'}"
        return {
            # Given URLs and secrets are passed as EnvVar: read at launch, the UI shows the name only.
            "django": DjangoRegistryResource(
                base_url=self.launch_var("django_url")
                if production
                else self.env_var("django_url", self.django_url),
                password=self.env_var("django_password"),
                api_key=self.env_var("django_api_key")
                if production
                else self.secret("django_api_key") or SIMULATED_DJANGO_TOKEN,
                auth_scheme=self.auth_scheme,
                members_path=self.members_path,
                whole_list_etag=self.whole_list_etag,
            ),
            "members_db": MembersDatabase(
                url=self.launch_var("members_db_url")
                if production
                else self.env_var("members_db_url", local_db),
                password=self.env_var("members_db_password"),
                auto_migrate=not production,
            ),
            "registry_policy": self.registry_policy(),
        }

    def members_db_connection_url(self, env: str | None = None) -> str:
        """The members database URL with its password merged in, for the processes that connect
        outside a Dagster run (`migrate`, `sync-api`); never for showing."""
        url = self.members_db_url or (
            "" if is_production(env) else f"sqlite:///{state_dir() / 'members.sqlite'}"
        )
        if not url:
            raise KeyError(self.variable("members_db_url"))
        return with_password(url, self.secret("members_db_password"))

    def django_resource(self, env: str | None = None) -> DjangoRegistryResource | None:
        """The registry resource with its values resolved, for a process outside Dagster (the
        admin page's preview); None when the registry's URL or token is not configured here."""
        django = self.resources(env)["django"]
        values = {k: getattr(django, k) for k in type(django).model_fields}
        values = {k: v.get_value() if isinstance(v, dg.EnvVar) else v for k, v in values.items()}
        if not values.get("base_url") or not (values.get("api_key") or values.get("password")):
            return None
        return DjangoRegistryResource(**values)


class ReceiverSettings(Settings):
    GROUP = "Webhook receiver and sync API (`sync-api`)"

    webhook_secret: SecretStr | None = setting(
        "REGISTRY_WEBHOOK_SECRET_PASSWORD",
        local=LOCAL_WEBHOOK_SECRET,
        kind="secret (32+ bytes)",
        shown_default=f"local: `{LOCAL_WEBHOOK_SECRET}`",
        meaning="shared secret of Django's signed webhooks and signed API calls (required by `sync-api` in production)",
        production=True,
    )
    previous_webhook_secret: SecretStr | None = setting(
        "REGISTRY_WEBHOOK_SECRET_PREVIOUS_PASSWORD",
        kind="secret",
        shown_default="unset",
        meaning="also accepted during a secret rotation",
    )
    api_key: SecretStr | None = setting(
        "SYNC_API_KEY_PASSWORD",
        local=LOCAL_API_KEY,
        kind="secret",
        shown_default=f"local: `{LOCAL_API_KEY}`",
        meaning="API key of `/api/sync/*` (`X-Api-Key`; production: optional, only signed calls without it)",
    )
    previous_api_key: SecretStr | None = setting(
        "SYNC_API_KEY_PREVIOUS_PASSWORD",
        kind="secret",
        shown_default="unset",
        meaning="also accepted during a key rotation",
    )
    host: str = setting(
        "SYNC_API_HOST", _RECEIVER.host, kind="address", meaning="listen address (`--host` overrides)"
    )
    port: PlainInt = setting(
        "SYNC_API_PORT",
        _RECEIVER.port,
        kind="port",
        meaning="listen port (`--port` overrides)",
        ge=0,
        le=65535,
    )
    allowed_networks: CommaList = setting(
        "SYNC_API_ALLOWED_IPS",
        (),
        kind="comma-separated addresses/CIDRs",
        shown_default="any",
        meaning="clients allowed to call (others get 403)",
    )
    trusted_proxies: CommaList = setting(
        "SYNC_API_TRUSTED_PROXIES",
        (),
        kind="comma-separated CIDRs",
        shown_default="none",
        meaning="proxies whose `X-Forwarded-For` is believed",
    )
    rate_per_second: PlainFloat = setting(
        "SYNC_API_RATE_LIMIT",
        _RECEIVER.rate_per_second,
        kind="requests/second",
        meaning="per-client token bucket rate",
        ge=0.01,
        le=100_000,
    )
    rate_burst: PlainInt = setting(
        "SYNC_API_RATE_BURST",
        _RECEIVER.rate_burst,
        kind="integer",
        meaning="per-client token bucket size (a Django bulk save passes)",
        ge=1,
        le=1_000_000,
    )
    max_connections: PlainInt = setting(
        "SYNC_API_MAX_CONNECTIONS",
        _RECEIVER.max_connections,
        kind="integer",
        meaning="open connections (kept below the file limit)",
        ge=16,
        le=100_000,
    )
    header_timeout: PlainFloat = setting(
        "SYNC_API_HEADER_TIMEOUT",
        _RECEIVER.header_timeout,
        kind="seconds",
        meaning="from connection to full headers",
        ge=0.1,
        le=300,
    )
    body_timeout: PlainFloat = setting(
        "SYNC_API_BODY_TIMEOUT",
        _RECEIVER.body_timeout,
        kind="seconds",
        meaning="from a request's first byte to its last",
        ge=0.1,
        le=300,
    )
    keepalive_timeout: PlainFloat = setting(
        "SYNC_API_KEEPALIVE_TIMEOUT",
        _RECEIVER.keepalive_timeout,
        kind="seconds",
        meaning="idle keep-alive connections",
        ge=1,
        le=300,
    )
    db_timeout: PlainFloat = setting(
        "SYNC_API_DB_TIMEOUT",
        _RECEIVER.db_timeout,
        kind="seconds",
        meaning="longest wait for the members database (then 503)",
        ge=0.1,
        le=300,
    )
    max_pending_events: PlainInt = setting(
        "SYNC_API_MAX_PENDING_EVENTS",
        _RECEIVER.max_pending_events,
        kind="integer",
        meaning="unconsumed events before webhooks get 429",
        ge=1,
        le=10**9,
    )
    stats_seconds: PlainFloat = setting(
        "SYNC_API_STATS_SECONDS",
        _RECEIVER.stats_seconds,
        kind="seconds",
        meaning="how often refusal counts are written",
        ge=0.1,
        le=3600,
    )
    admin_users: SecretStr | None = setting(
        "SYNC_ADMIN_USERS_PASSWORD",
        kind="`name:hash` pairs",
        shown_default=f"local on loopback: `{LOCAL_ADMIN_USER}` / `{LOCAL_ADMIN_PASSWORD}`",
        meaning="the admin page's accounts (hashes from `python -m membership_assets admin-hash`)",
    )
    admin_session_secret: SecretStr | None = setting(
        "SYNC_ADMIN_SESSION_SECRET_PASSWORD",
        kind="secret (32+ characters)",
        shown_default="random per process",
        meaning="signs admin sessions; required in production when accounts exist, so every replica accepts a session",
    )
    admin_session_hours: str = setting(
        "SYNC_ADMIN_SESSION_HOURS", "8", kind="hours", meaning="admin session length (0.02 to 168)"
    )
    admin_origin: str = setting(
        "SYNC_ADMIN_ORIGIN",
        "",
        kind="URL",
        shown_default="the Host header",
        meaning="the admin page's public origin behind a proxy, e.g. `https://sync.example.org`",
    )


def sync_api_settings(
    env: str | None = None, host: str | None = None, port: int | None = None
) -> SyncApiSettings:
    """The webhook receiver / sync API's settings (a plain process, not a Dagster resource).

    Local: the members database of the local resources and the documented non-secret defaults,
    which only a server bound to loopback accepts. Production: ``REGISTRY_WEBHOOK_SECRET_PASSWORD``
    and ``MEMBERS_DB_URL`` are required; ``SYNC_API_KEY_PASSWORD`` is optional (without it the
    API accepts signed requests only); each ``..._PREVIOUS_PASSWORD`` is accepted too while a
    rotation is under way. Raises ``SyncApiConfigError`` listing every problem at once.
    """
    production = is_production(env)
    problems: list[str] = []
    registry, registry_problems = RegistrySettings.load_checked(env)
    receiver, receiver_problems = ReceiverSettings.load_checked(env)
    problems += registry_problems + receiver_problems
    try:
        db_url = registry.members_db_connection_url(env)
    except KeyError as exc:
        problems.append(f"{exc.args[0]} is not set (the members database)")
        db_url = ""
    if receiver.api_key is not None and not receiver.secret("api_key").strip():
        problems.append("SYNC_API_KEY_PASSWORD is set but empty (unset it to accept signed requests only)")
    settings = SyncApiSettings(
        members_db_url=db_url,
        webhook_secret=receiver.secret("webhook_secret"),
        api_key=receiver.secret("api_key").strip(),
        previous_webhook_secret=receiver.secret("previous_webhook_secret").strip(),
        previous_api_key=receiver.secret("previous_api_key").strip(),
        allowed_networks=receiver.allowed_networks,
        trusted_proxies=receiver.trusted_proxies,
        rate_per_second=receiver.rate_per_second,
        rate_burst=receiver.rate_burst,
        max_connections=receiver.max_connections,
        header_timeout=receiver.header_timeout,
        body_timeout=receiver.body_timeout,
        keepalive_timeout=receiver.keepalive_timeout,
        db_timeout=receiver.db_timeout,
        max_pending_events=receiver.max_pending_events,
        stats_seconds=receiver.stats_seconds,
        host=host or receiver.host,
        port=port if port is not None else receiver.port,
        auto_migrate=not production,
    )
    problems += settings_problems(settings, production)
    if problems:
        raise SyncApiConfigError(problems)
    return settings


def admin_settings(env: str | None = None, host: str = "127.0.0.1") -> AdminSettings:
    """The admin page's accounts, session secret and length, public origin and the registry its
    preview reads. Local: the public local account unless accounts are given, and only on a
    server bound to loopback (that password is public)."""
    production = is_production(env)
    try:
        receiver = ReceiverSettings.load(env)
    except ConfigError as exc:
        raise AdminConfigError("; ".join(exc.problems)) from None
    users = parse_users(receiver.secret("admin_users"))
    if not users and not production and is_loopback(host):
        users = {LOCAL_ADMIN_USER: hash_password(LOCAL_ADMIN_PASSWORD)}
    elif production or not is_loopback(host):
        public = [name for name, stored in users.items() if verify_password(LOCAL_ADMIN_PASSWORD, stored)]
        if public:
            raise AdminConfigError(
                f"SYNC_ADMIN_USERS_PASSWORD: the password of {', '.join(public)} is the public local default"
            )
    secret = receiver.secret("admin_session_secret")
    if not secret and production and users:
        raise AdminConfigError("SYNC_ADMIN_SESSION_SECRET_PASSWORD is required with admin accounts")
    if secret and (production or not is_loopback(host)) and (problem := weakness(secret)):
        raise AdminConfigError(f"SYNC_ADMIN_SESSION_SECRET_PASSWORD {problem}")
    registry = RegistrySettings.load(env)
    django = registry.django_resource(env)
    planner = registry_planner(django, registry.registry_policy()) if django else None
    return AdminSettings(
        users=users,
        # Without a configured secret (local), sessions last until this process restarts.
        session_secret=secret or secrets.token_urlsafe(32),
        session_seconds=_session_seconds(receiver.admin_session_hours),
        public_origin=receiver.admin_origin.rstrip("/"),
        planner=planner,
    )


def _session_seconds(hours: str) -> int:
    try:
        seconds = int(float(hours) * 3600)
    except ValueError:
        seconds = 0
    if not 60 <= seconds <= 7 * 24 * 3600:
        raise AdminConfigError("SYNC_ADMIN_SESSION_HOURS is a number of hours between 0.02 and 168")
    return seconds
