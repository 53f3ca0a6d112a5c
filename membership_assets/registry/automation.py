"""When the registry sync runs: hourly, when Django changes, by hand; and how to roll one back."""

import hashlib

import dagster as dg
from pydantic import Field

from .. import pools
from ..connectors.errors import ApiError
from ..environment import REGISTRY_SYNC_CRON, SCHEDULE_DEFAULT_STATUS
from ..limits import max_runtime_tags
from ..notify.freshness import FRESHNESS_CHECKS
from ..warehouse.assets import sync_log_rows
from ..warehouse.audit import record, run_identity
from ..warehouse.resources import AuditWarehouse
from ..warehouse.schema import TABLES
from .assets import DRY_RUN_TAG, GROUP, sync_id_of
from .delta import counts
from .resources import DjangoRegistryResource, MembersDatabase
from .store import RollbackError, SyncLogEntry

registry_sync = dg.define_asset_job(
    "registry_sync",
    selection=dg.AssetSelection.groups(GROUP).downstream() - FRESHNESS_CHECKS,
    description="Fetch eligible members from Django, validate, apply the delta, archive. Launch "
    "by hand with dry_run / allow_mass_removal in membership_sync's config.",
    tags={"membership/pipeline": "registry", **max_runtime_tags("registry_sync")},
)

registry_preview = dg.define_asset_job(
    "registry_preview",
    selection=dg.AssetSelection.assets("membership_delta").upstream(),
    description="What a registry sync would do, without planning one: reads and judges the "
    "registry (membership_delta shows the delta, eligibility losses and would_block) but never "
    "plans membership_sync, member_eligibility or audit history, so even a failed preview leaves "
    "them untouched.",
    tags={"membership/pipeline": "registry", DRY_RUN_TAG: "true", **max_runtime_tags("registry_preview")},
)

registry_hourly = dg.ScheduleDefinition(
    name="registry_hourly",
    job=registry_sync,
    cron_schedule=REGISTRY_SYNC_CRON,
    execution_timezone="Atlantic/Reykjavik",
    description="New members can vote, and removed ones cannot, within an hour.",
    default_status=SCHEDULE_DEFAULT_STATUS,
)

ACTIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dg.sensor(job=registry_sync, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
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
    return dg.RunRequest(run_key=run_key, tags={"membership/source": "sensor"})


class RollbackConfig(dg.Config):
    sync_id: str = Field(description="The sync (run id) whose changes to undo; must be the latest applied.")
    dry_run: bool = Field(default=False, description="Show the changes that would be undone, write nothing.")


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
    log = sync_log_rows(members_db)
    logged = record(
        warehouse,
        "membership_sync_log",
        log[[c for c in log.columns if c in TABLES["membership_sync_log"].column_names]],
        run,
        stamp=False,
    )
    listed, eligible = store.eligibility_counts()
    for key, metadata in (
        (
            dg.AssetKey("member_eligibility"),
            {
                "dagster/row_count": listed,
                "eligible": eligible,
                "suspended": listed - eligible,
                "sync_id": entry.id,
            },
        ),
        (dg.AssetKey(["audit", "membership_deltas"]), {"dagster/row_count": deltas, "sync_id": entry.id}),
        (dg.AssetKey(["audit", "membership_sync_log"]), {"dagster/row_count": logged}),
    ):
        context.log_event(dg.AssetMaterialization(asset_key=key, metadata=metadata))


@dg.op(tags={"membership/side_effect": "apply"}, pool=pools.MEMBERS_DB)
def rollback_membership_sync(
    context: dg.OpExecutionContext,
    config: RollbackConfig,
    members_db: MembersDatabase,
    warehouse: AuditWarehouse,
) -> dict:
    """Restore the membership from before one sync, recorded as a sync of its own.

    A dry run makes the same checks as the real run (refused the same way) and shows the exact
    changes it would make.
    """
    store = members_db.store()
    if config.dry_run:
        try:
            inverse = store.plan_rollback(config.sync_id)
        except RollbackError as exc:
            raise dg.Failure(f"a real rollback would be refused: {exc}") from exc
        c = counts(inverse)
        context.log.info(f"dry run: rolling back {config.sync_id} would change {len(inverse)} members: {c}")
        return {"sync_id": None, "would_change": len(inverse), "counts": c, "delta": inverse}
    entry = SyncLogEntry(
        id=sync_id_of(context), source="rollback", status="success", run_id=context.run.run_id
    )
    try:
        entry = store.rollback(config.sync_id, entry)
    except RollbackError as exc:
        raise dg.Failure(str(exc)) from exc
    context.log.info(
        f"rolled back {config.sync_id}: +{entry.members_added} -{entry.members_removed} ~{entry.members_updated}"
    )
    _record_rollback(context, warehouse, members_db, entry)
    return {"sync_id": entry.id, "rolled_back": config.sync_id}


@dg.job(
    tags={"membership/pipeline": "registry", **max_runtime_tags("registry_rollback")},
    description="Undo the latest applied membership sync.",
)
def registry_rollback():
    rollback_membership_sync()
