"""The bottom layer: which environment this is, where its state lives, and the local constants.

Standard library only, so every module may import it and none of it imports anything above.
``MEMBERSHIP_ENV=local`` (default) runs on the embedded simulators, DuckDB, SQLite and an .eml
outbox under ``MEMBERSHIP_STATE_DIR``; ``MEMBERSHIP_ENV=production`` on the real services. Each
domain's typed settings (``<domain>/settings.py``) build on this switch; nothing else decides it.
"""

from __future__ import annotations

import os
from pathlib import Path

LOCAL = "local"
PRODUCTION = "production"
ENVIRONMENT_VAR = "MEMBERSHIP_ENV"
STATE_DIR_VAR = "MEMBERSHIP_STATE_DIR"
SCHEDULE_STATUS_VAR = "MEMBERSHIP_SCHEDULE_STATUS"

# Loopback ports of the simulators, the same in every process (`simulators`, `dev`, `demo` and the
# code location's resources), so they meet; set these variables when 8765/8766 are taken.
ACTION_BUILDER_SIM_PORT = int(os.getenv("ACTION_BUILDER_SIM_PORT", "8765"))
DJANGO_SIM_PORT = int(os.getenv("DJANGO_SIM_PORT", "8766"))

# Not secrets: the simulators' own tokens and the local defaults, documented and public. A server
# reachable beyond loopback refuses every one of them (registry/credentials.py).
SIMULATED_AB_TOKEN = "simulated-action-builder-token"
SIMULATED_DJANGO_TOKEN = "simulated-django-token"
LOCAL_WEBHOOK_SECRET = "simulated-webhook-secret"
LOCAL_API_KEY = "simulated-sync-api-key"
LOCAL_ADMIN_USER = "admin"  # the local default's admin page account
LOCAL_ADMIN_PASSWORD = "simulated-admin-password"
LOCAL_RATE_LIMIT = 100.0  # what the Action Builder simulator enforces unless told otherwise


def get_environment() -> str:
    """``local`` or ``production``; anything else is refused rather than guessed."""
    env = os.getenv(ENVIRONMENT_VAR, LOCAL).strip().lower()
    if env not in (LOCAL, PRODUCTION):
        raise ValueError(f"{ENVIRONMENT_VAR} must be {LOCAL!r} or {PRODUCTION!r}, not {env!r}")
    return env


def is_production(env: str | None = None) -> bool:
    return (env or get_environment()) == PRODUCTION


def state_dir() -> Path:
    """Checkpoints, reports, the outbox and the local databases (production: a mounted volume)."""
    return Path(os.getenv(STATE_DIR_VAR, ".local")).resolve()


def schedules_start_running() -> bool:
    """Schedules start stopped unless the deployment says ``MEMBERSHIP_SCHEDULE_STATUS=running``;
    a schedule started or stopped in the UI keeps that state whatever this says."""
    value = (os.getenv(SCHEDULE_STATUS_VAR) or "stopped").strip().lower()
    if value not in ("running", "stopped"):
        raise ValueError(f"{SCHEDULE_STATUS_VAR} must be 'running' or 'stopped', not {value!r}")
    return value == "running"
