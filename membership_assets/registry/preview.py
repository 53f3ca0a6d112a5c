"""The admin page's "preview a sync": what a sync would change now and what the guards answer.

A preview reads the registry, validates and compares exactly as ``registry_sync`` does (the same
functions: ``validate_listing``, ``plan_sync``) and changes nothing on the roll. It runs in a
background thread of the replica that was asked; its counts, the guards' answer and the first
rows of the delta are kept in ``admin_previews`` (members database), so every replica shows it. "Sync now" is accepted only against a fresh preview whose base is still
the latest applied sync; the sync itself is then started by Dagster and evaluates the guards
again, so nothing changes between what the admin saw and what may be applied without a new check.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd

from .admin_store import AdminStore
from .delta import DELTA_COLUMNS, counts
from .planning import listing_frame, plan_sync, read_registry, validate_listing
from .store import MembersStore

log = logging.getLogger("membership_assets.sync_api.admin")

PREVIEW_ROWS = 100  # changes kept to show; the counts cover all of them
PREVIEW_MAX_AGE_SECONDS = 15 * 60  # "sync now" needs a preview younger than this
PREVIEW_TIMEOUT = timedelta(minutes=30)  # a preview still "running" after this died with its process


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Preview:
    id: str
    started_by: str
    started_at: datetime
    state: str = "running"  # running | done | failed
    finished_at: datetime | None = None
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

    @classmethod
    def from_row(cls, row: dict[str, Any], now: datetime) -> Preview:
        result = row["result"] or {}
        if isinstance(result, str):
            result = json.loads(result)
        preview = cls(
            id=row["id"],
            started_by=row["started_by"],
            started_at=row["started_at"],
            state=row["state"],
            finished_at=row["finished_at"],
            base_sync_id=row["base_sync_id"],
            used=row["used_at"] is not None,
            **{k: result[k] for k in RESULT_FIELDS if k in result},
        )
        if preview.state == "running" and now - preview.started_at > PREVIEW_TIMEOUT:
            # The process running it went away (a restart, a replica replaced).
            preview.state, preview.failure = "failed", "The preview did not finish (the service restarted)"
        return preview


RESULT_FIELDS = (
    "counts",
    "fetched",
    "rejected",
    "eligible_before",
    "eligibility_losses",
    "protected_kept",
    "violations",
    "rows",
    "failure",
)


# What a preview runs: the store in, the planned sync out (see ``registry_planner``).
Planner = Callable[[MembersStore], Any]


def registry_planner(django: Any, policy: Any) -> Planner:
    """The planner reading the real registry: ``django`` a DjangoRegistryResource, ``policy`` a
    RegistrySyncPolicy, both with plain values (not EnvVar)."""

    def plan(store: MembersStore):
        client = django.open_client()
        try:
            listing = read_registry(client, store.current_members())
        finally:
            client.api.close()
        frame = listing_frame(listing)
        validated = validate_listing(frame, policy)
        return plan_sync(store, policy, frame, validated.valid, validated.rejects)

    return plan


class PreviewRunner:
    """One preview at a time; the latest one is shown to every admin, on every replica."""

    def __init__(self, store: MembersStore, planner: Planner | None, clock: Callable[[], datetime] = _now):
        self.store, self.planner, self.clock = store, planner, clock
        self.admin_store = AdminStore(store.engine)
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self.planner is not None

    def latest(self) -> Preview | None:
        row = self.admin_store.preview()
        return Preview.from_row(row, self.clock()) if row else None

    def start(self, admin: str) -> Preview:
        """Start a preview (or return the one still running)."""
        with self._lock:
            latest = self.latest()
            if latest is not None and latest.state == "running":
                return latest
            preview = Preview(id=secrets.token_urlsafe(12), started_by=admin, started_at=self.clock())
            self.admin_store.start_preview(preview.id, admin, preview.started_at)
        threading.Thread(target=self._run, args=(preview,), name="admin-preview", daemon=True).start()
        return preview

    def _run(self, preview: Preview) -> None:
        result: dict[str, Any] = {}
        base_sync_id = None
        try:
            planned = self.planner(self.store)
            fig = planned.figures
            result = {
                "counts": counts(planned.delta),
                "fetched": fig.fetched,
                "rejected": fig.rejected,
                "eligible_before": fig.eligible_before,
                "eligibility_losses": fig.eligibility_losses,
                "protected_kept": planned.protected_kept,
                "violations": [
                    {"guard": v.guard, "message": v.message, "override": v.overridable_by}
                    for v in planned.violations
                ],
                "rows": _plain(planned.delta[DELTA_COLUMNS].head(PREVIEW_ROWS)),
            }
            base_sync_id, state = planned.base_sync_id, "done"
        except Exception as exc:  # shown to the admin as a sentence; the text may quote a row
            result = {"failure": f"The preview could not be completed ({type(exc).__name__})"}
            state = "failed"
            log.warning("admin preview failed: %s", type(exc).__name__)
        try:
            self.admin_store.finish_preview(preview.id, state, result, base_sync_id, self.clock())
        except Exception as exc:  # the members database went away: the preview times out
            log.error("admin preview not saved: %s", type(exc).__name__)

    def confirmable(self, preview_id: str) -> tuple[Preview | None, str | None]:
        """The preview a "sync now" confirms, or why it cannot be confirmed (a reason code)."""
        latest = self.latest()
        if latest is None or latest.id != preview_id:
            return None, "preview_unknown"
        if latest.state != "done":
            return None, "preview_not_done"
        if latest.used:
            return None, "preview_used"
        if (self.clock() - latest.finished_at).total_seconds() > PREVIEW_MAX_AGE_SECONDS:
            return None, "preview_stale"
        if latest.blocked:
            return None, "guards_block"
        applied = self.store.last_applied_sync()
        if (applied["id"] if applied else None) != latest.base_sync_id:
            return None, "roll_changed"
        return latest, None

    def claim(self, preview: Preview) -> bool:
        """One sync per preview, even when two replicas are asked at once."""
        return self.admin_store.claim_preview(preview.id, self.clock())


def _plain(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-safe dicts (no NaN)."""
    return [{k: (None if v is None or v != v else v) for k, v in r.items()} for r in frame.to_dict("records")]
