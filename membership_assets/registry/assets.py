"""Django registry -> voting eligibility, as assets, in step order:

1. ``django_members``: every row the registry lists, read again while paging may hide someone;
2. ``registry_validation``: valid members, and the rows quarantined with reasons;
3. ``membership_delta``: the changes against the members table, and the guards' verdict;
4. ``membership_sync``: the changes applied in one transaction, and the sync logged;
5. ``member_eligibility``: the view elections read.

Steps 1-3's logic is in registry.planning (the admin page's preview runs it too); this module
holds the assets, what only a sync does (apply, log) and the registry preview op: steps 1-3 as
a dry run that reports and writes nothing.

The sync id is the logical Dagster run id (the root of any re-executions): re-executing a run
never applies its sync twice. Every sync leaves one row in membership_sync_log: success or
partial (written in the same transaction as the changes) or failed (written by whichever step
failed, with the reason), whether it was launched by the schedule, the sensor or a person.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import dagster as dg
import pandas as pd
from pydantic import Field

from .. import pools
from ..metadata import md_preview
from ..privacy import carries_personal_data, scrub
from ..run_tags import is_tagged_dry_run, run_source
from .delta import DELTA_COLUMNS, counts
from .guards import SyncFigures, Violation, blocking
from .outcome import SyncOutcome
from .planning import (
    DELTA_SCHEMA,
    ELIGIBILITY_SCHEMA,
    MEMBER_SCHEMA,
    PSEUDONYM_OF_RAW,
    RAW_SCHEMA,
    REJECT_SCHEMA,
    PlannedSync,
    delta_preview,
    fetch_registry,
    guards_md,
    plan_sync,
    validate_listing,
)
from .recovery import keep_unlogged_failure
from .resources import DjangoRegistryResource, MembersDatabase, RegistrySyncPolicy
from .store import MembersStore, SyncLogEntry
from .validation import mask

GROUP = "registry"


def column_schema(columns: dict[str, tuple[str, str]]) -> dict:
    """Definition metadata showing ``columns`` on the asset's page."""
    return {
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name, kind, description=text) for name, (kind, text) in columns.items()]
        )
    }


# -- every step: which sync this is, and its failure logged ----------------------------------------


def sync_id_of(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> str:
    """One sync per logical run: re-executions (new run ids) share their root's sync id."""
    return context.run.root_run_id or context.run.run_id


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
            source=run_source(context.run),
            status="failed",
            dry_run=is_tagged_dry_run(context.run),
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


# -- step 1: the registry's listing ----------------------------------------------------------------


@dg.asset(group_name=GROUP, tags={"dagster/kind/django": ""}, metadata=column_schema(RAW_SCHEMA))
def django_members(
    context: dg.AssetExecutionContext, django: DjangoRegistryResource, members_db: MembersDatabase
) -> dg.Output[pd.DataFrame]:
    """Every member the Django registry lists as eligible, exactly as listed (a JSON-number
    kennitala as its zero-padded digits), read again while paging may have hidden someone."""
    with failed_sync_logged(context, members_db):
        read = fetch_registry(django, members_db, context.log)
    return dg.Output(read.frame, metadata=read.metadata)


# -- step 2: valid members, and the rows quarantined -----------------------------------------------


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
        validated = validate_listing(django_members, registry_policy)
    validated.log_rejects(context.log)
    valid, rejects = validated.valid, validated.rejects
    yield dg.Output(
        valid,
        "valid_members",
        metadata={
            "dagster/row_count": len(valid),
            "by_status": dg.MetadataValue.json(valid["status"].value_counts().to_dict()),
            "duplicates_merged": validated.result.duplicates_merged,
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


# -- step 3: the changes to make, and the guards' verdict on them ----------------------------------


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


# -- step 4: apply, and log the sync ---------------------------------------------------------------


class SyncConfig(dg.Config):
    """How to apply this sync. Overrides exist for a human who has checked the numbers; they hold
    for this run only. No dry-run switch: a preview is the registry_preview job, so a launchpad
    can never turn the next real sync into a preview."""

    allow_mass_removal: bool = Field(
        default=False, description="Apply even if removal/shrink/reject guards trip."
    )
    allow_empty_upstream: bool = Field(default=False, description="Apply even if the registry listed nobody.")


def blockers_of(planned: PlannedSync, config: "SyncConfig | PreviewConfig") -> list[Violation]:
    """The guards that stop this sync, given the overrides it is launched with."""
    return blocking(
        planned.violations,
        allow_mass_removal=config.allow_mass_removal,
        allow_empty_upstream=config.allow_empty_upstream,
    )


def sync_log_entry(
    context: dg.AssetExecutionContext, config: SyncConfig, planned: PlannedSync
) -> SyncLogEntry:
    """The row this sync logs when it applies: partial when rows were rejected, naming any
    guards a person overrode."""
    fig = planned.figures
    notes = {"rejected_rows": fig.rejected} if fig.rejected else {}
    if (config.allow_mass_removal or config.allow_empty_upstream) and planned.violations:
        notes["overridden_guards"] = [v.guard for v in planned.violations]
    return SyncLogEntry(
        id=sync_id_of(context),
        source=run_source(context.run),
        status="partial" if fig.rejected else "success",
        run_id=context.run.run_id,
        members_fetched=fig.fetched,
        members_rejected=fig.rejected,
        errors=notes or None,
    ).with_counts(planned.delta)


def refuse_if_blocked(blockers: list[Violation]) -> None:
    """Stop before writing anything, naming each guard and its override."""
    if blockers:
        raise dg.Failure(
            "sync stopped before writing anything: "
            + "; ".join(f"{v.message} (override with {v.overridable_by})" for v in blockers),
            metadata={"violations": dg.MetadataValue.json([vars(v) for v in blockers])},
        )


def apply_sync(
    store: MembersStore, planned: PlannedSync, entry: SyncLogEntry, member_rejects: pd.DataFrame, log
) -> SyncOutcome:
    """The delta, its log row and the rejected rows written in one transaction. A re-execution
    of a run whose sync already went through reports that sync's changes instead of repeating."""
    entry, applied_now = store.apply(
        planned.delta, entry, base_sync_id=planned.base_sync_id, rejected_rows=member_rejects
    )
    if applied_now:
        delta = planned.delta
        log.info(f"sync {entry.id} applied: {counts(delta)} ({entry.status})")
    else:
        delta = store.changes_of(entry.id)
        log.info(f"sync {entry.id} was already applied by an earlier attempt; nothing to do")
    return SyncOutcome(
        sync_id=entry.id,
        dry_run=False,
        delta=delta[DELTA_COLUMNS],
        would_block=[],
        eligibility_losses=planned.figures.eligibility_losses,
        log=entry,
    )


def applied_metadata(outcome: SyncOutcome, figures: SyncFigures) -> dict:
    """membership_sync's materialization: what was applied, counted from the applied changes."""
    applied = outcome.counts
    log = outcome.log
    assert log is not None  # an applied sync always has its row
    return {
        "sync_id": outcome.sync_id,
        "dry_run": False,
        "status": log.status,
        "source": log.source,
        # From the applied changes: a reinstated member is not "added" (the log's
        # members_added holds both; the sync API splits them the same way).
        **{"added": applied["added"], "reinstated": applied["reinstated"]},
        "removed": applied["removed"],
        "updated": applied["changed"],
        "rejected": figures.rejected,
        "eligibility_losses": figures.eligibility_losses,
    }


@dg.asset(group_name=GROUP, tags={"membership/side_effect": "apply"}, pool=pools.MEMBERS_DB)
def membership_sync(
    context: dg.AssetExecutionContext,
    config: SyncConfig,
    members_db: MembersDatabase,
    membership_delta: PlannedSync,
    member_rejects: pd.DataFrame,
) -> dg.Output[SyncOutcome]:
    """Apply the delta in one transaction (soft deletes, sync_id on every row) and log the sync."""
    planned = membership_delta
    blockers = blockers_of(planned, config)
    entry = sync_log_entry(context, config, planned)
    known = {"members_fetched": planned.figures.fetched, "members_rejected": planned.figures.rejected}
    with failed_sync_logged(context, members_db, **known):
        refuse_if_blocked(blockers)
        timed = replace(entry, duration_ms=_elapsed_ms(context))
        outcome = apply_sync(members_db.store(), planned, timed, member_rejects, context.log)
    return dg.Output(outcome, metadata=applied_metadata(outcome, planned.figures))


# -- step 5: the view elections read ---------------------------------------------------------------


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


# -- the registry preview: steps 1-3 as a dry run that reports and writes nothing ------------------


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
) -> SyncOutcome:
    """Read and judge the registry exactly as a sync does, and report the delta and the guards'
    answer. A plain op, not assets: it materializes nothing and writes no history or sync log."""
    read = fetch_registry(django, members_db, context.log)
    validated = validate_listing(read.frame, registry_policy)
    validated.log_rejects(context.log)
    planned = plan_sync(members_db.store(), registry_policy, read.frame, validated.valid, validated.rejects)
    return report_dry_run(context, planned, blockers_of(planned, config))


def report_dry_run(
    context: dg.OpExecutionContext, planned: PlannedSync, blockers: list[Violation]
) -> SyncOutcome:
    """What a real run would do, as an observation of membership_sync: no materialization, so
    the asset graph, the eligibility view and the audit history stay as they were."""
    outcome = SyncOutcome(
        sync_id=sync_id_of(context),
        dry_run=True,
        delta=planned.delta[DELTA_COLUMNS],
        would_block=[v.guard for v in blockers],
        eligibility_losses=planned.figures.eligibility_losses,
    )
    c = outcome.counts
    context.log_event(
        dg.AssetObservation(
            asset_key=dg.AssetKey("membership_sync"),
            metadata={
                "dry_run": True,
                **c,
                "eligibility_losses": planned.figures.eligibility_losses,
                "rejected": planned.figures.rejected,
                "would_block": ", ".join(outcome.would_block) or "nothing",
                "guards": guards_md(blockers),
                "preview": delta_preview(planned.delta),
            },
        )
    )
    context.log.info(
        f"dry run: would apply {c}"
        + (
            f"; a real run would be blocked by {', '.join(outcome.would_block)}"
            if outcome.would_block
            else ""
        )
        + "; nothing written"
    )
    return outcome
