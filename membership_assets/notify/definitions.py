"""Notification's definitions: freshness checks, the failure alert sensor and the email resources."""

from typing import Any

import dagster as dg

from .freshness import (
    ab_full_scan_recent,
    freshness_checks,
    freshness_every_30_minutes,
    member_eligibility_fresh,
)
from .sensors import email_admins_on_failure
from .settings import EmailSettings

defs = dg.Definitions(
    asset_checks=[member_eligibility_fresh, ab_full_scan_recent],
    jobs=[freshness_checks],
    schedules=[freshness_every_30_minutes],
    sensors=[email_admins_on_failure],
)


def resources(env: str | None = None) -> dict[str, Any]:
    return EmailSettings.load(env).resources(env)
