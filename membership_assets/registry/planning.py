"""Read, validate and plan one registry sync: steps 1-3, shared by the sync's assets
(registry.assets), the registry preview op and the admin page's preview (registry.preview).

Each step returns a typed result; nothing here writes to the members table or the sync log.
"""

from dataclasses import dataclass, field

import dagster as dg
import pandas as pd

from ..columns import record_columns
from ..metadata import md_preview
from .client import DjangoRegistryClient, RegistryListing
from .delta import compute_delta, counts, eligibility_losses, protected_from_removal
from .guards import SyncFigures, Violation, evaluate_guards
from .records import MemberChange
from .resources import DjangoRegistryResource, MembersDatabase, RegistrySyncPolicy
from .store import MembersStore
from .validation import (
    ACTIVE,
    SUSPENDED,
    ValidationResult,
    kennitala_key,
    kennitala_text,
    mask,
    validate_members,
)

# The columns of each table the registry assets hold, for the asset pages (dagster/column_schema).
_KT = "Icelandic national id, 10 digits (personal data: never shown in previews)"
RAW_SCHEMA = {
    "row_number": ("int", "Position in the registry's listing (1-based)."),
    "kennitala": ("string", f"As listed (a JSON number as its zero-padded digits). {_KT}"),
    "name": ("string", "As listed (personal data)."),
    "email": ("string", "As listed (personal data)."),
    "status": ("string", "The registry's own status value, as listed."),
    "status_given": ("bool", "Whether the row had a status field at all."),
}
MEMBER_SCHEMA = {
    "kennitala": ("string", _KT),
    "name": ("string", "Normalized (personal data)."),
    "email": ("string", "Normalized, lower case (personal data)."),
    "status": ("string", "active | suspended | removed (mapped from the registry's status)."),
}
REJECT_SCHEMA = {
    "row_number": ("int", "Position in the registry's listing: the row to fix in Django."),
    "kennitala_raw": ("string", "The kennitala field as listed (quarantine only)."),
    "kennitala": ("string", f"The same, when it could be read as one. {_KT}"),
    "name": ("string", "As listed (personal data)."),
    "email": ("string", "As listed (personal data)."),
    "status": ("string", "As listed."),
    "reasons": ("string", "Why the row was quarantined, comma-separated."),
}
DELTA_SCHEMA = {c.name: (c.ui_type, c.description) for c in record_columns(MemberChange)}
# The member_eligibility view (migrations/versions/0001_baseline.py); a test compares the two.
ELIGIBILITY_SCHEMA = {
    "kennitala": ("string", _KT),
    "name": ("string", "Personal data."),
    "email": ("string", "Personal data."),
    "status": ("string", "active | suspended (removed members are not listed)."),
    "eligible": ("bool", "May vote: status is active."),
    "synced_at": ("timestamp", "When the sync that last changed this member applied."),
}
RAW_COLUMNS = list(RAW_SCHEMA)


# Previews in run history name members by keyed pseudonym (privacy.pseudonym), labelled as such.
PSEUDONYM = "member_pseudonym"
PSEUDONYM_OF_RAW = "raw_kennitala_pseudonym"


# -- step 1: the registry's listing ----------------------------------------------------------------


def read_registry(client: DjangoRegistryClient, current: pd.DataFrame) -> RegistryListing:
    """The registry's listing, read again while it leaves a current member unseen (paging is not
    a snapshot; see client.fetch_confirmed). Anyone a row could name counts as seen."""
    here = set(current.loc[current["status"].isin([ACTIVE, SUSPENDED]), "kennitala"])

    def unseen(listing: RegistryListing) -> set[str]:
        return here - {kennitala_key(r["kennitala"]) for r in listing.rows}

    return client.fetch_confirmed(unseen)


@dataclass
class RegistryRead:
    """The registry's listing as a frame, with how it was read (for metadata)."""

    frame: pd.DataFrame
    listing: RegistryListing
    requests: int

    @property
    def metadata(self) -> dict:
        listing = self.listing
        return {
            "dagster/row_count": len(self.frame),
            "shape": listing.shape,
            "pages": listing.pages,
            "declared_count": listing.declared_count if listing.declared_count is not None else "not given",
            "requests": self.requests,
            "listings": listing.listings,
        }


def listing_frame(listing: RegistryListing) -> pd.DataFrame:
    """The listing's rows as a frame (shared with the admin page's preview)."""
    frame = pd.DataFrame(listing.rows, columns=RAW_COLUMNS)
    # A number (DRF IntegerField) becomes its digits, the lost leading zero restored; text as is.
    frame["kennitala"] = frame["kennitala"].map(kennitala_text).astype(object)
    return frame


def fetch_registry(django: DjangoRegistryResource, members_db: MembersDatabase, log) -> RegistryRead:
    """Every row the registry lists, read again while paging may have hidden a current member."""
    client = django.open_client(log=log)
    try:
        listing = read_registry(client, members_db.store().current_members())
    finally:
        client.api.close()
    frame = listing_frame(listing)
    log.info(
        f"registry listed {len(frame)} rows in {listing.pages} page(s) ({listing.shape}); "
        f"{listing.listings} listing(s) read"
    )
    return RegistryRead(frame, listing, client.stats.requests)


# -- step 2: valid members, and the rows quarantined -----------------------------------------------


@dataclass(frozen=True)
class ValidatedListing:
    """One listing judged row by row: the members to sync, and the rows quarantined."""

    valid: pd.DataFrame  # MEMBER_SCHEMA's columns
    rejects: pd.DataFrame  # REJECT_SCHEMA's columns
    result: ValidationResult  # the same, as records (and the duplicates merged)

    def log_rejects(self, log) -> None:
        """The first rejected rows, members named by pseudonym."""
        for r in self.result.rejects[:20]:
            log.warning(
                f"rejected row {r.row_number} (member pseudonym {mask(r.kennitala)}): {', '.join(r.reasons)}"
            )


def validate_listing(django_members: pd.DataFrame, registry_policy: RegistrySyncPolicy) -> ValidatedListing:
    """Valid members and rejected rows (with reasons) of one listing."""
    rows = django_members.to_dict("records")
    if rows and registry_policy.missing_status == "reject" and not any(r["status_given"] for r in rows):
        raise dg.Failure(
            "the registry's listing has no status field, so nobody can be judged eligible; if "
            "every row it lists is a member in good standing, set REGISTRY_MISSING_STATUS=active"
        )
    result = validate_members(rows, registry_policy.statuses, missing_status=registry_policy.missing_status)
    valid = pd.DataFrame([vars(m) for m in result.members], columns=list(MEMBER_SCHEMA))
    rejects = pd.DataFrame(
        [{**vars(r), "reasons": ", ".join(r.reasons)} for r in result.rejects],
        columns=list(REJECT_SCHEMA),
    )
    return ValidatedListing(valid, rejects, result)


# -- step 3: the changes to make, and the guards' verdict on them ----------------------------------


def protected_by_rejects(member_rejects: pd.DataFrame, current: pd.DataFrame) -> set[str]:
    """Members a rejected row can be tied to (by its kennitala, read as best we can, or by its
    email): they keep their standing until the row is fixed, never removed because of it."""
    protected = set(member_rejects["kennitala"].dropna())
    emails = set(member_rejects["email"].dropna().str.lower())
    if emails:
        by_email = current["email"].fillna("").str.lower().isin(emails)
        protected |= set(current.loc[by_email, "kennitala"])
    return protected


def guards_md(violations: list[Violation]) -> dg.MetadataValue:
    return dg.MetadataValue.md(
        "\n".join(f"- **{v.guard}**: {v.message} (override: `{v.overridable_by}`)" for v in violations)
        or "all guards pass"
    )


def delta_preview(delta: pd.DataFrame) -> dg.MetadataValue:
    """The first changes, members named by pseudonym (masking only those shown: not a 1M-row map)."""
    shown = delta.head(25).assign(**{PSEUDONYM: lambda d: d["kennitala"].map(mask)})
    return md_preview(
        shown, [PSEUDONYM, "change_kind", "old_status", "new_status"], rows=None, empty="no changes"
    )


@dataclass
class PlannedSync:
    """A delta plus what it was computed against and what the guards think of it."""

    delta: pd.DataFrame
    base_sync_id: str | None
    figures: SyncFigures
    violations: list[Violation] = field(default_factory=list)
    protected_kept: int = 0

    @property
    def metadata(self) -> dict:
        return {
            "dagster/row_count": len(self.delta),
            **counts(self.delta),
            "active_before": self.figures.active_before,
            "kept_because_row_rejected": self.protected_kept,
            "eligibility_losses": self.figures.eligibility_losses,
            "would_block": ", ".join(v.guard for v in self.violations) or "nothing",  # without overrides
            "guards": guards_md(self.violations),
            "preview": delta_preview(self.delta),
        }


def plan_sync(
    store: MembersStore,
    registry_policy: RegistrySyncPolicy,
    django_members: pd.DataFrame,
    valid_members: pd.DataFrame,
    member_rejects: pd.DataFrame,
) -> PlannedSync:
    """The delta against the members table, and what the guards say of it."""
    base = store.last_applied_sync()
    current = store.current_members()
    protected = protected_by_rejects(member_rejects, current)
    delta = compute_delta(valid_members, current, protected)
    figures = SyncFigures(
        fetched=len(django_members),
        valid=len(valid_members),
        rejected=len(member_rejects),
        active_before=int(current["status"].isin([ACTIVE, SUSPENDED]).sum()),
        removals=counts(delta)["removed"],
        last_fetched=store.last_fetched_count(),
        eligible_before=int((current["status"] == ACTIVE).sum()),
        eligibility_losses=eligibility_losses(delta),
    )
    violations = evaluate_guards(figures, registry_policy.guard_policy)
    kept = protected_from_removal(current, valid_members, protected)
    return PlannedSync(delta, base["id"] if base else None, figures, violations, kept)
