"""Delete outdated taggings: dry-run by default, capped, one audit outcome per planned deletion."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from ..connectors.errors import ApiError, AuthError
from .client import ActionBuilderClient
from .rules import PlannedDeletion

ACTIONS = ("deleted", "already_gone", "dry_run", "blocked_cap", "failed", "not_attempted")


@dataclass(frozen=True)
class DeletionOutcome:
    person_id: str
    tagging_id: str
    tag_id: str | None
    field: str | None
    value: str | None
    expected_value: str | None
    inactive: bool
    action: str
    error: str | None
    acted_at: str

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def _outcome(p: PlannedDeletion, action: str, error: str | None = None) -> DeletionOutcome:
    return DeletionOutcome(
        person_id=p.person_id,
        tagging_id=p.tagging_id,
        tag_id=p.tag_id,
        field=p.field,
        value=p.value,
        expected_value=p.expected_value,
        inactive=p.inactive,
        action=action,
        error=error,
        acted_at=datetime.now(UTC).isoformat(),
    )


def execute_deletions(
    client: ActionBuilderClient | None,
    plan: list[PlannedDeletion],
    *,
    dry_run: bool,
    max_deletions: int,
    workers: int = 8,
) -> list[DeletionOutcome]:
    """Carry out (or only record) the plan. Never raises for a single tagging; an auth failure
    stops the rest, which are recorded as not_attempted."""
    if not plan:
        return []
    if dry_run:
        return [_outcome(p, "dry_run") for p in plan]
    if len(plan) > max_deletions:
        # A circuit breaker, as Entra's 500-deletes guard: nothing is deleted, an admin decides.
        reason = f"{len(plan)} planned deletions exceed the cap of {max_deletions}"
        return [_outcome(p, "blocked_cap", reason) for p in plan]
    if client is None:
        raise ValueError("a live cleanup needs an Action Builder client")
    stop = {"auth": None}

    def run(p: PlannedDeletion) -> DeletionOutcome:
        if stop["auth"] is not None:
            return _outcome(p, "not_attempted", stop["auth"])
        if not p.tag_id:
            return _outcome(p, "failed", "tag id unknown: the tagging's tag is not in the campaign catalog")
        try:
            return _outcome(p, client.delete_tagging(p.tag_id, p.tagging_id))
        except AuthError as exc:
            stop["auth"] = str(exc)
            return _outcome(p, "failed", str(exc))
        except ApiError as exc:
            return _outcome(p, "failed", str(exc))

    with ThreadPoolExecutor(workers, thread_name_prefix="ab-delete") as pool:
        return list(pool.map(run, plan))


def merge_outcomes(earlier: list[dict[str, Any]], latest: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One audit row per tagging for a logical run across its attempts (re-executions).

    The latest attempt's outcome wins, except that a deletion done earlier stays recorded as
    ``deleted`` when the re-execution then finds the tagging already gone.
    """
    by_tagging = {r["tagging_id"]: r for r in earlier}
    for row in latest:
        before = by_tagging.get(row["tagging_id"])
        if before is not None and before["action"] == "deleted" and row["action"] == "already_gone":
            continue
        by_tagging[row["tagging_id"]] = row
    return sorted(by_tagging.values(), key=lambda r: (r["person_id"], r["tagging_id"]))
