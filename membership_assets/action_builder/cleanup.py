"""Delete outdated taggings: dry-run by default, capped, one audit outcome per planned deletion."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from ..connectors.errors import ApiError, AuthError
from .client import ActionBuilderClient
from .rules import DeletionOutcome, PlannedDeletion

# pending: intent recorded, no DELETE sent yet; sending: the DELETE may have been sent (a crash
# here leaves this row, which a re-execution settles). The rest are final outcomes.
INTENT_ACTIONS = ("pending", "sending")
ACTIONS = (
    *INTENT_ACTIONS,
    "deleted",
    "already_gone",
    "dry_run",
    "blocked_cap",
    "failed",
    "not_attempted",
)
AUDIT_BATCH = 25  # DELETEs sent per durable audit write (~6 s at 4 req/s)


def _outcome(p: PlannedDeletion, action: str, error: str | None = None) -> DeletionOutcome:
    return DeletionOutcome(**asdict(p), action=action, error=error, acted_at=datetime.now(UTC).isoformat())


Journal = Callable[[list[DeletionOutcome]], None]


def execute_deletions(
    client: ActionBuilderClient | None,
    plan: list[PlannedDeletion],
    *,
    dry_run: bool,
    max_deletions: int,
    workers: int = 8,
    journal: Journal | None = None,
    batch: int = AUDIT_BATCH,
) -> list[DeletionOutcome]:
    """Carry out (or only record) the plan. Never raises for a single tagging; an auth failure
    stops the rest, which are recorded as not_attempted.

    ``journal`` is handed every deletion's current state and must make it durable before
    returning: first all ``pending``, then before each batch of DELETEs that batch as ``sending``,
    then its outcomes. A crash at any instant thus leaves a record of every DELETE that was or
    may have been sent.
    """
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
    return _delete_in_batches(client, plan, journal or (lambda _rows: None), workers, max(batch, 1))


def _delete_in_batches(
    client: ActionBuilderClient, plan: list[PlannedDeletion], record: Journal, workers: int, batch: int
) -> list[DeletionOutcome]:
    """Intent (``pending``), then per batch ``sending``, the DELETEs, and their outcomes."""
    state = {p.tagging_id: _outcome(p, "pending") for p in plan}
    record(list(state.values()))
    stop: dict[str, str | None] = {"auth": None}

    def run(p: PlannedDeletion) -> DeletionOutcome:
        if stop["auth"] is not None:
            return _outcome(p, "not_attempted", stop["auth"])
        if not p.tag_id:
            return _outcome(
                p,
                "failed",
                f"tag id unknown for tagging {p.tagging_id} ({p.field!r} = {p.value!r}): it carries no "
                "tag link and no single catalog tag has its section, field and value; not deleted",
            )
        try:
            return _outcome(p, client.delete_tagging(p.tag_id, p.tagging_id))
        except AuthError as exc:
            stop["auth"] = str(exc)
            return _outcome(p, "failed", str(exc))
        except ApiError as exc:
            return _outcome(p, "failed", str(exc))

    with ThreadPoolExecutor(workers, thread_name_prefix="ab-delete") as pool:
        for start in range(0, len(plan), batch):
            chunk = plan[start : start + batch]
            if stop["auth"] is None:
                state.update({p.tagging_id: _outcome(p, "sending") for p in chunk if p.tag_id})
                record(list(state.values()))
            for outcome in pool.map(run, chunk):
                state[outcome.tagging_id] = outcome
            record(list(state.values()))
    return [state[p.tagging_id] for p in plan]


def merge_outcomes(earlier: list[dict[str, Any]], latest: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One audit row per tagging for a logical run across its attempts (re-executions).

    The latest attempt's outcome wins, except that a tagging an earlier attempt deleted, or sent
    a DELETE for before it crashed (``sending``), is that attempt's ``deleted`` when the
    re-execution then finds it already gone.
    """
    by_tagging = {r["tagging_id"]: r for r in earlier}
    for row in latest:
        before = by_tagging.get(row["tagging_id"])
        earlier_action = before["action"] if before is not None else None
        if earlier_action == "deleted" and row["action"] in ("already_gone", *INTENT_ACTIONS):
            continue
        if earlier_action == "sending":
            if row["action"] in INTENT_ACTIONS:
                continue  # still "may have been deleted" by the earlier attempt
            if row["action"] == "already_gone":
                by_tagging[row["tagging_id"]] = {
                    **before,
                    "action": "deleted",  # the earlier attempt's DELETE went through
                    "error": None,
                }
                continue
        by_tagging[row["tagging_id"]] = row
    return sorted(by_tagging.values(), key=lambda r: (r["person_id"], r["tagging_id"]))
