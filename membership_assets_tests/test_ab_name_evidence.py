"""The scan's configured names are checked by evidence, not by one verification endpoint's shape.

The simulator serves the connection type catalog in each shape the documentation allows, in
shapes it does not, and as a 404; the scan must judge the campaign exactly in every case, at no
extra request, say which evidence confirmed the names, and refuse only when evidence contradicts.
"""

from __future__ import annotations

import pytest

from membership_assets.action_builder.evidence import (
    NameCheck,
    connection_type_names,
    entity_type_names,
    read_catalog,
)
from membership_assets.action_builder.rules import FieldNames
from membership_assets.action_builder.scan import CampaignScanner, CatalogMismatch, ScanAborted
from membership_assets.simulators.action_builder import ActionBuilderSimulator
from membership_assets.simulators.action_builder_seed import SeedConfig, generate_campaign

from .test_ab_assumptions import exact
from .test_ab_scan import connect

CONNECTION_TYPES = r"/connection_types"
ENTITY_TYPES = r"/entity_types"


def reshape(entry_of):
    """A fault that rewrites every catalog entry (``entry_of(entry) -> new entry``)."""

    def mutate(body):
        for key, entries in (body.get("_embedded") or {}).items():
            body["_embedded"][key] = [entry_of(e) for e in entries]
        return body

    return mutate


def types_as_list(entry):
    parts = [c["types"] for c in entry["connection"]]
    return {k: v for k, v in entry.items() if k not in ("name", "connection")} | {
        "connection": [{"types": parts}]
    }


def documented_without_name(entry):
    return {k: v for k, v in entry.items() if k != "name"}


def list_with_name(entry):
    return types_as_list(entry) | {"name": entry["name"]}


def unknown_shape(entry):
    return {"identifiers": entry["identifiers"], "kinds": "People/Units"}


def other_embedded_key(body):
    body["_embedded"] = {"connection_types": body.get("_embedded", {}).get("action_builder:connection_types")}
    return body


@pytest.fixture(scope="module")
def baseline(ab_campaign_module):
    """Requests and evidence of a scan against the documented catalog shape."""
    with ActionBuilderSimulator(ab_campaign_module, rate_limit=None) as sim:
        snap = CampaignScanner(connect(sim)).scan()
        assert exact(sim, snap)
        return snap


@pytest.fixture(scope="module")
def ab_campaign_module():
    return generate_campaign(SeedConfig(people=300, seed=11))


def test_the_documented_shape_confirms_both_names_from_the_catalogs(baseline):
    assert baseline.name_evidence == [
        "connection type 'People + Units' confirmed by the connection_types catalog",
        "unit entity type 'Unit' confirmed by the entity_types catalog",
    ]
    assert baseline.notes == []


@pytest.mark.parametrize("shape", [types_as_list, documented_without_name, list_with_name])
def test_every_documented_shape_of_connection_types_confirms_the_name(ab_campaign_module, baseline, shape):
    with ActionBuilderSimulator(ab_campaign_module, rate_limit=None) as sim:
        sim.faults.add(path_pattern=CONNECTION_TYPES, mutate=reshape(shape), times=None)
        snap = CampaignScanner(connect(sim)).scan()
        assert exact(sim, snap) and snap.notes == []
        assert snap.name_evidence == baseline.name_evidence
        assert snap.requests["requests"] == baseline.requests["requests"]


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 404, "body": {"error": "Not found"}},
        {"mutate": reshape(unknown_shape)},
        {"mutate": other_embedded_key},
        {"mutate": lambda body: {"total_pages": 0, "page": 1, "per_page": 25}},
    ],
    ids=["404", "unknown-entry-shape", "unknown-embedded-key", "empty"],
)
def test_a_connection_type_catalog_without_evidence_is_confirmed_by_the_scans_own_reads(
    ab_campaign_module, baseline, fault
):
    with ActionBuilderSimulator(ab_campaign_module, rate_limit=None) as sim:
        sim.faults.add(path_pattern=CONNECTION_TYPES, times=None, **fault)
        snap = CampaignScanner(connect(sim)).scan()
        assert exact(sim, snap)
        assert len(snap.judged_person_ids) == len(baseline.judged_person_ids)
        # Missing evidence costs nothing: no retries, no extra reads.
        assert snap.requests["requests"] == baseline.requests["requests"]
        assert snap.requests["by_kind"]["connection_types"] == 1
        [evidence, unit] = snap.name_evidence
        assert evidence.startswith(
            "connection type 'People + Units' confirmed by the unit connection listings"
        )
        assert unit == baseline.name_evidence[1]
        [note] = snap.notes
        assert note.startswith("connection_types gave no evidence") and "confirmed by" in note


def test_both_catalogs_missing_on_an_incremental_scan_confirm_from_peoples_own_connections(
    ab_campaign_module,
):
    from datetime import UTC, datetime, timedelta

    with ActionBuilderSimulator(ab_campaign_module, rate_limit=None) as sim:
        since = datetime.now(UTC) - timedelta(minutes=5)
        touched = sim.data.person_ids()[:40]
        for pid in touched:
            sim.touch(pid)
        for path in (CONNECTION_TYPES, ENTITY_TYPES):
            sim.faults.add(path_pattern=path, status=404, times=None)
        snap = CampaignScanner(connect(sim)).scan(since=since)
        assert snap.connections_strategy == "per_person" and snap.judged_person_ids
        assert snap.name_evidence[0].startswith(
            "connection type 'People + Units' confirmed by people's own connections"
        )
        assert snap.name_evidence[1].startswith("unit entity type 'Unit' not confirmed")
        assert len(snap.notes) == 1  # the unit type does not matter to an incremental scan


def test_entity_types_404_is_confirmed_by_the_people_listing(ab_campaign_module, baseline):
    with ActionBuilderSimulator(ab_campaign_module, rate_limit=None) as sim:
        sim.faults.add(path_pattern=ENTITY_TYPES, status=404, times=None)
        snap = CampaignScanner(connect(sim)).scan()
        assert exact(sim, snap) and snap.connections_strategy == "per_unit"
        assert snap.name_evidence[1].startswith("unit entity type 'Unit' confirmed by the people listing")
        assert snap.requests["requests"] == baseline.requests["requests"]


def test_contradicting_connections_refuse_naming_what_the_campaign_has():
    data = generate_campaign(SeedConfig(people=120, units=5, seed=5))
    for c in data.connections.values():
        if c["type"] == "People + Units":
            c["type"] = "people + units"
    with ActionBuilderSimulator(data, rate_limit=None) as sim:
        sim.faults.add(path_pattern=CONNECTION_TYPES, status=404, times=None)
        with pytest.raises(CatalogMismatch) as err:
            CampaignScanner(connect(sim)).scan()
        message = str(err.value)
        assert "connection type 'People + Units' not found" in message
        assert "'people + units'" in message and "seen in the unit connection listings" in message
        assert "ACTION_BUILDER_CONNECTION_TYPE" in message
        # Configured as the campaign spells it, the same 404 does not stop the scan.
        names = FieldNames(connection_type="people + units")
        snap = CampaignScanner(connect(sim), names=names).scan()
        assert exact(sim, snap, names)


def test_a_unit_entity_type_contradicted_by_the_listing_refuses_before_reading_connections(ab_sim):
    ab_sim.faults.add(path_pattern=ENTITY_TYPES, status=404, times=None)
    names = FieldNames(unit_entity_type="Bargaining Unit")
    with pytest.raises(
        CatalogMismatch, match=r"unit entity type 'Bargaining Unit' not found.*'Unit'.*people listing"
    ):
        CampaignScanner(connect(ab_sim), names=names).scan()
    assert "connections" not in ab_sim.requests.by_route


def test_a_scan_that_judged_nobody_still_fails_when_the_catalogs_are_missing(ab_sim):
    def no_connections(body):
        body.pop("_embedded", None)
        body["total_pages"] = 0
        return body

    for path in (CONNECTION_TYPES, ENTITY_TYPES):
        ab_sim.faults.add(path_pattern=path, status=404, times=None)
    ab_sim.faults.add(path_pattern=r"/people/[^/]+/connections", mutate=no_connections, times=None)
    with pytest.raises(ScanAborted, match="judged none"):
        CampaignScanner(connect(ab_sim)).scan(connections="per_person")


def test_auth_failures_on_a_catalog_still_fail_the_scan(ab_sim):
    from membership_assets.connectors.errors import AuthError

    ab_sim.faults.add(path_pattern=CONNECTION_TYPES, status=401, times=None)
    with pytest.raises(AuthError):
        CampaignScanner(connect(ab_sim)).scan()


@pytest.mark.parametrize(
    "entry, names",
    [
        ({"connection": [{"types": "People"}, {"types": "Units"}]}, {"People + Units", "Units + People"}),
        ({"connection": [{"types": ["People", "Units"]}]}, {"People + Units", "Units + People"}),
        ({"connection": {"types": ["People", "Units"]}}, {"People + Units", "Units + People"}),
        (
            {"name": "Members", "connection": [{"types": ["People", "Units"]}]},
            {"Members", "People + Units", "Units + People"},
        ),
        ({"name": "Members"}, {"Members"}),
        ({"connection": [{"types": "People"}]}, None),
        ({"connection": [{"types": 3}]}, None),
        ({"connection": "People + Units"}, None),
        ("People + Units", None),
    ],
)
def test_connection_type_names_read_every_documented_shape(entry, names):
    assert connection_type_names(entry) == names


def test_a_catalog_with_one_unknown_entry_cannot_contradict():
    catalog = read_catalog([{"name": "People + Worksites"}, {"kinds": "?"}], connection_type_names)
    check = NameCheck("connection type", "People + Units", "ACTION_BUILDER_CONNECTION_TYPE")
    assert check.against_catalog(catalog, "connection_types") is None and check.confirmed_by is None
    complete = read_catalog([{"name": "People + Worksites"}], connection_type_names)
    assert "'People + Worksites'" in check.against_catalog(complete, "connection_types")
    assert entity_type_names({"singular_nane": "Unit", "plural_name": "Units"}) == {"Unit", "Units"}


def singular_types(entry):
    """A catalog naming the entity types in the singular: its "A + B" is not the label used."""
    singular = {"People": "Person", "Units": "Unit"}
    return {"identifiers": entry["identifiers"]} | {
        "connection": [{"types": singular.get(c["types"], c["types"])} for c in entry["connection"]]
    }


def test_a_catalog_whose_inferred_names_disagree_defers_to_the_connections_read(ab_campaign_module, baseline):
    with ActionBuilderSimulator(ab_campaign_module, rate_limit=None) as sim:
        sim.faults.add(path_pattern=CONNECTION_TYPES, mutate=reshape(singular_types), times=None)
        snap = CampaignScanner(connect(sim)).scan()
        assert exact(sim, snap)
        assert snap.requests["requests"] == baseline.requests["requests"]
        [note] = snap.notes
        assert note.startswith("the connection_types catalog lists only 'Person + Unit'")
        assert "confirmed by the unit connection listings" in note


def test_the_preflight_accepts_a_disagreeing_catalog_when_the_sample_confirms(ab_sim, tmp_path):
    from membership_assets.preflight.action_builder import check_action_builder

    from .conftest import ab_resource_for

    ab_sim.faults.add(path_pattern=CONNECTION_TYPES, mutate=reshape(singular_types), times=None)
    checks = check_action_builder(ab_resource_for(ab_sim, tmp_path))
    [conn] = [c for c in checks if c.name == "connection type"]
    assert conn.status == "ok" and "the sample's own connections" in conn.seen, conn
