"""State that reads right in the UI: full and incremental scans as separate metadata series, the
campaign-wide mismatch count after any scan, and a column schema on every table asset."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from membership_assets.action_builder.campaign_state import (
    load_mismatches,
    merge_scan,
    save_mismatches,
)

from .test_ab_job import run_job

T0, T1, T2 = "2026-12-01T03:00:00+00:00", "2026-12-02T06:00:00+00:00", "2026-12-03T06:00:00+00:00"


# -- campaign-wide mismatches, pure ---------------------------------------------------------------


def test_a_full_scan_replaces_the_campaign_and_an_incremental_one_updates_only_whom_it_reread():
    full = merge_scan(
        None,
        mode="full",
        scan_started_at=T0,
        reread=["a", "b", "c", "d"],
        found={"a": ("U1", False), "b": ("U2", True)},
    )
    assert (full.known, full.total, full.active) == (True, 2, 1)
    # b was fixed, c broke, a was not re-read (keeps its mismatch), d re-read and still fine.
    daily = merge_scan(
        full, mode="incremental", scan_started_at=T1, reread=["b", "c", "d"], found={"c": ("U1", False)}
    )
    assert dict(daily.people) == {"a": ("U1", False), "c": ("U1", False)}
    assert daily.active_by_unit() == {"U1": 2}
    assert (daily.full_scan_started_at, daily.incremental_scans_since_full) == (T0, 1)
    # An old run re-executed late does not roll the campaign back.
    assert merge_scan(daily, mode="incremental", scan_started_at=T0, reread=["a"], found={}) is daily
    again = merge_scan(daily, mode="full", scan_started_at=T2, reread=["a"], found={})
    assert again.total == 0 and again.incremental_scans_since_full == 0


def test_before_any_full_scan_the_campaign_count_is_unknown_not_guessed():
    daily = merge_scan(None, mode="incremental", scan_started_at=T1, reread=["a"], found={"a": (None, False)})
    assert not daily.known and daily.people == {"a": ("", False)}


def test_the_state_lives_in_the_instance_per_campaign(instance):
    state = merge_scan(None, mode="full", scan_started_at=T0, reread=["a"], found={"a": ("U1", False)})
    save_mismatches(instance, "camp-1", state)
    assert load_mismatches(instance, "camp-1") == state
    assert load_mismatches(instance, "camp-2") is None


# -- in runs ----------------------------------------------------------------------------------------


def _metadata(result, key: str) -> dict:
    [mat] = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(key)
    ]
    return {k: v.value for k, v in mat.metadata.items()}


def _tag_id(sim, field: str, value: str) -> str:
    return next(t["id"] for t in sim.data.tags.values() if t["field"] == field and t["name"] == value)


def test_after_an_incremental_scan_the_campaign_wide_count_stays_visible(defs, instance, ab_sim):
    truth = ab_sim.data.expected_mismatches()
    full = run_job(defs, instance, mode="full")
    assert full.success
    meta = _metadata(full, "membership_mismatches")
    assert meta["campaign_mismatches"] == meta["full_scan_mismatches"] == len(truth)
    assert not any(k.startswith("incremental_scan_") for k in meta)
    assert "dagster/row_count" not in meta  # a row count would mix both kinds of scan again

    # Fix one member by hand (add the missing unit tag) and break a consistent one.
    fixed = next(p for p, t in truth.items() if t.reasons == ["unit_missing"] and not t.inactive)
    ab_sim.add_tagging("person", fixed, _tag_id(ab_sim, "Bargaining Unit", truth[fixed].unit_name), "fix-1")
    broken = next(p for p, s in ab_sim.data.scenario_of.items() if s == "consistent")
    own_unit = next(t for t in ab_sim.taggings_of("person", broken) if t["tag_id"] in _unit_tags(ab_sim))
    other = next(tid for tid in _unit_tags(ab_sim) if tid != own_unit["tag_id"])
    ab_sim.add_tagging("person", broken, other, "break-1")
    ab_sim.touch(fixed)
    ab_sim.touch(broken)

    daily = run_job(defs, instance, mode="incremental")
    assert daily.success
    meta = _metadata(daily, "membership_mismatches")
    found = daily.output_for_node("membership_mismatches", "membership_mismatches")
    assert broken in set(found["person_id"]) and fixed not in set(found["person_id"])
    assert meta["incremental_scan_mismatches"] == len(found) < len(truth)
    assert meta["campaign_mismatches"] == len(truth)  # one fixed, one broken
    assert meta["campaign_active_mismatches"] == sum(1 for t in truth.values() if not t.inactive)
    assert meta["campaign_mismatches_basis"].endswith("+ 1 incremental")
    assert not any(k.startswith("full_scan_") for k in meta)
    state = load_mismatches(instance, ab_sim.data.campaign_id)
    assert set(state.people) == (set(truth) - {fixed}) | {broken}


def _unit_tags(sim) -> set[str]:
    return {t["id"] for t in sim.data.tags.values() if t["field"] == "Bargaining Unit"}


def test_scan_numbers_are_recorded_per_scan_mode(defs, instance, ab_sim):
    full = run_job(defs, instance, mode="full")
    daily = run_job(defs, instance, mode="incremental")
    for result, mode, other in ((full, "full", "incremental"), (daily, "incremental", "full")):
        for key in ("ab_people", "ab_scan", "ab_taggings", "mismatch_report", "planned_tag_deletions"):
            meta = _metadata(result, key)
            assert meta["mode"] == mode
            assert any(k.startswith(f"{mode}_scan_") for k in meta), key
            assert not any(k.startswith(f"{other}_scan_") for k in meta), key
    assert _metadata(full, "ab_scan")["full_scan_people"] == len(ab_sim.data.person_ids())
    # The freshness check and the incremental window still find what they read.
    assert _metadata(full, "ab_scan")["scan_started_at"]


# -- column schemas -----------------------------------------------------------------------------------

NOT_TABLES = {"ab_scan", "mismatch_report_email"}  # a summary dict; an email


def test_every_action_builder_and_audit_asset_with_a_table_has_a_column_schema(defs):
    groups = {"action_builder", "audit_history"}
    specs = [s for s in defs.resolve_all_asset_specs() if s.group_name in groups]
    assert len(specs) > 10
    missing = [
        s.key.to_user_string()
        for s in specs
        if s.key.path[-1] not in NOT_TABLES and "dagster/column_schema" not in s.metadata
    ]
    assert missing == []


def test_column_schemas_match_the_tables_a_run_produces(defs, instance, ab_sim):
    result = run_job(defs, instance)
    assert result.success
    specs = {s.key: s for s in defs.resolve_all_asset_specs()}
    outputs = {
        "ab_people": ("action_builder_campaign", "ab_people"),
        "ab_connections": ("action_builder_campaign", "ab_connections"),
        "ab_units": ("action_builder_campaign", "ab_units"),
        "ab_taggings": ("action_builder_campaign", "ab_taggings"),
        "membership_mismatches": ("membership_mismatches", "membership_mismatches"),
        "planned_tag_deletions": ("membership_mismatches", "planned_tag_deletions"),
        "outdated_tagging_deletions": ("outdated_tagging_deletions", "result"),
        "planned_tag_repairs": ("planned_tag_repairs", "result"),
    }
    for key, (node, output) in outputs.items():
        frame = result.output_for_node(node, output)
        schema = specs[dg.AssetKey(key)].metadata["dagster/column_schema"]
        assert [c.name for c in schema.columns] == list(frame.columns), key
        assert all(c.description for c in schema.columns), key
    csv = pd.read_csv(result.output_for_node("mismatch_report"), dtype=str)
    schema = specs[dg.AssetKey("mismatch_report")].metadata["dagster/column_schema"]
    assert [c.name for c in schema.columns] == list(csv.columns)
    described = {c.name: c.description for c in schema.columns}
    assert "unit connection" in described["correct_unit"] and "now" in described["tagged_unit"]
    repairs = pd.read_csv(result.output_for_node("tag_repair_report")["path"], dtype=str)
    schema = specs[dg.AssetKey("tag_repair_report")].metadata["dagster/column_schema"]
    assert [c.name for c in schema.columns] == list(repairs.columns)


def test_implausible_findings_do_not_become_the_campaign_count(defs, instance, ab_sim):
    assert run_job(defs, instance, mode="full").success
    before = load_mismatches(instance, ab_sim.data.campaign_id)
    blocked = run_job(
        defs, instance, mode="full", membership_mismatches={"config": {"max_mismatch_fraction": 0.01}}
    )
    assert not blocked.success
    assert load_mismatches(instance, ab_sim.data.campaign_id) == before
    assert _metadata(blocked, "membership_mismatches")["campaign_mismatches"] == before.total
