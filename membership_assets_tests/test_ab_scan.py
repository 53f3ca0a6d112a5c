"""The scan + rules find exactly the drift the simulator planted (its ground truth)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from membership_assets.action_builder.checkpoint import ScanCheckpoint
from membership_assets.action_builder.client import ActionBuilderClient
from membership_assets.action_builder.rules import FieldNames, evaluate
from membership_assets.action_builder.scan import SAMPLE_SIZE, CampaignScanner, ScanAborted
from membership_assets.connectors.errors import AuthError, ServerError


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


@pytest.mark.parametrize("connections", ["per_person", "per_unit"])
@pytest.mark.parametrize("strategy", ["per_person", "per_tag", "auto"])
def test_full_scan_finds_exactly_the_planted_mismatches(ab_sim, strategy, connections):
    truth = ab_sim.data.expected_mismatches()
    assert len(truth) > 40  # the seed plants every scenario
    snap = CampaignScanner(connect(ab_sim)).scan(strategy=strategy, connections=connections)
    assert snap.quarantined == {} and snap.connections_strategy == connections
    found_vs_truth(snap, truth)
    # Every planted scenario is represented in what was checked.
    scenarios = {ab_sim.data.scenario_of[p] for p in truth}
    assert {
        "unit_transfer",
        "type_changed",
        "stale_duplicate_unit",
        "former_member_stale",
        "former_member_of_two_units",
    } <= scenarios


def snapshot_key(snap):
    taggings = sorted((t.tagging_id, t.tag_id, t.item_id, t.value) for t in snap.taggings)
    conns = sorted((c.connection_id, c.person_id, c.other_id, c.inactive) for c in snap.connections)
    return taggings, conns


def test_every_strategy_reads_the_same_snapshot(ab_sim):
    snaps = {
        (s, c): CampaignScanner(connect(ab_sim)).scan(strategy=s, connections=c)
        for s in ("per_person", "per_tag")
        for c in ("per_person", "per_unit")
    }
    keys = {k: repr(snapshot_key(v)) for k, v in snaps.items()}
    assert len(set(keys.values())) == 1
    assert all(t.tag_id for t in snaps[("per_person", "per_person")].taggings)  # resolved from the catalog
    requests = {k: v.requests["requests"] for k, v in snaps.items()}
    assert requests[("per_tag", "per_unit")] == min(requests.values())
    assert requests[("per_tag", "per_unit")] * 3 < requests[("per_person", "per_person")]


def test_full_scans_read_connections_per_unit_and_order_sensitive_people_per_person(ab_sim):
    snap = CampaignScanner(connect(ab_sim)).scan()
    assert snap.connections_strategy == "per_unit"
    ordered = {p for p, s in ab_sim.data.scenario_of.items() if s == "former_member_of_two_units"}
    assert ordered
    # One listing per order-sensitive person; everyone else came with their units' listings.
    per_unit_pages = snap.requests["by_kind"]["unit_connections_page"]
    # Plus a fixed sample of people read one by one to check the per-unit listings.
    assert len(snap.cross_checked) == SAMPLE_SIZE
    assert ab_sim.requests.by_route["connections"] == len(ordered | set(snap.cross_checked)) + per_unit_pages


def test_an_unreadable_unit_connection_falls_back_to_per_person_reads(ab_sim):
    unit = next(e for e, v in ab_sim.data.entities.items() if v["entity_type"] == "Unit")

    def corrupt(body):
        body["_embedded"]["action_builder:connections"][0]["inactive"] = "maybe"
        return body

    ab_sim.faults.add(path_pattern=f"/people/{unit}/connections", mutate=corrupt, times=None)
    snap = CampaignScanner(connect(ab_sim)).scan()
    assert snap.connections_strategy == "per_person"
    assert len(snap.quarantined) <= 1  # the one person whose own listing carries the bad connection
    found_vs_truth(
        snap, {k: v for k, v in ab_sim.data.expected_mismatches().items() if k not in snap.quarantined}
    )


def test_per_unit_reads_refuse_an_incremental_scan(ab_sim):
    with pytest.raises(ValueError, match="full scan"):
        CampaignScanner(connect(ab_sim)).scan(since=datetime.now(UTC), connections="per_unit")


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
    snap = CampaignScanner(connect(ab_sim)).scan(strategy="per_tag", connections="per_person")
    assert list(snap.quarantined) == [victim]
    result = evaluate(snap.people, snap.connections, snap.units, snap.taggings)
    assert victim not in {m.person_id for m in result.mismatches}


def test_malformed_connection_quarantines_only_that_person(ab_sim):
    victim = next(iter(ab_sim.data.expected_mismatches()))

    def corrupt(body):
        body["_embedded"]["action_builder:connections"][0]["inactive"] = "maybe"
        return body

    ab_sim.faults.add(path_pattern=f"/people/{victim}/connections", mutate=corrupt, times=None)
    snap = CampaignScanner(connect(ab_sim)).scan(connections="per_person")
    assert "inactive is not a boolean" in snap.quarantined[victim]


def test_widespread_failures_abort_the_scan(ab_sim):
    ab_sim.faults.add(path_pattern="/connections", status=502, times=None)
    with pytest.raises(ScanAborted, match="refusing to judge"):
        CampaignScanner(connect(ab_sim, max_attempts=1)).scan(connections="per_person")


def test_a_unit_listing_that_fails_fails_the_scan(ab_sim):
    # A unit's members cannot be quarantined one by one: without the listing nobody is known.
    unit = next(e for e, v in ab_sim.data.entities.items() if v["entity_type"] == "Unit")
    ab_sim.faults.add(path_pattern=f"/people/{unit}/connections", status=502, times=None)
    with pytest.raises(ServerError):
        CampaignScanner(connect(ab_sim, max_attempts=2)).scan()


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
        CampaignScanner(connect(ab_sim), checkpoint=first, workers=4).scan(
            strategy="per_tag", connections="per_person"
        )
    first.close()

    ab_sim.faults.clear()
    ab_sim.requests.reset()
    resumed_cp = ScanCheckpoint(cp_path, "run-1")
    snap = CampaignScanner(connect(ab_sim), checkpoint=resumed_cp, workers=4).scan(
        strategy="per_tag", connections="per_person"
    )
    assert snap.resumed_items >= people // 2 - 4
    # Only the connection listings not fetched before the crash are fetched again.
    assert ab_sim.requests.by_route["connections"] <= people - people // 2 + 4
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
