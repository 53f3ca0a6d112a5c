"""The registry sync's records, each defined once: a sync's log entry and a member's change.

The members DB tables (store.py), the audit warehouse's tables (warehouse/schema.py), the sync
API's fields (history.py) and the delta frames (delta.py) derive from these dataclasses. The one
copy is the frozen Alembic baseline (migrations/versions/0001_baseline.py); a test keeps it equal.
Below the store and validation, so both read the column sizes here without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from ..columns import column, column_names

SYNC_ID_LENGTH = 36  # a Dagster run id (uuid)
KENNITALA_LENGTH = 10
# The longest value validation lets through, per field: exactly what the members DB's columns
# hold, so a row is judged the same on SQLite (which would store anything) and Postgres (which
# would refuse it).
FIELD_LIMITS: dict[str, int] = {"kennitala_raw": 64, "name": 255, "email": 255, "status": 50}

KINDS = ("added", "reinstated", "changed", "removed")


@dataclass(kw_only=True)
class SyncLogEntry:
    """One registry sync (applied, failed, dry run or rollback): a row of membership_sync_log."""

    id: str = column(
        description="The sync id: the logical Dagster run id", length=SYNC_ID_LENGTH, primary_key=True
    )
    sync_time: datetime = column(required=True, default_factory=lambda: datetime.now(timezone.utc))
    source: str = column(
        description="scheduled | sensor | webhook | api | manual | rollback | admin:<who>", length=50
    )
    status: str = column(description="success | partial | failed", length=50)
    dry_run: bool = column(required=True, default=False)
    members_fetched: int | None = None
    members_added: int | None = None  # reinstated members included
    members_removed: int | None = None
    members_updated: int | None = None
    members_rejected: int | None = None
    errors: Any = column("JSON", "What failed or was remarked (scrubbed of personal data)", default=None)
    duration_ms: int | None = None
    run_id: str | None = column(
        description="The Dagster run (attempt) that wrote the row", length=64, default=None
    )
    rolled_back_sync_id: str | None = column(length=SYNC_ID_LENGTH, default=None)

    def with_counts(self, delta: pd.DataFrame) -> SyncLogEntry:
        c = counts(delta)
        self.members_added = c["added"] + c["reinstated"]
        self.members_removed = c["removed"]
        self.members_updated = c["changed"]
        return self


_KT = "Icelandic national id, 10 digits (personal data: never shown in previews)"


@dataclass(frozen=True)
class MemberChange:
    """One member's change by a sync: a row of the delta and of membership_changes.

    A removal keeps the person's details and only marks them removed (soft delete).
    """

    kennitala: str = column(description=_KT, length=KENNITALA_LENGTH, primary_key=True)
    change_kind: str = column(description="added | reinstated | changed | removed", length=20, required=True)
    old_name: str | None = column(description="name before the change", length=FIELD_LIMITS["name"])
    old_email: str | None = column(description="email before the change", length=FIELD_LIMITS["email"])
    old_status: str | None = column(description="status before the change", length=FIELD_LIMITS["status"])
    new_name: str | None = column(description="name after the change", length=FIELD_LIMITS["name"])
    new_email: str | None = column(description="email after the change", length=FIELD_LIMITS["email"])
    new_status: str | None = column(description="status after the change", length=FIELD_LIMITS["status"])


# The delta frame's columns, in order.
DELTA_COLUMNS = column_names(MemberChange)


def counts(delta: pd.DataFrame) -> dict[str, int]:
    """How many changes of each kind ``delta`` (a frame of MemberChange rows) holds."""
    found = delta["change_kind"].value_counts().to_dict() if len(delta) else {}
    return {k: int(found.get(k, 0)) for k in KINDS}
