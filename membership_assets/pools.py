"""Dagster concurrency pools of the steps with side effects (limits in dagster.yaml, `concurrency: pools:`).

A pool belongs to the asset itself, so every launch path is limited: a schedule, the sensor, a
launchpad run and "Materialize all" from the asset graph (which carries no job tags) alike.
"""

ACTION_BUILDER = (
    "action_builder"  # the campaign scan (one 4 req/s budget), the report email, tag deletions and repairs
)
MEMBERS_DB = "members_db"  # applying or rolling back a membership sync
