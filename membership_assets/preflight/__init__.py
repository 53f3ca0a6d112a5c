"""Preflight: prove every assumption about the real services before the first run, read-only.

``python -m membership_assets preflight`` and the ``preflight`` job run the same checks; each
system's checks live in their own module and return ``core.Check`` lines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .core import Check, guarded

SYSTEMS = ("action_builder", "registry", "sendgrid", "bigquery", "members_db", "webhook", "scratch")


@dataclass(frozen=True)
class PreflightSettings:
    """What the preflight needs beyond the jobs' resources (read by preflight/settings.py)."""

    sendgrid_api_url: str = "https://api.sendgrid.com"
    sync_api_url: str = ""  # the receiver's base URL as Django reaches it
    webhook_secret: str = ""
    production: bool = False  # unset URLs are a ✗ in production, "not checked" locally


def run_preflight(
    resources: Mapping[str, Any],
    settings: PreflightSettings,
    *,
    instance: Any = None,
    systems: Iterable[str] = SYSTEMS,
) -> list[Check]:
    """Every requested system's lines, in a fixed order; one system's crash is one ✗ line."""
    from .action_builder import check_action_builder
    from .members_db import check_members_db
    from .registry import check_registry
    from .scratch import check_scratch
    from .sendgrid import check_sendgrid
    from .warehouse import check_warehouse
    from .webhook import check_webhook, daemon_check

    r = resources
    runs: dict[str, tuple[str, str, Callable[[], list[Check]]]] = {
        "action_builder": (
            "Action Builder",
            "set ACTION_BUILDER_CREDENTIALS_PASSWORD / ACTION_BUILDER_CAMPAIGN_ID",
            lambda: check_action_builder(r["action_builder"]),
        ),
        "registry": (
            "Registry",
            "set DJANGO_API_URL / DJANGO_API_KEY_PASSWORD / DJANGO_MEMBERS_PATH",
            lambda: check_registry(r["django"], r["registry_policy"]),
        ),
        "sendgrid": (
            "SendGrid",
            "set SENDGRID_API_KEY_PASSWORD",
            lambda: check_sendgrid(r["email"], settings.sendgrid_api_url),
        ),
        "bigquery": (
            "BigQuery",
            "set BIGQUERY_PROJECT / BIGQUERY_CREDENTIALS_PASSWORD",
            lambda: check_warehouse(r["warehouse"]),
        ),
        "members_db": (
            "Members DB",
            "set MEMBERS_DB_URL / MEMBERS_DB_PASSWORD",
            lambda: check_members_db(r["members_db"]),
        ),
        "webhook": (
            "Webhook",
            "set SYNC_API_URL / REGISTRY_WEBHOOK_SECRET_PASSWORD",
            lambda: [
                *check_webhook(settings.sync_api_url, settings.webhook_secret, required=settings.production),
                daemon_check(instance),
            ],
        ),
        "scratch": (
            "Scratch",
            "set MEMBERSHIP_SCRATCH_URL",
            lambda: check_scratch(r["io_manager"], instance),
        ),
    }
    wanted = set(systems)
    unknown = wanted - set(SYSTEMS)
    if unknown:
        raise ValueError(f"unknown preflight systems {sorted(unknown)}; choose from {SYSTEMS}")
    out: list[Check] = []
    for key in SYSTEMS:
        if key in wanted:
            system, fix, run = runs[key]
            out += guarded(system, "checks", fix, run)
    return out
