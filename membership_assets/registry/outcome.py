"""What one sync did, or (a dry run) would do: the one result membership_sync and the preview give."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .delta import counts
from .store import SyncLogEntry


@dataclass(frozen=True)
class SyncOutcome:
    """One sync's changes, as applied (membership_sync) or as planned (the registry preview)."""

    sync_id: str  # the logical run id (see registry.assets.sync_id_of)
    dry_run: bool
    delta: pd.DataFrame  # the delta's columns (delta.DELTA_COLUMNS), one row per member changed
    would_block: list[str]  # the guards that stop the sync as configured (always [] once applied)
    eligibility_losses: int  # members who lose their vote by these changes
    log: SyncLogEntry | None = None  # the sync's log row; a dry run writes none

    @property
    def counts(self) -> dict[str, int]:
        """Members added, reinstated, changed and removed."""
        return counts(self.delta)
