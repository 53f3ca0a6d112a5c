"""When the registry sync runs: hourly, when Django changes, by hand; and how to roll one back."""

import hashlib

import dagster as dg
from pydantic import Field

from .. import pools
from ..connectors.errors import ApiError
from .assets import GROUP, sync_id_of
from .resources import DjangoRegistryResource, MembersDatabase
from .store import RollbackError, SyncLogEntry

registry_sync = dg.define_asset_job(
    "registry_sync",
    selection=dg.AssetSelection.groups(GROUP).downstream(),
    description="Fetch eligible members from Django, validate, apply the delta, archive. Launch "
    "by hand with dry_run / allow_mass_removal in membership_sync's config.",
    tags={"membership/pipeline": "registry"},
)

registry_hourly = dg.ScheduleDefinition(
    name="registry_hourly",
    job=registry_sync,
    cron_schedule="0 * * * *",
    execution_timezone="Atlantic/Reykjavik",
    description="New members can vote, and removed ones cannot, within an hour.",
)

_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dg.sensor(job=registry_sync, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def django_members_changed(context: dg.SensorEvaluationContext, django: DjangoRegistryResource):
    """Start a sync when the registry's member list changes (ETag of the listing as the cursor)."""
    client = django.open_client()
    try:
        marker, changed = client.change_marker(context.cursor)
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
        dg.RunsFilter(job_name=registry_sync.name, statuses=_ACTIVE), limit=1
    ):
        # Leave the cursor alone: the change is picked up once the running sync is done.
        return dg.SkipReason("a registry sync is already running")
    run_key = hashlib.sha256(f"{context.cursor}->{marker}".encode()).hexdigest()[:20]
    context.update_cursor(marker)
    return dg.RunRequest(run_key=run_key, tags={"membership/source": "sensor"})


class RollbackConfig(dg.Config):
    sync_id: str = Field(description="The sync (run id) whose changes to undo; must be the latest applied.")
    dry_run: bool = Field(default=False, description="Show the changes that would be undone, write nothing.")


@dg.op(tags={"membership/side_effect": "apply"}, pool=pools.MEMBERS_DB)
def rollback_membership_sync(
    context: dg.OpExecutionContext, config: RollbackConfig, members_db: MembersDatabase
) -> dict:
    """Restore the membership from before one sync, recorded as a sync of its own."""
    from .store import inverse_delta

    store = members_db.store()
    if config.dry_run:
        inverse = inverse_delta(store.changes_of(config.sync_id))
        context.log.info(f"dry run: rolling back {config.sync_id} would change {len(inverse)} members")
        return {"sync_id": None, "would_change": len(inverse)}
    entry = SyncLogEntry(id=sync_id_of(context), source="rollback", status="success", run_id=context.run_id)
    try:
        entry = store.rollback(config.sync_id, entry)
    except RollbackError as exc:
        raise dg.Failure(str(exc)) from exc
    context.log.info(
        f"rolled back {config.sync_id}: +{entry.members_added} -{entry.members_removed} ~{entry.members_updated}"
    )
    return {"sync_id": entry.id, "rolled_back": config.sync_id}


@dg.job(tags={"membership/pipeline": "registry"}, description="Undo the latest applied membership sync.")
def registry_rollback():
    rollback_membership_sync()
