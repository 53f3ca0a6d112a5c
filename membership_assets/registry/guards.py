"""Circuit breakers that stop a sync before it removes voters on the strength of a bad list.

Anchors (shared/reference/sync-reliability-anchors.md): Entra Connect blocks an export with more
than 500 deletions; Okta stops an import that would unassign more than 20% of an app's users
(apps with more than 100 users); sync tools that lost data to empty or truncated sources now
refuse to reconcile deletions when a listing comes back empty.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GuardPolicy:
    """The thresholds' one home (overridable per deployment by REGISTRY_* variables)."""

    max_removals: int = 500  # Entra Connect's default deletion threshold
    max_removal_fraction: float = 0.20  # Okta's default import safeguard
    min_population_for_fraction: int = 100  # Okta applies its percentage above 100 users
    max_shrink_fraction: float = 0.20
    max_reject_fraction: float = 0.10


@dataclass(frozen=True)
class SyncFigures:
    fetched: int  # rows the registry listed
    valid: int  # rows that passed validation (eligible or explicitly not)
    rejected: int
    active_before: int  # members currently active or suspended
    removals: int
    last_fetched: int | None  # rows listed by the last successful sync
    eligible_before: int = 0  # members currently active (eligible to vote)
    eligibility_losses: int = 0  # of those, how many would stop being active (suspended or removed)


@dataclass(frozen=True)
class Violation:
    guard: str
    message: str
    overridable_by: str


def evaluate_guards(fig: SyncFigures, policy: GuardPolicy = GuardPolicy()) -> list[Violation]:
    """The guards of a sync from the registry: the listing's and the removals' guards."""
    found: list[Violation] = []
    if fig.fetched == 0 and fig.active_before > 0:
        found.append(
            Violation(
                "empty_upstream",
                f"the registry listed no members while {fig.active_before} are active here; an empty "
                "list is far more often an outage than an empty organization",
                "allow_empty_upstream",
            )
        )
    found += removal_guards(fig, policy)
    if fig.last_fetched and fig.fetched < (1 - policy.max_shrink_fraction) * fig.last_fetched:
        found.append(
            Violation(
                "upstream_shrank",
                f"the registry listed {fig.fetched} rows, down from {fig.last_fetched} at the last "
                f"successful sync (more than {policy.max_shrink_fraction:.0%} fewer)",
                "allow_mass_removal",
            )
        )
    if fig.fetched and fig.rejected / fig.fetched > policy.max_reject_fraction:
        found.append(
            Violation(
                "reject_rate",
                f"{fig.rejected} of {fig.fetched} rows failed validation (limit "
                f"{policy.max_reject_fraction:.0%}); the registry's output looks broken",
                "allow_mass_removal",
            )
        )
    return found


def removal_guards(fig: SyncFigures, policy: GuardPolicy = GuardPolicy()) -> list[Violation]:
    """Removals and eligibility losses, in number and share: the same for a sync and a rollback."""
    found: list[Violation] = []
    if fig.removals > policy.max_removals:
        found.append(
            Violation(
                "removal_count",
                f"{fig.removals} members would be removed (limit {policy.max_removals})",
                "allow_mass_removal",
            )
        )
    if fig.active_before >= policy.min_population_for_fraction and fig.active_before:
        share = fig.removals / fig.active_before
        if share > policy.max_removal_fraction:
            found.append(
                Violation(
                    "removal_fraction",
                    f"{share:.0%} of active members would be removed (limit {policy.max_removal_fraction:.0%})",
                    "allow_mass_removal",
                )
            )
    # A status flip takes a vote away as surely as a removal does (the analysts' lost_eligibility).
    if fig.eligibility_losses > policy.max_removals:
        found.append(
            Violation(
                "eligibility_loss_count",
                f"{fig.eligibility_losses} members would lose eligibility (limit {policy.max_removals})",
                "allow_mass_removal",
            )
        )
    if fig.eligible_before >= policy.min_population_for_fraction:
        share = fig.eligibility_losses / fig.eligible_before
        if share > policy.max_removal_fraction:
            found.append(
                Violation(
                    "eligibility_loss_fraction",
                    f"{share:.0%} of eligible members would lose eligibility (suspended or removed; "
                    f"limit {policy.max_removal_fraction:.0%})",
                    "allow_mass_removal",
                )
            )
    return found


@dataclass(frozen=True)
class RollbackFigures:
    active_before: int  # members active or suspended now
    active_after: int  # ... after the rollback
    eligible_before: int  # members active (eligible) now
    removals: int  # members the rollback soft-deletes
    eligibility_losses: int  # eligible now, not after the rollback


def evaluate_rollback_guards(fig: RollbackFigures, policy: GuardPolicy = GuardPolicy()) -> list[Violation]:
    """A rollback is a sync of its own: the same removal, eligibility-loss and shrink guards, on
    the inverse delta. It reads no registry, so the listing's guards (empty, rejects) do not apply;
    the shrink guard compares the roll after the rollback with the roll now."""
    found = removal_guards(
        SyncFigures(
            fetched=fig.active_after,
            valid=fig.active_after,
            rejected=0,
            active_before=fig.active_before,
            removals=fig.removals,
            last_fetched=fig.active_before,
            eligible_before=fig.eligible_before,
            eligibility_losses=fig.eligibility_losses,
        ),
        policy,
    )
    if fig.active_before and fig.active_after < (1 - policy.max_shrink_fraction) * fig.active_before:
        found.append(
            Violation(
                "membership_shrank",
                f"the rollback would leave {fig.active_after} members, down from {fig.active_before} "
                f"now (more than {policy.max_shrink_fraction:.0%} fewer)",
                "allow_mass_removal",
            )
        )
    return found


def blocking(
    violations: list[Violation], *, allow_mass_removal: bool, allow_empty_upstream: bool
) -> list[Violation]:
    """The violations still standing after the human's overrides.

    ``allow_empty_upstream`` is enough on its own for an empty listing: every removal, loss and
    shrink guard then fires only because the list is empty, which is what the human confirmed.
    """
    if allow_empty_upstream and any(v.guard == "empty_upstream" for v in violations):
        return []
    allowed = set()
    if allow_mass_removal:
        allowed.add("allow_mass_removal")
    if allow_empty_upstream:
        allowed.add("allow_empty_upstream")
    return [v for v in violations if v.overridable_by not in allowed]
