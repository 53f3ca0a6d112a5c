"""The action_builder_tag_sync job end to end: simulator over HTTP, DuckDB, .eml outbox."""

from __future__ import annotations

import csv
import email
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from membership_assets.action_builder.rules import REPORT_COLUMNS

from .conftest import ab_resource_for

JOB = "action_builder_tag_sync"


def run_job(
    defs,
    instance,
    *,
    mode="full",
    dry_run=True,
    max_deletions=500,
    since=None,
    connections="auto",
    **extra_ops,
):
    scan = {"mode": mode, "connections": connections}
    if since:
        scan["since"] = since
    ops = {
        "action_builder_campaign": {"config": scan},
        "outdated_tagging_deletions": {"config": {"dry_run": dry_run, "max_deletions": max_deletions}},
        **extra_ops,
    }
    return defs.resolve_job_def(JOB).execute_in_process(
        run_config={"ops": ops}, instance=instance, raise_on_error=False
    )


def read_report(result) -> list[dict[str, str]]:
    path = Path(result.output_for_node("mismatch_report"))
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def outbox_messages(outbox: Path) -> list[email.message.EmailMessage]:
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in sorted(outbox.glob("*.eml"))
    ]


def test_full_run_reports_exactly_the_planted_active_mismatches(defs, instance, ab_sim, outbox, warehouse):
    truth = ab_sim.data.expected_mismatches()
    result = run_job(defs, instance)
    assert result.success

    rows = read_report(result)
    expected_active = {pid: t for pid, t in truth.items() if not t.inactive}
    assert {r["uuid"] for r in rows} == set(expected_active)
    for r in rows:
        t = expected_active[r["uuid"]]
        assert r["unit_name"] == t.unit_name
        assert r["membership_type"] == (t.membership_type or "")
        assert r["membership_status"] == (t.membership_status or "")
        assert set(r["mismatch_reasons"].split(", ")) == set(t.reasons)
    assert list(rows[0]) == REPORT_COLUMNS
    all_tagging_ids = set(ab_sim.data.taggings)
    assert not any(v in all_tagging_ids for r in rows for v in r.values()), (
        "no internal tagging ids in the CSV"
    )

    [msg] = outbox_messages(outbox)
    assert msg["To"] == "organizers@example.org, steward@example.org"
    assert f"{len(rows)} mismatches attached" in msg["Subject"]
    [attachment] = [p for p in msg.iter_attachments()]
    assert attachment.get_filename().startswith("ActionBuilder_Sync_Export_")
    assert list(csv.DictReader(io.StringIO(attachment.get_content()))) == rows

    # Dry run by default: nothing deleted, one audit row per planned deletion.
    planned = sorted(tid for t in truth.values() for tid in t.outdated_tagging_ids)
    assert all(ab_sim.tagging_exists(tid) for tid in planned)
    audit = warehouse.query("select tagging_id, action from {dataset}.ab_tagging_deletions order by 1")
    assert audit["tagging_id"].tolist() == planned
    assert set(audit["action"]) == {"dry_run"}
    assert instance.get_run_by_id(result.run_id).tags["membership/dry_run"] == "true"

    # History landed in the warehouse.
    mismatches = warehouse.query("select count(*) as n from {dataset}.ab_mismatches")["n"][0]
    assert mismatches == len(truth)
    scan = warehouse.query("select mode, people, requests from {dataset}.ab_scan_runs")
    assert scan["mode"].tolist() == ["full"] and scan["people"][0] == len(ab_sim.data.person_ids())


def test_live_cleanup_deletes_exactly_the_outdated_taggings_and_a_rerun_deletes_nothing(
    defs, instance, ab_sim, warehouse
):
    truth = ab_sim.data.expected_mismatches()
    planned = {tid for t in truth.values() for tid in t.outdated_tagging_ids}
    before = set(ab_sim.data.taggings)

    first = run_job(defs, instance, dry_run=False)
    assert first.success
    assert "membership/dry_run" not in instance.get_run_by_id(first.run_id).tags
    assert before - set(ab_sim.data.taggings) == planned  # exactly those, nothing else
    outcomes = first.output_for_node("outdated_tagging_deletions")
    assert set(outcomes["action"]) == {"deleted"} and len(outcomes) == len(planned)

    second = run_job(defs, instance, dry_run=False)
    assert second.success
    assert len(second.output_for_node("outdated_tagging_deletions")) == 0
    assert set(ab_sim.data.taggings) == before - planned
    # People who only had a stale tag now simply lack it: still reported, nothing to delete.
    rows = read_report(second)
    assert all("outdated" not in r["mismatch_reasons"] for r in rows)


def test_deletions_over_the_cap_delete_nothing_and_fail_the_run(defs, instance, ab_sim, warehouse):
    before = set(ab_sim.data.taggings)
    result = run_job(defs, instance, dry_run=False, max_deletions=5)
    assert not result.success
    assert set(ab_sim.data.taggings) == before
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "more than max_deletions=5" in str(failure.event_specific_data.error)
    audit = warehouse.query("select distinct action from {dataset}.ab_tagging_deletions")
    assert audit["action"].tolist() == ["blocked_cap"]


def test_a_tagging_already_gone_counts_as_gone_not_failed(defs, instance, ab_sim, warehouse):
    truth = ab_sim.data.expected_mismatches()
    victim = next(tid for t in truth.values() for tid in t.outdated_tagging_ids)
    # Someone removes the tag by hand between our scan and our cleanup.
    ab_sim.faults.add(path_pattern=f"/taggings/{victim}", method="DELETE", status=404, times=1)
    result = run_job(defs, instance, dry_run=False)
    assert result.success
    outcomes = result.output_for_node("outdated_tagging_deletions").set_index("tagging_id")
    assert outcomes.loc[victim, "action"] == "already_gone"


def test_implausible_mismatch_rate_blocks_report_email_and_cleanup(defs, instance, ab_sim, outbox):
    before = set(ab_sim.data.taggings)
    result = run_job(
        defs,
        instance,
        dry_run=False,
        membership_mismatches={"config": {"max_mismatch_fraction": 0.01}},
    )
    assert not result.success
    assert set(ab_sim.data.taggings) == before
    assert outbox_messages(outbox) == []
    executed = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
    assert "outdated_tagging_deletions" not in executed and "mismatch_report_email" not in executed


def test_incremental_run_starts_from_the_last_successful_run(defs, instance, ab_sim):
    first = run_job(defs, instance, mode="incremental")
    assert first.success
    scan = first.output_for_node("action_builder_campaign", "ab_scan")
    # No earlier run: a day back.
    since = datetime.fromisoformat(scan["since"])
    assert timedelta(hours=23) < datetime.now(UTC) - since < timedelta(hours=25)

    touched = ab_sim.data.person_ids()[0]
    ab_sim.touch(touched)
    second = run_job(defs, instance, mode="incremental")
    scan2 = second.output_for_node("action_builder_campaign", "ab_scan")
    since2 = datetime.fromisoformat(scan2["since"])
    # From when the last successful scan itself started (recorded on ab_scan), minus the overlap.
    scan_start = datetime.fromisoformat(scan["scan_started_at"])
    run_start = datetime.fromtimestamp(instance.get_run_record_by_id(first.run_id).start_time, UTC)
    assert run_start <= scan_start < run_start + timedelta(seconds=30)
    assert since2 == scan_start - timedelta(minutes=60)
    people = second.output_for_node("action_builder_campaign", "ab_people")
    assert touched in set(people["person_id"])
    assert set(people["person_id"]) == ab_sim.data.modified_since(since2)


def test_explicit_since_overrides_the_lookup(defs, instance, ab_sim):
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    result = run_job(defs, instance, mode="incremental", since=since)
    people = result.output_for_node("action_builder_campaign", "ab_people")
    expected = ab_sim.data.modified_since(datetime.fromisoformat(since))
    assert set(people.loc[people["entity_type"].str.lower() == "person", "person_id"]) == expected


def test_no_recipients_means_no_email_but_a_clear_warning(local_resources, instance, outbox, ab_sim):
    from membership_assets.definitions import build_definitions
    from membership_assets.notify.resources import Recipients

    defs = build_definitions({**local_resources, "recipients": Recipients(tag_report="")})
    result = run_job(defs, instance)
    assert result.success
    assert outbox_messages(outbox) == []
    [mat] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("mismatch_report_email")
    ]
    assert mat.materialization.metadata["sent"].value is False


def test_quarantined_people_are_flagged_by_the_asset_check(defs, instance, ab_sim):
    victim = ab_sim.data.person_ids()[5]
    ab_sim.faults.add(path_pattern=f"/people/{victim}/connections", status=500, times=None)
    result = run_job(defs, instance, connections="per_person")
    assert result.success
    [check] = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.asset_check_evaluation_data.check_name == "no_quarantined_people"
    ]
    assert not check.passed and check.metadata["quarantined"].value == 1


def test_campaign_is_discovered_when_not_configured(local_resources, instance, ab_sim, tmp_path):
    from membership_assets.definitions import build_definitions

    res = {**local_resources, "action_builder": ab_resource_for(ab_sim, tmp_path, campaign_id="")}
    assert run_job(build_definitions(res), instance).success


def test_schedules_request_the_right_mode_and_stay_dry_unless_opted_in(defs, monkeypatch):
    from membership_assets.action_builder.schedules import (
        action_builder_daily_incremental,
        action_builder_monthly_full,
    )

    ctx = dg.build_schedule_context()
    daily = action_builder_daily_incremental(ctx)
    assert daily.run_config["ops"]["action_builder_campaign"]["config"]["mode"] == "incremental"
    assert daily.run_config["ops"]["outdated_tagging_deletions"]["config"]["dry_run"] is True
    assert daily.tags["membership/dry_run"] == "true"  # the runs list tells a dry cleanup apart
    monkeypatch.setenv("ACTION_BUILDER_APPLY_DELETIONS", "true")
    monthly = action_builder_monthly_full(ctx)
    assert monthly.run_config["ops"]["action_builder_campaign"]["config"]["mode"] == "full"
    assert monthly.run_config["ops"]["outdated_tagging_deletions"]["config"]["dry_run"] is False
    assert "membership/dry_run" not in monthly.tags
    assert action_builder_monthly_full.cron_schedule == "0 3 1 * *"
    # The run config the schedules produce is valid for the job.
    job = defs.resolve_job_def(JOB)
    assert job.run_config_schema.config_type is not None
    for req in (daily, monthly):
        assert dg.validate_run_config(job, req.run_config)


def test_failure_sensor_emails_the_admins(defs, instance, ab_sim, outbox, alert_admins):
    ab_sim.faults.add(path_pattern="/people", status=401, times=None)
    result = run_job(defs, instance)
    assert not result.success
    alert_admins(result, defs)
    [msg] = outbox_messages(outbox)
    assert msg["To"] == "admins@example.org"
    assert "action_builder_tag_sync failed" in msg["Subject"]
    assert result.run_id in msg.get_content()
    assert "action_builder_campaign: " in msg.get_content() and "credentials rejected" in msg.get_content()
