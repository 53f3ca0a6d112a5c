"""Dagster resources for the member registry sync: the Django API, the members DB, the policy."""

from __future__ import annotations

import json
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from ..connectors.errors import AuthError
from ..privacy import split_credentials, with_password
from .client import MEMBERS_PATH, PAGE_SIZE, DjangoRegistryClient
from .guards import GuardPolicy
from .store import MembersStore
from .validation import DEFAULT_STATUS_MAP, MISSING_STATUS_REJECT


class DjangoRegistryResource(dg.ConfigurableResource):
    """The Django registry's eligible-members endpoint."""

    base_url: str = Field(description="Registry base URL (DJANGO_API_URL), without credentials.")
    password: str = Field(
        default="",
        description="DJANGO_API_PASSWORD: the API token (sent as `Authorization: <scheme> <password>`), "
        "or, when DJANGO_API_URL names a user, that user's basic-auth password.",
    )
    api_key: str = Field(default="", description="API token (DJANGO_API_KEY_PASSWORD).")
    auth_scheme: str = Field(default="Token", description="'Token' (DRF) or 'Bearer'.")
    members_path: str = Field(default=MEMBERS_PATH, description="Path of the eligible-members listing.")
    page_size: int = PAGE_SIZE
    whole_list_etag: bool = Field(
        default=False,
        description="The listing's ETag changes with any member (not only its own page): the "
        "change sensor then needs one request per tick instead of one per page.",
    )
    rate_limit: float = 10.0
    max_attempts: int = 5
    timeout_seconds: float = 60.0

    def credentials(self) -> tuple[str, str]:
        """(URL to connect to, API token). ``{NAME}_PASSWORD`` is the API's secret: with no user
        in the URL it is the token (a password merged into a URL without a user would make
        requests send Basic auth instead of the token, and every request would get a 401)."""
        _, url_auth = split_credentials(self.base_url)
        if self.password and (url_auth is None or not url_auth[0]):
            return split_credentials(self.base_url)[0], self.password
        token = self.api_key
        if not token:
            raise AuthError(
                "no API token: set DJANGO_API_PASSWORD (or DJANGO_API_KEY_PASSWORD)", api="django_registry"
            )
        return with_password(self.base_url, self.password), token

    def open_client(self, log: Any = None) -> DjangoRegistryClient:
        url, token = self.credentials()
        return DjangoRegistryClient.connect(
            base_url=url,
            api_key=token,
            auth_scheme=self.auth_scheme,
            members_path=self.members_path,
            page_size=self.page_size,
            rate_limit=self.rate_limit,
            max_attempts=self.max_attempts,
            timeout=self.timeout_seconds,
            log=log,
        )


class MembersDatabase(dg.ConfigurableResource):
    """The eligibility database (Postgres in production, SQLite on the embedded default)."""

    url: str = Field(
        description="SQLAlchemy URL (MEMBERS_DB_URL) without the password, e.g. postgresql+psycopg://user@host/db"
    )
    password: str = Field(default="", description="Database password (MEMBERS_DB_PASSWORD), merged at use.")
    auto_migrate: bool = Field(
        default=True,
        description="Apply pending schema migrations on first use (local); off in production, "
        "where `python -m membership_assets migrate` applies them and runs refuse an old schema.",
    )
    _store: MembersStore | None = PrivateAttr(default=None)

    @property
    def connection_url(self) -> str:
        """The URL with the password merged in: for connecting only, never for showing."""
        return with_password(self.url, self.password)

    def store(self) -> MembersStore:
        if self._store is None:
            self._store = MembersStore.from_url(self.connection_url)
            self._store.ensure_schema(migrate=self.auto_migrate)
        return self._store


class RegistrySyncPolicy(dg.ConfigurableResource):
    """When a sync must stop and ask a human (overridable per run with allow_* config)."""

    # The thresholds' defaults and their sources live on GuardPolicy (guards.py).
    max_removals: int = GuardPolicy.max_removals
    max_removal_fraction: float = GuardPolicy.max_removal_fraction
    min_population_for_fraction: int = GuardPolicy.min_population_for_fraction
    max_shrink_fraction: float = GuardPolicy.max_shrink_fraction
    max_reject_fraction: float = GuardPolicy.max_reject_fraction
    status_map: str = Field(
        default=json.dumps(DEFAULT_STATUS_MAP),
        description="JSON map of registry statuses to active/suspended/removed.",
    )
    missing_status: str = Field(
        default=MISSING_STATUS_REJECT,
        description="Rows with no status field at all (REGISTRY_MISSING_STATUS): 'reject' "
        "(quarantined; a listing without any status fails the sync) or 'active' (every listed row "
        "is a member in good standing; only for an endpoint that lists nobody else).",
    )

    @property
    def guard_policy(self) -> GuardPolicy:
        return GuardPolicy(
            max_removals=self.max_removals,
            max_removal_fraction=self.max_removal_fraction,
            min_population_for_fraction=self.min_population_for_fraction,
            max_shrink_fraction=self.max_shrink_fraction,
            max_reject_fraction=self.max_reject_fraction,
        )

    @property
    def statuses(self) -> dict[str, str]:
        return {k.lower(): v for k, v in json.loads(self.status_map).items()}
