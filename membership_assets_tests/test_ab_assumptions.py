"""What the scan relies on but the API docs do not confirm is checked against the campaign itself.

Simulator variants stand in for the undocumented behaviours: a unit's connection listing that
labels connections from its own side, or lists nothing; an organization that spells its names
differently from the configuration.
"""

from __future__ import annotations

import pytest

from membership_assets.action_builder.rules import FieldNames, evaluate
from membership_assets.action_builder.scan import CampaignScanner, CatalogMismatch, ScanAborted
from membership_assets.simulators.action_builder import ActionBuilderSimulator
from membership_assets.simulators.action_builder_seed import SeedConfig, generate_campaign

from .test_ab_job import outbox_messages, read_report, run_job
from .test_ab_scan import connect


def exact(sim, snap, names=FieldNames()) -> bool:
    result = evaluate(snap.people, snap.connections, snap.units, snap.taggings, names)
    found = {m.person_id: sorted(t.tagging_id for t in m.outdated_taggings) for m in result.mismatches}
    return found == {pid: row.outdated_tagging_ids for pid, row in sim.data.expected_mismatches().items()}


@pytest.mark.parametrize("variant", ["reversed_label", "empty"])
def test_unit_listings_that_do_not_show_members_fall_back_to_per_person_reads(ab_campaign, variant):
    with ActionBuilderSimulator(ab_campaign, rate_limit=None, unit_side_connections=variant) as sim:
        snap = CampaignScanner(connect(sim)).scan()
        assert snap.connections_strategy == "per_person"
        assert any("disagree with per-person reads" in n for n in snap.notes)
        assert len(snap.judged_person_ids) > 0.9 * len(sim.data.person_ids())
        assert exact(sim, snap)


def test_the_same_listings_as_seen_from_people_keep_per_unit_reads(ab_sim):
    snap = CampaignScanner(connect(ab_sim)).scan()
    assert snap.connections_strategy == "per_unit" and snap.notes == []
    assert exact(ab_sim, snap)


def test_a_connection_type_spelt_differently_fails_naming_what_exists():
    data = generate_campaign(SeedConfig(people=120, units=5, seed=5))
    for c in data.connections.values():
        if c["type"] == "People + Units":
            c["type"] = "people + units"
    with ActionBuilderSimulator(data, rate_limit=None) as sim:
        with pytest.raises(
            CatalogMismatch, match=r"connection type 'People \+ Units' not found.*'people \+ units'"
        ):
            CampaignScanner(connect(sim)).scan()
        # Configured as the organization spells it, the scan works.
        names = FieldNames(connection_type="people + units")
        snap = CampaignScanner(connect(sim), names=names).scan()
        assert snap.connections_strategy == "per_unit" and exact(sim, snap, names)


@pytest.mark.parametrize(
    "names, message",
    [
        (
            FieldNames(unit_entity_type="Bargaining Unit"),
            r"unit entity type 'Bargaining Unit' not found.*'Unit'",
        ),
        (FieldNames(membership_type="Member Type"), r"tag field 'Member Type' not found.*'Membership Type'"),
        (FieldNames(unit="Unit Name"), r"tag field 'Unit Name' not found.*'Bargaining Unit'"),
    ],
)
def test_misconfigured_names_fail_before_reading_people(ab_sim, names, message):
    with pytest.raises(CatalogMismatch, match=message):
        CampaignScanner(connect(ab_sim), names=names).scan()
    assert "people_page" not in ab_sim.requests.by_route


def test_a_scan_that_judged_nobody_does_not_succeed(ab_sim):
    def no_connections(body):
        body.pop("_embedded", None)
        body["total_pages"] = 0
        return body

    ab_sim.faults.add(path_pattern=r"/people/[^/]+/connections", mutate=no_connections, times=None)
    with pytest.raises(ScanAborted, match="judged none"):
        CampaignScanner(connect(ab_sim)).scan(connections="per_person")


def test_a_job_on_mislabelled_unit_listings_reports_exactly_and_says_it_fell_back(
    local_resources, instance, tmp_path, outbox
):
    from membership_assets.definitions import build_definitions

    from .conftest import ab_resource_for

    data = generate_campaign(SeedConfig(people=300, seed=11))
    with ActionBuilderSimulator(data, rate_limit=None, unit_side_connections="reversed_label") as sim:
        defs = build_definitions({**local_resources, "action_builder": ab_resource_for(sim, tmp_path)})
        result = run_job(defs, instance)
        assert result.success
        truth = {pid for pid, t in data.expected_mismatches().items() if not t.inactive}
        assert {r["uuid"] for r in read_report(result)} == truth
        scan = result.output_for_node("action_builder_campaign", "ab_scan")
        assert scan["connections_strategy"] == "per_person" and "disagree" in scan["notes"]
        [msg] = outbox_messages(outbox)
        assert "disagree with per-person reads" in msg.get_body(("plain",)).get_content()
