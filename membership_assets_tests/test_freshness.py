"""Freshness alerts: a sync that silently stopped running reaches the admins by email."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from membership_assets.notify.freshness import (
    AB_SCAN,
    FULL_SCAN_MAX_AGE,
    MEMBER_ELIGIBILITY,
    MEMBER_ELIGIBILITY_MAX_AGE,
    staleness,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_staleness_is_judged_against_the_limit():
    fresh = NOW - MEMBER_ELIGIBILITY_MAX_AGE + timedelta(minutes=1)
    stale = NOW - MEMBER_ELIGIBILITY_MAX_AGE - timedelta(minutes=1)
    assert staleness("sync", fresh, NOW, MEMBER_ELIGIBILITY_MAX_AGE) is None
    assert staleness("sync", stale, NOW, MEMBER_ELIGIBILITY_MAX_AGE) == (
        "sync: last at 2026-11-23 09:59 UTC, 2.0 hours ago (limit 2.0 hours)"
    )
    assert staleness("scan", None, NOW, FULL_SCAN_MAX_AGE) == "scan: none in the last 35.0 days"


def _materialize(instance: dg.DagsterInstance, key: dg.AssetKey, **metadata) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, metadata=metadata))


def _email_bodies(outbox) -> str:
    return "\n".join(p.read_text() for p in sorted(outbox.glob("*.eml")))


def test_nothing_recent_fails_the_check_run_and_emails_the_admins(defs, instance, alert_admins, outbox):
    result = defs.resolve_job_def("freshness_checks").execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert not result.success
    alert_admins(result, defs)
    body = _email_bodies(outbox)
    assert "freshness_checks failed" in body
    assert "updated_within_2_hours: member_eligibility update: none in the last 2.0 hours" in body
    assert "full_scan_within_35_days: full Action Builder scan: none in the last 35.0 days" in body


def test_an_incremental_scan_is_not_a_full_scan(defs, instance):
    _materialize(instance, MEMBER_ELIGIBILITY)
    _materialize(instance, AB_SCAN, mode="incremental")
    result = defs.resolve_job_def("freshness_checks").execute_in_process(
        instance=instance, raise_on_error=False
    )
    evaluations = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }
    assert evaluations == {"updated_within_2_hours": True, "full_scan_within_35_days": False}
    assert not result.success


def test_a_recent_sync_and_full_scan_pass(defs, instance, outbox):
    _materialize(instance, AB_SCAN, mode="full")
    _materialize(instance, AB_SCAN, mode="incremental")  # a later incremental scan hides nothing
    _materialize(instance, MEMBER_ELIGIBILITY)
    result = defs.resolve_job_def("freshness_checks").execute_in_process(instance=instance)
    assert result.success
    assert not list(outbox.glob("*.eml"))


def test_only_the_freshness_job_runs_the_freshness_checks(defs):
    """Inside a sync's own run they would judge the run under way (and block its downstream)."""
    for job in ("registry_sync", "action_builder_tag_sync"):
        nodes = defs.resolve_job_def(job).graph.node_names()
        assert not [n for n in nodes if n.endswith(("_updated_within_2_hours", "_full_scan_within_35_days"))]
    assert len(defs.resolve_job_def("freshness_checks").graph.node_names()) == 2


def test_outside_their_own_job_stale_results_warn_instead_of_blocking(defs, instance):
    """Materializing from the asset graph runs the checks of the selected assets too: a late
    monthly full scan must not block an incremental scan's report and cleanup."""
    from membership_assets.notify.freshness import ab_full_scan_recent

    assets = dg.Definitions(
        asset_checks=[ab_full_scan_recent],
        assets=[dg.AssetSpec(AB_SCAN)],
        jobs=[dg.define_asset_job("graph_launch", selection=dg.AssetSelection.checks(ab_full_scan_recent))],
    )
    result = assets.resolve_job_def("graph_launch").execute_in_process(instance=instance)
    [evaluation] = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert result.success
