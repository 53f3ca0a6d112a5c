"""When the registry sync runs: hourly, when Django changes, by hand; and how to roll one back."""

import hashlib
from dataclasses import replace

import dagster as dg
import pandas as pd
from pydantic import Field

from .. import pools
from ..config import default_schedule_status
from ..connectors.errors import ApiError
from ..limits import max_runtime_tags
from ..notify.freshness import FRESHNESS_CHECKS
from ..run_tags import DRY_RUN_TAGS, SOURCE_TAG, mark_dry_run
from ..warehouse.assets import sync_log_rows
from ..warehouse.audit import record, run_identity
from ..warehouse.resources import AuditWarehouse
from .assets import GROUP, delta_preview, guards_md, preview_registry_sync, sync_id_of
from .delta import apply_in_memory, counts, eligibility_losses
from .guards import RollbackFigures, Violation, blocking, evaluate_rollback_guards
from .resources import DjangoRegistryResource, MembersDatabase, RegistrySyncPolicy
from .settings import RegistrySettings
from .store import MembersStore, RollbackError, SyncLogEntry
from .validation import ACTIVE, SUSPENDED

registry_sync = dg.define_asset_job(
    "registry_sync",
    selection=dg.AssetSelection.groups(GROUP).downstream() - FRESHNESS_CHECKS,
    description="Fetch eligible members from Django, validate, apply the delta, archive. Always "
    "real: to see what it would do, launch registry_preview. Overrides for this run only: "
    "allow_mass_removal / allow_empty_upstream in membership_sync's config.",
    tags={"membership/pipeline": "registry", **max_runtime_tags("registry_sync")},
)


@dg.job(
    tags={"membership/pipeline": "registry", **DRY_RUN_TAGS, **max_runtime_tags("registry_preview")},
    description="Dry run of registry_sync: reads and judges the registry as a sync does and "
    "reports the exact delta, the eligibility losses and what would block it (an observation "
    "of membership_sync). Materializes nothing, writes no sync log or audit history, emails no "
    "admin on failure (launch with tag membership/alert_admins=true to be told).",
)
def registry_preview():
    preview_registry_sync()


registry_hourly = dg.ScheduleDefinition(
    name="registry_hourly",
    job=registry_sync,
    cron_schedule=RegistrySettings.load().sync_cron,
    execution_timezone="Atlantic/Reykjavik",
    description="New members can vote, and removed ones cannot, within an hour.",
    default_status=default_schedule_status(),
)

ACTIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dg.sensor(
    job=registry_sync,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Fallback for missed webhooks (off by default): every minute, asks Django whether "
    "any member changed and starts registry_sync if so.",
)
def django_members_changed(context: dg.SensorEvaluationContext, django: DjangoRegistryResource):
    """Start a sync when any member in the registry changes (fallback for missed webhooks)."""
    client = django.open_client()
    try:
        marker, changed = client.change_marker(context.cursor, whole_list_etag=django.whole_list_etag)
    except ApiError as exc:
        return dg.SkipReason(f"registry unreachable, will look again: {exc}")
    finally:
        client.api.close()
    if context.cursor is None:
        context.update_cursor(marker)
        return dg.SkipReason("recorded the registry's current version; the next change starts a sync")
    if not changed:
        return dg.SkipReason("registry unchanged")
    if context.instance.get_run_records(
        dg.RunsFilter(job_name=registry_sync.name, statuses=ACTIVE_RUN_STATUSES), limit=1
    ):
        # Leave the cursor alone: the change is picked up once the running sync is done.
        return dg.SkipReason("a registry sync is already running")
    run_key = hashlib.sha256(f"{context.cursor}->{marker}".encode()).hexdigest()[:20]
    context.update_cursor(marker)
    return dg.RunRequest(run_key=run_key, tags={SOURCE_TAG: "sensor"})


class RollbackConfig(dg.Config):
    """Undoing a sync takes eligibility away as surely as a sync does: guarded like one, and a
    dry run unless the sync it undoes is named twice."""

    sync_id: str = Field(description="The sync (run id) whose changes to undo; must be the latest applied.")
    confirm_sync_id: str = Field(
        default="",
        description="Repeat sync_id here to apply the rollback. Empty or different: a dry run that "
        "shows the exact changes and what the guards say, and writes nothing.",
    )
    allow_mass_removal: bool = Field(
        default=False,
        description="For this run only: apply even if the removal, eligibility-loss or shrink guards trip.",
    )


def rollback_figures(current: pd.DataFrame, inverse: pd.DataFrame) -> RollbackFigures:
    """What the guards judge: the roll now and after the inverse delta."""
    after = apply_in_memory(current, inverse)
    listed = [ACTIVE, SUSPENDED]
    return RollbackFigures(
        active_before=int(current["status"].isin(listed).sum()),
        active_after=int(after["status"].isin(listed).sum()),
        eligible_before=int((current["status"] == ACTIVE).sum()),
        removals=counts(inverse)["removed"],
        eligibility_losses=eligibility_losses(inverse),
    )


def _record_rollback(
    context: dg.OpExecutionContext,
    warehouse: AuditWarehouse,
    members_db: MembersDatabase,
    entry: SyncLogEntry,
) -> None:
    """A rollback is a sync: the eligibility view and the audit history say so, as after a sync."""
    store = members_db.store()
    applied = store.changes_of(entry.id)
    run = run_identity(context)
    deltas = record(warehouse, "membership_deltas", applied.assign(sync_id=entry.id, dry_run=False), run)
    logged = record(warehouse, "membership_sync_log", sync_log_rows(members_db), run, stamp=False)
    listed, eligible = store.eligibility_counts()
    rollback = {"source": "rollback", "rollback_of": entry.rolled_back_sync_id, "sync_id": entry.id}
    for key, metadata in (
        (
            dg.AssetKey("membership_sync"),
            {
                **rollback,
                "dry_run": False,
                "status": entry.status,
                "added": entry.members_added,
                "removed": entry.members_removed,
                "updated": entry.members_updated,
                "overridden_guards": ", ".join((entry.errors or {}).get("overridden_guards", [])) or "none",
            },
        ),
        (
            dg.AssetKey("member_eligibility"),
            {"dagster/row_count": listed, "eligible": eligible, "suspended": listed - eligible, **rollback},
        ),
        (dg.AssetKey(["audit", "membership_deltas"]), {"dagster/row_count": deltas, **rollback}),
        (dg.AssetKey(["audit", "membership_sync_log"]), {"dagster/row_count": logged}),
    ):
        context.log_event(dg.AssetMaterialization(asset_key=key, metadata=metadata))


def _rollback_preview(
    context: dg.OpExecutionContext, target: str, inverse: pd.DataFrame, blockers: list[Violation]
) -> dict:
    """An unconfirmed rollback: tagged a dry run, observed (never materialized), nothing written."""
    c = counts(inverse)
    would_block = [v.guard for v in blockers]
    context.log_event(
        dg.AssetObservation(
            asset_key=dg.AssetKey("membership_sync"),
            metadata={
                "dry_run": True,
                "rollback_of": target,
                **c,
                "eligibility_losses": eligibility_losses(inverse),
                "would_block": ", ".join(would_block) or "nothing",
                "guards": guards_md(blockers),
                "preview": delta_preview(inverse),
                "to_apply": f"launch again with confirm_sync_id: {target}",
            },
        )
    )
    context.log.info(
        f"dry run: rolling back {target} would change {len(inverse)} members: {c}"
        + (f"; a confirmed rollback would be blocked by {', '.join(would_block)}" if would_block else "")
        + f"; nothing written. To apply, set confirm_sync_id to {target}."
    )
    return {
        "sync_id": None,
        "dry_run": True,
        "rollback_of": target,
        "would_change": len(inverse),
        "counts": c,
        "would_block": would_block,
        "delta": inverse,
    }


@dg.op(tags={"membership/side_effect": "apply"}, pool=pools.MEMBERS_DB)
def rollback_membership_sync(
    context: dg.OpExecutionContext,
    config: RollbackConfig,
    members_db: MembersDatabase,
    registry_policy: RegistrySyncPolicy,
    warehouse: AuditWarehouse,
) -> dict:
    """Restore the membership from before one sync, recorded as a sync of its own.

    The inverse delta passes the sync's guards (removals, eligibility losses, shrink) unless
    this run overrides them. Unconfirmed, it is a dry run making the same checks (refused the
    same way) and showing the exact changes it would make.
    """
    store = members_db.store()
    target = config.sync_id
    confirmed = config.confirm_sync_id.strip() == target
    if not confirmed:
        mark_dry_run(context, alert=False)
    entry = SyncLogEntry(
        id=sync_id_of(context), source="rollback", status="success", run_id=context.run.run_id
    )
    done = store.applied_entry(entry.id) if confirmed else None
    if done is None:  # not a re-execution of a rollback that already went through
        try:
            inverse = store.plan_rollback(target)
        except RollbackError as exc:
            raise dg.Failure(("" if confirmed else "a real rollback would be refused: ") + str(exc)) from exc
        violations = evaluate_rollback_guards(
            rollback_figures(store.current_members(), inverse), registry_policy.guard_policy
        )
        blockers = blocking(
            violations, allow_mass_removal=config.allow_mass_removal, allow_empty_upstream=False
        )
        if not confirmed:
            return _rollback_preview(context, target, inverse, blockers)
        if blockers:
            _refuse_rollback(context, store, entry, target, blockers)
        if violations:
            entry.errors = {"overridden_guards": [v.guard for v in violations]}
        entry = store.rollback(target, entry)
    else:
        entry = done
    context.log.info(
        f"rolled back {target}: +{entry.members_added} -{entry.members_removed} ~{entry.members_updated}"
    )
    _record_rollback(context, warehouse, members_db, entry)
    return {"sync_id": entry.id, "dry_run": False, "rolled_back": target}


def _refuse_rollback(
    context: dg.OpExecutionContext,
    store: MembersStore,
    entry: SyncLogEntry,
    target: str,
    blockers: list[Violation],
) -> None:
    """Stop a confirmed rollback the guards block, leaving a failed row in the sync log."""
    message = "rollback stopped before writing anything: " + "; ".join(
        f"{v.message} (override with {v.overridable_by})" for v in blockers
    )
    found = [vars(v) for v in blockers]
    store.record_failure(
        replace(
            entry,
            status="failed",
            rolled_back_sync_id=target,
            errors={"step": context.op_def.name, "type": "Failure", "error": message, "violations": found},
        )
    )
    raise dg.Failure(message, metadata={"violations": dg.MetadataValue.json(found)})


@dg.job(
    tags={"membership/pipeline": "registry", **max_runtime_tags("registry_rollback")},
    description="Undo the latest applied membership sync, guarded like a sync. A dry run (tagged "
    "membership/dry_run) unless confirm_sync_id repeats sync_id.",
)
def registry_rollback():
    rollback_membership_sync()
