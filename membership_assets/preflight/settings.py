"""What the preflight reads beyond the jobs' resources."""

from __future__ import annotations

from ..config import Settings, setting
from ..registry.settings import ReceiverSettings
from ..settings import is_production
from . import PreflightSettings


class PreflightEnv(Settings):
    GROUP = "Preflight"

    sendgrid_api_url: str = setting(
        "SENDGRID_API_URL",
        PreflightSettings.sendgrid_api_url,
        kind="URL",
        meaning="SendGrid API root the preflight checks",
    )
    sync_api_url: str = setting(
        "SYNC_API_URL",
        "",
        kind="URL",
        shown_default="unset",
        meaning="the webhook receiver's base URL as Django reaches it (the preflight sends a signed ping)",
    )


def preflight_settings(env: str | None = None) -> PreflightSettings:
    """The preflight's URLs and the webhook secret the receiver and Django share (documented
    with the receiver's settings)."""
    values = PreflightEnv.load(env)
    return PreflightSettings(
        sendgrid_api_url=values.sendgrid_api_url,
        sync_api_url=values.sync_api_url,
        webhook_secret=ReceiverSettings.load_checked(env)[0].secret("webhook_secret"),
        production=is_production(env),
    )
