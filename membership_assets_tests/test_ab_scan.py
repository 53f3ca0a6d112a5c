"""The scan + rules find exactly the drift the simulator planted (its ground truth)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from membership_assets.action_builder.checkpoint import ScanCheckpoint
from membership_assets.action_builder.client import ActionBuilderClient
from membership_assets.action_builder.rules import FieldNames, evaluate
from membership_assets.action_builder.scan import CampaignScanner, ScanAborted
from membership_assets.connectors.errors import AuthError


def connect(sim, **kw) -> ActionBuilderClient:
    kw.setdefault("rate_limit", 5000)
    kw.setdefault("max_attempts", 2)
    kw.setdefault("sleep", lambda s: None)
    return ActionBuilderClient.connect(
        api_token=sim.token, base_url=sim.base_url, campaign_id=sim.data.campaign_id, **kw
    )


def found_vs_truth(snap, truth):
    result = evaluate(snap.people, snap.connections, snap.units, snap.taggings)
    found = {m.person_id: m for m in result.mismatches}
    assert set(found) == set(truth), (
        f"missing {sorted(set(truth) - set(found))[:5]}, extra {sorted(set(found) - set(truth))[:5]}"
    )
    for pid, expected in truth.items():
        m = found[pid]
        assert set(m.reasons) == set(expected.reasons), (pid, expected.scenario)
        assert sorted(t.tagging_id for t in m.outdated_taggings) == expected.outdated_tagging_ids
        assert m.inactive == expected.inactive
        assert (m.unit_name, m.membership_type, m.membership_status) == (
            expected.unit_name,
            expected.membership_type,
            expected.membership_status,
        )
    return result


@pytest.mark.parametrize("strategy", ["per_person", "per_tag", "auto"])
def test_full_scan_finds_exactly_the_planted_mismatches(ab_sim, strategy):
    truth = ab_sim.data.expected_mismatches()
    assert len(truth) > 40  # the seed plants every scenario
    snap = CampaignScanner(connect(ab_sim)).scan(strategy=strategy)
    assert snap.quarantined == {}
    found_vs_truth(snap, truth)
    # Every planted scenario is represented in what was checked.
    scenarios = {ab_sim.data.scenario_of[p] for p in truth}
    assert {"unit_transfer", "type_changed", "stale_duplicate_unit", "former_member_stale"} <= scenarios


def test_strategies_read_the_same_snapshot(ab_sim):
    a = CampaignScanner(connect(ab_sim)).scan(strategy="per_person")
    b = CampaignScanner(connect(ab_sim)).scan(strategy="per_tag")
    key = lambda t: t.tagging_id  # noqa: E731
    assert [(t.tagging_id, t.tag_id, t.item_id, t.value) for t in sorted(a.taggings, key=key)] == [
        (t.tagging_id, t.tag_id, t.item_id, t.value) for t in sorted(b.taggings, key=key)
    ]
    assert all(t.tag_id for t in a.taggings)  # resolved from the tag catalog
    assert b.requests["requests"] < a.requests["requests"]


def test_incremental_scan_reads_only_recently_modified_people(ab_sim):
    since = datetime.now(UTC) - timedelta(days=1)
    truth = ab_sim.data.expected_mismatches(since)
    client = connect(ab_sim)
    snap = CampaignScanner(client).scan(since=since)
    assert {p.person_id for p in snap.people} == ab_sim.data.modified_since(since)
    assert 0 < len(snap.people) < 100
    found_vs_truth(snap, truth)
    costs = snap.strategy_costs
    probed = sum(1 for t in ab_sim.data.tags.values() if t["field"] in FieldNames().tag_fields)
    per_tag_remaining = costs["per_tag_pages"] - probed  # page 1 of each relevant tag was probed
    cheaper = "per_tag" if per_tag_remaining <= costs["per_person_estimate"] else "per_person"
    assert snap.strategy == cheaper


def test_a_handful_of_people_is_read_per_person_without_probing_tags(ab_sim):
    recent = sorted(ab_sim.data.modified_since(datetime.now(UTC) - timedelta(days=1)))[:3]
    later = datetime.now(UTC) + timedelta(seconds=5)
    for pid in recent:
        ab_sim.touch(pid, later)
    snap = CampaignScanner(connect(ab_sim)).scan(since=later - timedelta(seconds=1))
    assert {p.person_id for p in snap.people} == set(recent)
    assert snap.strategy == "per_person" and "per_tag_pages" not in snap.strategy_costs
    assert ab_sim.requests.by_route.get("tag_taggings_page", 0) == 0


def test_unreadable_person_is_quarantined_not_judged(ab_sim):
    victim = next(iter(ab_sim.data.expected_mismatches()))
    ab_sim.faults.add(path_pattern=f"/people/{victim}/connections", status=500, times=None)
    snap = CampaignScanner(connect(ab_sim)).scan(strategy="per_tag")
    assert list(snap.quarantined) == [victim]
    result = evaluate(snap.people, snap.connections, snap.units, snap.taggings)
    assert victim not in {m.person_id for m in result.mismatches}


def test_malformed_connection_quarantines_only_that_person(ab_sim):
    victim = next(iter(ab_sim.data.expected_mismatches()))

    def corrupt(body):
        body["_embedded"]["action_builder:connections"][0]["inactive"] = "maybe"
        return body

    ab_sim.faults.add(path_pattern=f"/people/{victim}/connections", mutate=corrupt, times=None)
    snap = CampaignScanner(connect(ab_sim)).scan()
    assert "inactive is not a boolean" in snap.quarantined[victim]


def test_widespread_failures_abort_the_scan(ab_sim):
    ab_sim.faults.add(path_pattern="/connections", status=502, times=None)
    with pytest.raises(ScanAborted, match="refusing to judge"):
        CampaignScanner(connect(ab_sim, max_attempts=1)).scan()


def test_expired_token_mid_scan_stops_everything(ab_sim):
    ab_sim.faults.add(path_pattern="/taggings", status=401, times=None)
    with pytest.raises(AuthError):
        CampaignScanner(connect(ab_sim)).scan(strategy="per_person")


def test_a_crashed_scan_resumes_from_its_checkpoint(ab_sim, tmp_path):
    truth = ab_sim.data.expected_mismatches()
    cp_path = tmp_path / "cp.sqlite"
    people = len(ab_sim.data.person_ids())
    # Crash: the token "expires" after ~half of the per-person connection reads.
    state = {"n": 0}

    def expire_later(body):
        state["n"] += 1
        return body

    ab_sim.faults.add(path_pattern="/connections", mutate=expire_later, times=people // 2)
    ab_sim.faults.add(path_pattern="/connections", status=401, times=None)
    first = ScanCheckpoint(cp_path, "run-1")
    with pytest.raises(AuthError):
        CampaignScanner(connect(ab_sim), checkpoint=first, workers=4).scan(strategy="per_tag")
    first.close()

    ab_sim.faults.clear()
    ab_sim.requests.reset()
    resumed_cp = ScanCheckpoint(cp_path, "run-1")
    snap = CampaignScanner(connect(ab_sim), checkpoint=resumed_cp, workers=4).scan(strategy="per_tag")
    assert snap.resumed_items >= people // 2 - 4
    assert ab_sim.requests.by_route["connections"] <= people - snap.resumed_items + 4
    assert ab_sim.requests.by_route.get("people_page", 0) == 0  # every page came from the checkpoint
    found_vs_truth(snap, truth)
    resumed_cp.complete()
    assert resumed_cp.count() == 0
    resumed_cp.close()


def test_a_new_scan_key_starts_clean(ab_sim, tmp_path):
    cp = ScanCheckpoint(tmp_path / "cp.sqlite", "run-1")
    CampaignScanner(connect(ab_sim), checkpoint=cp).scan()
    cp.close()
    other = ScanCheckpoint(tmp_path / "cp.sqlite", "run-2")
    snap = CampaignScanner(connect(ab_sim), checkpoint=other).scan()
    assert snap.resumed_items == 0
    other.close()
