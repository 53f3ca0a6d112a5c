import dagster as dg

from .freshness import (
    ab_full_scan_recent,
    freshness_checks,
    freshness_every_30_minutes,
    member_eligibility_fresh,
)
from .sensors import email_admins_on_failure

defs = dg.Definitions(
    asset_checks=[member_eligibility_fresh, ab_full_scan_recent],
    jobs=[freshness_checks],
    schedules=[freshness_every_30_minutes],
    sensors=[email_admins_on_failure],
)
