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


def _split_sections(data, section="Unit Membership"):
    """The same field and value in two sections: people's tags and connections' tags."""
    import uuid

    from membership_assets.simulators.action_builder_seed import STATUS_FIELD, TYPE_FIELD

    twin: dict[str, str] = {}
    for tid, tag in list(data.tags.items()):
        if tag["field"] in (TYPE_FIELD, STATUS_FIELD):
            new = str(uuid.uuid4())
            data.tags[new] = {**tag, "id": new, "section": section}
            data.tag_order.append(new)
            twin[tid] = new
    for t in data.taggings.values():
        if t["item_type"] == "connection" and t["tag_id"] in twin:
            t["tag_id"] = twin[t["tag_id"]]
    return data


def test_taggings_without_a_tag_link_resolve_their_tag_by_section_too(local_resources, instance, tmp_path):
    from membership_assets.definitions import build_definitions

    from .conftest import ab_resource_for

    data = _split_sections(generate_campaign(SeedConfig(people=300, seed=11)))
    truth = data.expected_mismatches()
    planned = {tid for t in truth.values() for tid in t.outdated_tagging_ids}
    fields = {data.tags[data.taggings[tid]["tag_id"]]["field"] for tid in planned}
    assert {"Membership Type", "Membership Status"} & fields, "type/status deletions are planned"
    with ActionBuilderSimulator(data, rate_limit=None) as sim:
        defs = build_definitions({**local_resources, "action_builder": ab_resource_for(sim, tmp_path)})
        ops = {
            "action_builder_campaign": {"config": {"mode": "full", "strategy": "per_person"}},
            "outdated_tagging_deletions": {"config": {"dry_run": False}},
        }
        result = defs.resolve_job_def("action_builder_tag_sync").execute_in_process(
            run_config={"ops": ops}, instance=instance, raise_on_error=False
        )
        assert result.success
        outcomes = result.output_for_node("outdated_tagging_deletions")
        assert set(outcomes["tagging_id"]) == planned and set(outcomes["action"]) == {"deleted"}
        assert not any(sim.tagging_exists(t) for t in planned)


def test_an_ambiguous_tag_is_a_clear_failure_not_a_guess():
    from membership_assets.action_builder.cleanup import execute_deletions
    from membership_assets.action_builder.records import Tagging
    from membership_assets.action_builder.rules import PlannedDeletion
    from membership_assets.action_builder.scan import resolve_tag_id

    catalog = [
        {"tag_id": "a", "section": "Membership", "field": "Membership Type", "name": "Full"},
        {"tag_id": "b", "section": "Unit Membership", "field": "Membership Type", "name": "Full"},
    ]
    with_section = Tagging("t1", None, "person", "p", "Membership", "Membership Type", "Full")
    assert resolve_tag_id(with_section, catalog) == "a"
    without_section = Tagging("t2", None, "person", "p", None, "Membership Type", "Full")
    assert resolve_tag_id(without_section, catalog) is None
    plan = [PlannedDeletion("p", "t2", None, "Membership Type", "Full", "Associate", False)]
    [outcome] = execute_deletions(object(), plan, dry_run=False, max_deletions=10)  # type: ignore[arg-type]
    assert (
        outcome.action == "failed"
        and "no single catalog tag has its section, field and value" in outcome.error
    )
