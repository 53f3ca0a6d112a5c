"""registry_sync and registry_rollback end to end: Django simulator, SQLite and real Postgres."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from membership_assets.registry.automation import django_members_changed, registry_hourly
from membership_assets.registry.store import MembersStore

SYNC = "registry_sync"


def run_sync(defs, instance, *, tags=None, dry_run=False, **sync_config):
    """registry_sync, or with ``dry_run`` the registry_preview job (the real sync has no switch)."""
    job, step = ("registry_preview", "preview_registry_sync") if dry_run else (SYNC, "membership_sync")
    run_config = {"ops": {step: {"config": sync_config}}} if sync_config else {}
    return defs.resolve_job_def(job).execute_in_process(
        run_config=run_config, instance=instance, tags=tags or {}, raise_on_error=False
    )


def members_table(url: str) -> pd.DataFrame:
    store = MembersStore.from_url(url)
    try:
        return store.current_members().sort_values("kennitala").reset_index(drop=True)
    finally:
        store.engine.dispose()


def store_for(url: str) -> MembersStore:
    s = MembersStore.from_url(url)
    s.ensure_schema()
    return s


def expected_eligibility(sim) -> dict[str, bool]:
    """From the simulator's own rows: valid kennitala -> eligible (active) or not (unpaid/suspended)."""
    valid = set(sim.data.truth.valid_kennitalas)
    out = {}
    for m in sim.data.members:
        kt = str(m["kennitala"]).replace("-", "")
        if kt in valid:
            out[kt] = m["status"] == "active"
    return out


def dry_run_report(result) -> dict:
    """What a dry run reported: the observation of membership_sync (it materializes nothing)."""
    [obs] = result.asset_observations_for_node("preview_registry_sync")
    assert obs.asset_key == dg.AssetKey("membership_sync")
    return {k: v.value for k, v in obs.metadata.items()}


def failure_message(result) -> str:
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return str(event.event_specific_data.error)


def test_first_sync_makes_exactly_the_valid_members_eligible(
    registry_defs, instance, django_sim, members_db_url
):
    result = run_sync(registry_defs, instance)
    assert result.success
    store = store_for(members_db_url)
    view = store.eligibility()
    assert dict(zip(view["kennitala"], view["eligible"].astype(bool), strict=True)) == expected_eligibility(
        django_sim
    )
    log = store.log_entry(result.run_id)
    assert log["status"] == "partial"  # some rows were quarantined
    assert log["source"] == "manual" and log["members_fetched"] == len(django_sim.data.members)
    assert log["members_added"] == len(view) and log["members_rejected"] == 9
    rejects = store.rejects_of(result.run_id)
    assert set(rejects["kennitala_raw"]) == set(django_sim.data.truth.rejected_rows)


def test_an_unchanged_registry_changes_nothing(registry_defs, instance, members_db_url):
    assert run_sync(registry_defs, instance).success
    before = members_table(members_db_url)
    second = run_sync(registry_defs, instance)
    assert second.success
    assert second.output_for_node("membership_sync").delta.empty
    log = store_for(members_db_url).log_entry(second.run_id)
    assert (log["members_added"], log["members_removed"], log["members_updated"]) == (0, 0, 0)
    pd.testing.assert_frame_equal(members_table(members_db_url), before)


def test_changes_upstream_are_applied_with_soft_deletes(registry_defs, instance, django_sim, members_db_url):
    assert run_sync(registry_defs, instance).success
    valid = django_sim.data.truth.valid_kennitalas
    leaver, mover = valid[0], valid[1]
    django_sim.remove(leaver)
    django_sim.update(mover, email="moved@example.is")
    django_sim.add({"kennitala": "120174-3399", "name": "Ný Manneskja", "email": None, "status": "active"})
    result = run_sync(registry_defs, instance)
    assert result.success
    delta = result.output_for_node("membership_sync").delta.set_index("kennitala")
    assert delta["change_kind"].to_dict() == {leaver: "removed", mover: "changed", "1201743399": "added"}
    store = store_for(members_db_url)
    assert not store.is_eligible(leaver) and store.is_eligible("1201743399")
    row = members_table(members_db_url).set_index("kennitala").loc[leaver]
    assert row["status"] == "removed" and row["name"]  # kept, not deleted


@pytest.mark.parametrize(
    "break_upstream, guard",
    [
        ("empty", "the registry listed no members"),
        ("thirty_percent", "30% of active members would be removed"),
    ],
)
def test_guards_stop_the_sync_before_anything_is_written(
    registry_defs, instance, django_sim, members_db_url, break_upstream, guard
):
    assert run_sync(registry_defs, instance).success
    before = members_table(members_db_url)
    members = django_sim.data.members
    if break_upstream == "empty":
        django_sim.set_members([])
    else:
        valid = django_sim.data.truth.valid_kennitalas
        active = [k for k in valid if k in set(before.loc[before["status"] != "removed", "kennitala"])]
        gone = set(active[: round(len(active) * 0.30)])
        django_sim.set_members([m for m in members if str(m["kennitala"]).replace("-", "") not in gone])
    result = run_sync(registry_defs, instance)
    assert not result.success
    assert guard in failure_message(result)
    pd.testing.assert_frame_equal(members_table(members_db_url), before)
    log = store_for(members_db_url).log_entry(result.run_id)
    assert log["status"] == "failed" and log["errors"]["step"] == "membership_sync"
    assert guard in log["errors"]["error"]
    assert log["errors"]["violations"]


def test_an_explicit_override_lets_a_checked_mass_removal_through(
    registry_defs, instance, django_sim, members_db_url
):
    assert run_sync(registry_defs, instance).success
    keep = django_sim.data.members[: len(django_sim.data.members) // 2]
    django_sim.set_members(keep)
    result = run_sync(registry_defs, instance, allow_mass_removal=True)
    assert result.success
    log = store_for(members_db_url).log_entry(result.run_id)
    assert log["members_removed"] > 100 and "overridden_guards" in log["errors"]


def test_a_truncated_registry_page_fails_the_run_and_writes_nothing(
    registry_defs, instance, django_sim, members_db_url
):
    assert run_sync(registry_defs, instance).success
    before = members_table(members_db_url)

    def drop_one(body):
        body["results"].pop()
        return body

    django_sim.faults.add(path_pattern=r"page=2", mutate=drop_one, times=None)
    result = run_sync(registry_defs, instance)
    assert not result.success
    assert "declared" in failure_message(result)
    pd.testing.assert_frame_equal(members_table(members_db_url), before)
    log = store_for(members_db_url).log_entry(result.run_id)
    assert log["status"] == "failed" and log["errors"]["step"] == "django_members"
    assert log["errors"]["type"] == "IncompleteListingError"


def test_dry_run_reports_the_exact_delta_and_writes_nothing(
    registry_defs, instance, django_sim, members_db_url
):
    assert run_sync(registry_defs, instance).success
    django_sim.remove(django_sim.data.truth.valid_kennitalas[5])
    django_sim.update(django_sim.data.truth.valid_kennitalas[6], name="Nýtt Nafn")
    before = members_table(members_db_url)
    dry = run_sync(registry_defs, instance, dry_run=True)
    assert dry.success
    report = dry_run_report(dry)
    assert report["dry_run"] and (report["removed"], report["changed"]) == (1, 1)
    planned = dry.output_for_node("preview_registry_sync").delta
    assert len(planned) == 2
    pd.testing.assert_frame_equal(members_table(members_db_url), before)
    store = store_for(members_db_url)
    assert store.log_entry(dry.run_id) is None and store.rejects_of(dry.run_id).empty
    real = run_sync(registry_defs, instance)
    pd.testing.assert_frame_equal(real.output_for_node("membership_sync").delta, planned)


def test_dry_run_says_when_the_real_run_would_be_blocked(registry_defs, instance, django_sim, members_db_url):
    assert run_sync(registry_defs, instance).success
    django_sim.set_members([])
    dry = run_sync(registry_defs, instance, dry_run=True)
    assert dry.success
    assert "empty_upstream" in dry_run_report(dry)["would_block"]


def test_rollback_restores_the_membership_before_a_sync(registry_defs, instance, django_sim, members_db_url):
    assert run_sync(registry_defs, instance).success
    before = members_table(members_db_url)
    django_sim.remove(django_sim.data.truth.valid_kennitalas[0])
    django_sim.update(django_sim.data.truth.valid_kennitalas[1], email="x@example.is")
    bad = run_sync(registry_defs, instance)
    assert bad.success
    job = registry_defs.resolve_job_def("registry_rollback")
    preview = job.execute_in_process(
        run_config={"ops": {"rollback_membership_sync": {"config": {"sync_id": bad.run_id}}}},
        instance=instance,
    )
    shown = preview.output_for_node("rollback_membership_sync")
    assert (shown["sync_id"], shown["would_change"]) == (None, 2)
    assert shown["counts"] == {"added": 0, "reinstated": 1, "changed": 1, "removed": 0}
    undo = job.execute_in_process(
        run_config={
            "ops": {
                "rollback_membership_sync": {"config": {"sync_id": bad.run_id, "confirm_sync_id": bad.run_id}}
            }
        },
        instance=instance,
    )
    assert undo.success
    pd.testing.assert_frame_equal(members_table(members_db_url), before)
    log = store_for(members_db_url).log_entry(undo.run_id)
    assert (log["source"], log["rolled_back_sync_id"]) == ("rollback", bad.run_id)


def test_rolling_back_an_older_sync_is_refused(registry_defs, instance, django_sim):
    first = run_sync(registry_defs, instance)
    django_sim.remove(django_sim.data.truth.valid_kennitalas[0])
    assert run_sync(registry_defs, instance).success
    undo = registry_defs.resolve_job_def("registry_rollback").execute_in_process(
        run_config={
            "ops": {
                "rollback_membership_sync": {
                    "config": {"sync_id": first.run_id, "confirm_sync_id": first.run_id}
                }
            }
        },
        instance=instance,
        raise_on_error=False,
    )
    assert not undo.success and "not the latest" in failure_message(undo)


def test_the_source_is_recorded_from_the_launch(registry_defs, instance, members_db_url):
    scheduled = run_sync(registry_defs, instance, tags={"dagster/schedule_name": "registry_hourly"})
    by_sensor = run_sync(registry_defs, instance, tags={"membership/source": "sensor"})
    store = store_for(members_db_url)
    assert store.log_entry(scheduled.run_id)["source"] == "scheduled"
    assert store.log_entry(by_sensor.run_id)["source"] == "sensor"


def test_schedule_is_hourly_in_reykjavik():
    assert registry_hourly.cron_schedule == "0 * * * *"
    assert registry_hourly.execution_timezone == "Atlantic/Reykjavik"
    assert registry_hourly.job_name == SYNC


def sensor_tick(instance, resources, cursor):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"django": resources["django"]})
    return django_members_changed.evaluate_tick(ctx)


def test_sensor_starts_a_sync_only_when_the_registry_changes(instance, registry_resources, django_sim):
    first = sensor_tick(instance, registry_resources, None)
    assert first.run_requests == [] and first.cursor and "recorded" in first.skip_message
    quiet = sensor_tick(instance, registry_resources, first.cursor)
    assert quiet.run_requests == [] and quiet.cursor in (None, first.cursor)
    django_sim.remove(django_sim.data.truth.valid_kennitalas[0])
    changed = sensor_tick(instance, registry_resources, first.cursor)
    [request] = changed.run_requests
    assert request.tags["membership/source"] == "sensor"
    assert changed.cursor != first.cursor
    again = sensor_tick(instance, registry_resources, changed.cursor)
    assert again.run_requests == []


def test_sensor_waits_while_a_sync_is_running(instance, registry_resources, registry_defs, django_sim):
    first = sensor_tick(instance, registry_resources, None)
    django_sim.remove(django_sim.data.truth.valid_kennitalas[0])
    job = registry_defs.resolve_job_def(SYNC)
    instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
    tick = sensor_tick(instance, registry_resources, first.cursor)
    assert tick.run_requests == [] and "already running" in tick.skip_message
    assert tick.cursor in (None, first.cursor)  # the change is not forgotten


def test_sensor_skips_when_the_registry_is_down(instance, registry_resources, django_sim):
    django_sim.faults.add(path_pattern="eligible", status=503, times=None)
    tick = sensor_tick(instance, registry_resources, '"members-v1-410"')
    assert tick.run_requests == [] and "unreachable" in tick.skip_message


def test_admins_get_the_guard_message_by_email(registry_defs, instance, django_sim, outbox, alert_admins):
    import email

    assert run_sync(registry_defs, instance).success
    django_sim.set_members([])
    result = run_sync(registry_defs, instance)
    alert_admins(result, registry_defs)
    [path] = outbox.glob("*.eml")
    body = email.message_from_bytes(path.read_bytes(), policy=email.policy.default).get_content()
    assert "registry_sync" in body and "the registry listed no members" in body
