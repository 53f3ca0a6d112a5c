"""How long each job may run before Dagster's run monitoring fails it (and the failure alert fires).

A run that hangs (a stalled API connection, a lock never released) holds its pool slot and its
tag-concurrency slot, so every later scan or sync queues behind it, silently. The daemon's run
monitoring (``run_monitoring`` in the instance) fails any run older than its job's
``dagster/max_runtime`` tag; ``email_admins_on_failure`` then tells the admins. Each limit is
several times the job's normal duration at production pace, so only a hung run reaches it.
"""

from datetime import timedelta

MAX_RUNTIME_TAG = "dagster/max_runtime"

MAX_RUNTIME_SECONDS = {
    # A full scan of a large campaign at 4 req/s takes hours; an incremental pass minutes.
    "action_builder_tag_sync": 6 * 3600,
    # Whole-list fetch, guards and one transaction: minutes even for a large registry.
    "registry_sync": 30 * 60,
    "registry_preview": 30 * 60,
    "registry_rollback": 15 * 60,
    "freshness_checks": 10 * 60,
    # Read-only checks of every service: a minute at most, unless a service hangs.
    "preflight": 10 * 60,
}


def max_runtime_tags(job_name: str) -> dict[str, str]:
    """The run tag that bounds ``job_name``'s runtime (tag values are strings)."""
    return {MAX_RUNTIME_TAG: str(MAX_RUNTIME_SECONDS[job_name])}


# How old the results may get before the freshness checks alert (and the admin page says stale).
MEMBER_ELIGIBILITY_MAX_AGE = timedelta(hours=2)  # the hourly sync, with one miss allowed
FULL_SCAN_MAX_AGE = timedelta(days=35)  # the monthly full scan, with a few days' slack
