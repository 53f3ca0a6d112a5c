"""Django registry -> voting eligibility, as assets: fetch, validate, delta, apply, view.

The sync id is the logical Dagster run id (the root of any re-executions): re-executing a run
never applies its sync twice. Every sync leaves one row in membership_sync_log: success or
partial (written in the same transaction as the changes) or failed (written by whichever step
failed, with the reason), whether it was launched by the schedule, the sensor or a person.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd
from pydantic import Field

from .. import pools
from ..columns import record_columns
from ..metadata import md_preview
from ..privacy import carries_personal_data, scrub
from ..run_tags import DRY_RUN_TAG
from .client import DjangoRegistryClient, RegistryListing
from .delta import DELTA_COLUMNS, compute_delta, counts, eligibility_losses, protected_from_removal
from .guards import SyncFigures, Violation, blocking, evaluate_guards
from .records import MemberChange
from .recovery import keep_unlogged_failure
from .resources import DjangoRegistryResource, MembersDatabase, RegistrySyncPolicy
from .store import MembersStore, SyncLogEntry
from .validation import ACTIVE, SUSPENDED, kennitala_key, kennitala_text, mask, validate_members

GROUP = "registry"

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


def column_schema(columns: dict[str, tuple[str, str]]) -> dict:
    """Definition metadata showing ``columns`` on the asset's page."""
    return {
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name, kind, description=text) for name, (kind, text) in columns.items()]
        )
    }


# Previews in run history name members by keyed pseudonym (privacy.pseudonym), labelled as such.
PSEUDONYM = "member_pseudonym"
PSEUDONYM_OF_RAW = "raw_kennitala_pseudonym"


def sync_id_of(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> str:
    """One sync per logical run: re-executions (new run ids) share their root's sync id."""
    return context.run.root_run_id or context.run.run_id


def is_dry_run(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> bool:
    """Whether this run is a dry run (tagged; the real sync has no dry-run switch)."""
    return run_is_dry(context.run)


def run_is_dry(run: dg.DagsterRun) -> bool:
    return run.tags.get(DRY_RUN_TAG) == "true"


def sync_source(context: dg.AssetExecutionContext) -> str:
    return run_source(context.run)


def run_source(run: dg.DagsterRun) -> str:
    """scheduled | sensor | manual (an explicit membership/source tag wins)."""
    tags = run.tags
    if tags.get("membership/source"):
        return tags["membership/source"]
    if "dagster/schedule_name" in tags:
        return "scheduled"
    if "dagster/sensor_name" in tags:
        return "sensor"
    return "manual"


def _elapsed_ms(context: dg.AssetExecutionContext) -> int | None:
    record = context.instance.get_run_record_by_id(context.run.run_id)
    if record is None or not record.start_time:
        return None
    return int((time.time() - record.start_time) * 1000)


@contextmanager
def failed_sync_logged(
    context: dg.AssetExecutionContext, members_db: MembersDatabase, **known: int | None
) -> Iterator[None]:
    """Any exception inside leaves a 'failed' row for this sync, then propagates. With the
    members DB unreachable the row is kept in the run's tags until the next run writes it."""
    try:
        yield
    except Exception as exc:
        error = scrub(exc)
        detail = {"step": context.op_def.name, "type": type(exc).__name__, "error": error}
        violations = getattr(exc, "metadata", {}) or {}
        if "violations" in violations:
            detail["violations"] = violations["violations"].value
        entry = SyncLogEntry(
            id=sync_id_of(context),
            source=sync_source(context),
            status="failed",
            dry_run=is_dry_run(context),
            errors=detail,
            duration_ms=_elapsed_ms(context),
            run_id=context.run.run_id,
            **known,
        )
        try:
            members_db.store().record_failure(entry)
        except Exception as db_exc:
            keep_unlogged_failure(context, entry, db_exc)
        context.log.error(f"sync {sync_id_of(context)} failed in {detail['step']}: {error}")
        if carries_personal_data(exc):
            # Dagster stores the exception (and its causes) in the run history: store the scrubbed text.
            raise dg.Failure(
                f"{type(exc).__name__}: {error}", metadata=getattr(exc, "metadata", None)
            ) from None
        raise


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


@dg.asset(group_name=GROUP, tags={"dagster/kind/django": ""}, metadata=column_schema(RAW_SCHEMA))
def django_members(
    context: dg.AssetExecutionContext, django: DjangoRegistryResource, members_db: MembersDatabase
) -> dg.Output[pd.DataFrame]:
    """Every member the Django registry lists as eligible, exactly as listed (a JSON-number
    kennitala as its zero-padded digits), read again while paging may have hidden someone."""
    with failed_sync_logged(context, members_db):
        read = fetch_registry(django, members_db, context.log)
    return dg.Output(read.frame, metadata=read.metadata)


def validate_listing(django_members: pd.DataFrame, registry_policy: RegistrySyncPolicy):
    """(valid members, rejected rows with reasons, the validation result) of one listing."""
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
    return valid, rejects, result


def log_rejects(log, result) -> None:
    for r in result.rejects[:20]:
        log.warning(
            f"rejected row {r.row_number} (member pseudonym {mask(r.kennitala)}): {', '.join(r.reasons)}"
        )


@dg.multi_asset(
    group_name=GROUP,
    outs={
        "valid_members": dg.AssetOut(
            description="Registry rows that passed validation, normalized.",
            metadata=column_schema(MEMBER_SCHEMA),
        ),
        "member_rejects": dg.AssetOut(
            description="Rows quarantined by validation, with reasons.", metadata=column_schema(REJECT_SCHEMA)
        ),
    },
    check_specs=[
        dg.AssetCheckSpec(
            "no_rejected_rows", asset="member_rejects", description="Every registry row was valid."
        )
    ],
)
def registry_validation(
    context: dg.AssetExecutionContext,
    members_db: MembersDatabase,
    registry_policy: RegistrySyncPolicy,
    django_members: pd.DataFrame,
):
    """Check kennitala (checksum, date, person), name, email and status; quarantine the rest."""
    with failed_sync_logged(context, members_db, members_fetched=len(django_members)):
        valid, rejects, result = validate_listing(django_members, registry_policy)
    log_rejects(context.log, result)
    yield dg.Output(
        valid,
        "valid_members",
        metadata={
            "dagster/row_count": len(valid),
            "by_status": dg.MetadataValue.json(valid["status"].value_counts().to_dict()),
            "duplicates_merged": result.duplicates_merged,
        },
    )
    # Labelled as what it is: a keyed pseudonym of the raw value, never the kennitala itself.
    preview = rejects.assign(
        **{PSEUDONYM_OF_RAW: rejects["kennitala_raw"].map(lambda k: mask(str(k)) if k else k)}
    )
    yield dg.Output(
        rejects,
        "member_rejects",
        metadata={
            "dagster/row_count": len(rejects),
            "preview": md_preview(
                preview, ["row_number", PSEUDONYM_OF_RAW, "reasons"], rows=None, empty="none"
            ),
        },
    )
    yield dg.AssetCheckResult(
        check_name="no_rejected_rows",
        asset_key="member_rejects",
        passed=rejects.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"rejected": len(rejects)},
    )


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


@dg.asset(group_name=GROUP, metadata=column_schema(DELTA_SCHEMA))
def membership_delta(
    context: dg.AssetExecutionContext,
    members_db: MembersDatabase,
    registry_policy: RegistrySyncPolicy,
    django_members: pd.DataFrame,
    valid_members: pd.DataFrame,
    member_rejects: pd.DataFrame,
) -> dg.Output[PlannedSync]:
    """Added, reinstated, changed and removed members against the members table."""
    with failed_sync_logged(
        context, members_db, members_fetched=len(django_members), members_rejected=len(member_rejects)
    ):
        planned = plan_sync(
            members_db.store(), registry_policy, django_members, valid_members, member_rejects
        )
    return dg.Output(planned, metadata=planned.metadata)


class SyncConfig(dg.Config):
    """How to apply this sync. Overrides exist for a human who has checked the numbers; they hold
    for this run only. No dry-run switch: a preview is the registry_preview job, so a launchpad
    can never turn the next real sync into a preview."""

    allow_mass_removal: bool = Field(
        default=False, description="Apply even if removal/shrink/reject guards trip."
    )
    allow_empty_upstream: bool = Field(default=False, description="Apply even if the registry listed nobody.")


def _dry_run_report(context: dg.OpExecutionContext, planned: PlannedSync, blockers: list[Violation]) -> dict:
    """What a real run would do, as an observation of membership_sync: no materialization, so
    the asset graph, the eligibility view and the audit history stay as they were."""
    c = counts(planned.delta)
    would_block = [v.guard for v in blockers]
    report = {
        "sync_id": sync_id_of(context),
        "dry_run": True,
        "would_block": would_block,
        "counts": c,
        "eligibility_losses": planned.figures.eligibility_losses,
        "delta": planned.delta[DELTA_COLUMNS],
    }
    context.log_event(
        dg.AssetObservation(
            asset_key=dg.AssetKey("membership_sync"),
            metadata={
                "dry_run": True,
                **c,
                "eligibility_losses": planned.figures.eligibility_losses,
                "rejected": planned.figures.rejected,
                "would_block": ", ".join(would_block) or "nothing",
                "guards": guards_md(blockers),
                "preview": delta_preview(planned.delta),
            },
        )
    )
    context.log.info(
        f"dry run: would apply {c}"
        + (f"; a real run would be blocked by {', '.join(would_block)}" if would_block else "")
        + "; nothing written"
    )
    return report


class PreviewConfig(dg.Config):
    """The overrides a real sync would be launched with, to see whether they would let it through."""

    allow_mass_removal: bool = Field(default=False, description="As the real sync's override.")
    allow_empty_upstream: bool = Field(default=False, description="As the real sync's override.")


@dg.op
def preview_registry_sync(
    context: dg.OpExecutionContext,
    config: PreviewConfig,
    django: DjangoRegistryResource,
    members_db: MembersDatabase,
    registry_policy: RegistrySyncPolicy,
) -> dict:
    """Read and judge the registry exactly as a sync does, and report the delta and the guards'
    answer. A plain op, not assets: it materializes nothing and writes no history or sync log."""
    read = fetch_registry(django, members_db, context.log)
    valid, rejects, result = validate_listing(read.frame, registry_policy)
    log_rejects(context.log, result)
    planned = plan_sync(members_db.store(), registry_policy, read.frame, valid, rejects)
    blockers = blocking(
        planned.violations,
        allow_mass_removal=config.allow_mass_removal,
        allow_empty_upstream=config.allow_empty_upstream,
    )
    return _dry_run_report(context, planned, blockers)


@dg.asset(group_name=GROUP, tags={"membership/side_effect": "apply"}, pool=pools.MEMBERS_DB)
def membership_sync(
    context: dg.AssetExecutionContext,
    config: SyncConfig,
    members_db: MembersDatabase,
    membership_delta: PlannedSync,
    member_rejects: pd.DataFrame,
):
    """Apply the delta in one transaction (soft deletes, sync_id on every row) and log the sync."""
    planned = membership_delta
    fig = planned.figures
    known = {"members_fetched": fig.fetched, "members_rejected": fig.rejected}
    blockers = blocking(
        planned.violations,
        allow_mass_removal=config.allow_mass_removal,
        allow_empty_upstream=config.allow_empty_upstream,
    )
    entry = SyncLogEntry(
        id=sync_id_of(context),
        source=sync_source(context),
        status="partial" if fig.rejected else "success",
        run_id=context.run.run_id,
        **known,
    ).with_counts(planned.delta)
    overrides = [k for k in ("allow_mass_removal", "allow_empty_upstream") if getattr(config, k)]
    notes = {"rejected_rows": fig.rejected} if fig.rejected else {}
    if overrides and planned.violations:
        notes["overridden_guards"] = [v.guard for v in planned.violations]
    entry.errors = notes or None
    with failed_sync_logged(context, members_db, **known):
        if blockers:
            raise dg.Failure(
                "sync stopped before writing anything: "
                + "; ".join(f"{v.message} (override with {v.overridable_by})" for v in blockers),
                metadata={"violations": dg.MetadataValue.json([vars(v) for v in blockers])},
            )
        delta = planned.delta
        entry.duration_ms = _elapsed_ms(context)
        store = members_db.store()
        entry, applied_now = store.apply(
            delta, entry, base_sync_id=planned.base_sync_id, rejected_rows=member_rejects
        )
        if applied_now:
            context.log.info(f"sync {entry.id} applied: {counts(delta)} ({entry.status})")
        else:
            # A re-execution of a run whose sync already went through: report, don't repeat.
            delta = store.changes_of(entry.id)
            context.log.info(f"sync {entry.id} was already applied by an earlier attempt; nothing to do")
    applied = counts(delta)
    summary = {
        "sync_id": entry.id,
        "dry_run": False,
        "would_block": [],
        "log": vars(entry),
        "delta": delta[DELTA_COLUMNS],
    }
    yield dg.Output(
        summary,
        metadata={
            "sync_id": entry.id,
            "dry_run": False,
            "status": entry.status,
            "source": entry.source,
            # From the applied changes: a reinstated member is not "added" (the log's
            # members_added holds both; the sync API splits them the same way).
            **{"added": applied["added"], "reinstated": applied["reinstated"]},
            "removed": applied["removed"],
            "updated": applied["changed"],
            "rejected": fig.rejected,
            "eligibility_losses": fig.eligibility_losses,
        },
    )


@dg.asset(
    group_name=GROUP,
    deps=[membership_sync],
    tags={"dagster/kind/sql": ""},
    metadata=column_schema(ELIGIBILITY_SCHEMA),
)
def member_eligibility(
    context: dg.AssetExecutionContext, members_db: MembersDatabase
) -> dg.MaterializeResult:
    """The view elections read: active and suspended members, eligible = active."""
    listed, eligible = members_db.store().eligibility_counts()
    return dg.MaterializeResult(
        metadata={"dagster/row_count": listed, "eligible": eligible, "suspended": listed - eligible}
    )
