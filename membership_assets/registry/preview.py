"""The admin page's "preview a sync": what a sync would change now and what the guards answer.

A preview reads the registry, validates and compares exactly as ``registry_sync`` does (the same
functions: ``validated_frames``, ``plan_sync``) and writes nothing. It runs in a background
thread, one at a time per process, and keeps only counts, the guards' answer and the first rows
of the delta in memory. "Sync now" is accepted only against a fresh preview whose base is still
the latest applied sync; the sync itself is then started by Dagster and evaluates the guards
again, so nothing changes between what the admin saw and what may be applied without a new check.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .delta import DELTA_COLUMNS, counts
from .store import MembersStore

log = logging.getLogger("membership_assets.sync_api.admin")

PREVIEW_ROWS = 100  # changes kept to show; the counts cover all of them
PREVIEW_MAX_AGE_SECONDS = 15 * 60  # "sync now" needs a preview younger than this


@dataclass
class Preview:
    id: str
    started_by: str
    started_at: float
    state: str = "running"  # running | done | failed
    finished_at: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    fetched: int = 0
    rejected: int = 0
    eligible_before: int = 0
    eligibility_losses: int = 0
    protected_kept: int = 0
    violations: list[dict[str, str]] = field(default_factory=list)
    base_sync_id: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    failure: str = ""  # a fixed sentence and the error's type, never its text
    used: bool = False  # a sync was requested from it: one preview, one sync

    @property
    def blocked(self) -> bool:
        return bool(self.violations)


# What a preview runs: the store in, the planned sync out (see ``registry_planner``).
Planner = Callable[[MembersStore], Any]


def registry_planner(django: Any, policy: Any) -> Planner:
    """The planner reading the real registry: ``django`` a DjangoRegistryResource, ``policy`` a
    RegistrySyncPolicy, both with plain values (not EnvVar)."""

    def plan(store: MembersStore):
        from .assets import RAW_COLUMNS, plan_sync, read_registry, validated_frames
        from .validation import kennitala_text

        client = django.open_client()
        try:
            listing = read_registry(client, store.current_members())
        finally:
            client.api.close()
        frame = pd.DataFrame(listing.rows, columns=RAW_COLUMNS)
        frame["kennitala"] = frame["kennitala"].map(kennitala_text).astype(object)
        valid, rejects, _ = validated_frames(frame, policy)
        return plan_sync(
            store,
            django_members=frame,
            valid_members=valid,
            member_rejects=rejects,
            guard_policy=policy.guard_policy,
        )

    return plan


class PreviewRunner:
    """One preview at a time; the latest one is kept until the next starts."""

    def __init__(self, store: MembersStore, planner: Planner | None, clock: Callable[[], float] = time.time):
        self.store, self.planner, self.clock = store, planner, clock
        self._lock = threading.Lock()
        self.latest: Preview | None = None

    @property
    def available(self) -> bool:
        return self.planner is not None

    def start(self, admin: str) -> Preview:
        """Start a preview (or return the one still running)."""
        with self._lock:
            if self.latest is not None and self.latest.state == "running":
                return self.latest
            preview = Preview(id=secrets.token_urlsafe(12), started_by=admin, started_at=self.clock())
            self.latest = preview
        threading.Thread(target=self._run, args=(preview,), name="admin-preview", daemon=True).start()
        return preview

    def _run(self, preview: Preview) -> None:
        try:
            planned = self.planner(self.store)
            fig = planned.figures
            preview.counts = counts(planned.delta)
            preview.fetched, preview.rejected = fig.fetched, fig.rejected
            preview.eligible_before, preview.eligibility_losses = fig.eligible_before, fig.eligibility_losses
            preview.protected_kept = planned.protected_kept
            preview.violations = [
                {"guard": v.guard, "message": v.message, "override": v.overridable_by}
                for v in planned.violations
            ]
            preview.base_sync_id = planned.base_sync_id
            preview.rows = planned.delta[DELTA_COLUMNS].head(PREVIEW_ROWS).to_dict("records")
            preview.state = "done"
        except Exception as exc:  # shown to the admin as a sentence; the text may quote a row
            preview.failure = f"The preview could not be completed ({type(exc).__name__})"
            preview.state = "failed"
            log.warning("admin preview failed: %s", type(exc).__name__)
        finally:
            preview.finished_at = self.clock()

    def confirmable(self, preview_id: str) -> tuple[Preview | None, str | None]:
        """The preview a "sync now" confirms, or why it cannot be confirmed (a reason code)."""
        preview = self.latest
        if preview is None or preview.id != preview_id:
            return None, "preview_unknown"
        if preview.state != "done":
            return None, "preview_not_done"
        if preview.used:
            return None, "preview_used"
        if self.clock() - (preview.finished_at or 0) > PREVIEW_MAX_AGE_SECONDS:
            return None, "preview_stale"
        if preview.blocked:
            return None, "guards_block"
        latest = self.store.last_applied_sync()
        if (latest["id"] if latest else None) != preview.base_sync_id:
            return None, "roll_changed"
        return preview, None
