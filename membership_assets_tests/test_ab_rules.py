"""The mismatch rules as pure functions: hand-made records, no HTTP, no Dagster."""

from __future__ import annotations

from membership_assets.action_builder.records import Connection, Entity, Tagging, Unit
from membership_assets.action_builder.rules import (
    REPORT_COLUMNS,
    FieldNames,
    evaluate,
    plan_deletions,
    report_rows,
)

UNIT, TYPE, STATUS = "Bargaining Unit", "Membership Type", "Membership Status"
UNITS = {"u1": Unit("u1", "Local 1 Newsroom"), "u2": Unit("u2", "Local 2 Sports")}
_n = iter(range(10_000))


def person(pid="p", entity_type="Person"):
    return Entity(pid, entity_type, "Ana", "Diaz", "2026-01-01T00:00:00Z", f"https://x/{pid}")


def conn(cid, pid="p", unit="u1", inactive=False, position=0, ctype="People + Units"):
    return Connection(cid, pid, unit, ctype, inactive, position)


def tag(item_id, field, value, item_type="person", tagging_id=None):
    return Tagging(tagging_id or f"t{next(_n)}", "tag", item_type, item_id, "Membership", field, value)


def judge(people, connections, taggings, names=FieldNames()):
    return evaluate(people, connections, UNITS, taggings, names)


def test_consistent_person_is_not_a_mismatch():
    result = judge(
        [person()],
        [conn("c1")],
        [tag("c1", TYPE, "Full", "connection"), tag("p", UNIT, "Local 1 Newsroom"), tag("p", TYPE, "Full")],
    )
    assert result.mismatches == [] and result.people_evaluated == 1


def test_truth_is_the_first_active_unit_connection_not_the_first_one():
    result = judge(
        [person()],
        [conn("old", unit="u2", inactive=True, position=0), conn("new", unit="u1", position=1)],
        [
            tag("old", TYPE, "Probationary", "connection"),
            tag("new", TYPE, "Full", "connection"),
            tag("p", UNIT, "Local 2 Sports", tagging_id="stale"),
            tag("p", TYPE, "Full"),
        ],
    )
    [m] = result.mismatches
    assert m.reasons == ("unit_outdated",) and m.unit_name == "Local 1 Newsroom"
    assert m.membership_type == "Full" and not m.inactive
    assert [t.tagging_id for t in m.outdated_taggings] == ["stale"]


def test_a_person_active_in_two_units_is_not_judged():
    result = judge(
        [person()],
        [conn("c1", unit="u1", position=0), conn("c2", unit="u2", position=1)],
        [tag("p", UNIT, "Local 2 Sports"), tag("p", UNIT, "Local 1 Newsroom")],
    )
    assert result.mismatches == [] and result.several_active_units == ["p"]
    assert result.people_evaluated == 0


def test_only_the_stale_duplicate_is_outdated():
    result = judge(
        [person()],
        [conn("c1")],
        [
            tag("p", UNIT, "Local 1 Newsroom", tagging_id="good"),
            tag("p", UNIT, "Local 2 Sports", tagging_id="bad"),
        ],
    )
    [m] = result.mismatches
    assert [t.tagging_id for t in m.outdated_taggings] == ["bad"]
    assert [d.tagging_id for d in plan_deletions(result.mismatches)] == ["bad"]


def test_missing_tags_are_reported_with_nothing_to_delete():
    result = judge([person()], [conn("c1")], [tag("c1", TYPE, "Full", "connection")])
    [m] = result.mismatches
    assert m.reasons == ("unit_missing", "type_missing") and m.outdated_taggings == ()
    assert plan_deletions(result.mismatches) == []


def test_status_is_compared_only_where_the_connection_has_one():
    no_status = judge(
        [person()], [conn("c1")], [tag("p", UNIT, "Local 1 Newsroom"), tag("p", STATUS, "Inactive")]
    )
    assert no_status.mismatches == []
    with_status = judge(
        [person()],
        [conn("c1")],
        [
            tag("c1", STATUS, "Active", "connection"),
            tag("p", UNIT, "Local 1 Newsroom"),
            tag("p", STATUS, "Inactive", tagging_id="st"),
        ],
    )
    [m] = with_status.mismatches
    assert m.reasons == ("status_outdated",) and m.outdated_taggings[0].tagging_id == "st"


def test_type_is_left_alone_when_the_connection_says_nothing_about_it():
    result = judge([person()], [conn("c1")], [tag("p", UNIT, "Local 1 Newsroom"), tag("p", TYPE, "Retired")])
    assert result.mismatches == []


def test_ambiguous_connection_type_is_not_compared_and_noted():
    result = judge(
        [person()],
        [conn("c1")],
        [
            tag("c1", TYPE, "Full", "connection"),
            tag("c1", TYPE, "Associate", "connection"),
            tag("p", UNIT, "Local 1 Newsroom"),
            tag("p", TYPE, "Retired"),
        ],
    )
    assert result.mismatches == [] and "several" in result.notes[0]


def test_people_without_a_unit_connection_are_never_judged():
    result = judge([person()], [conn("w1", ctype="People + Worksites")], [tag("p", UNIT, "Local 2 Sports")])
    assert result.mismatches == [] and result.without_unit_connection == ["p"]


def test_inactive_member_is_judged_against_their_inactive_connection_but_not_reported():
    result = judge(
        [person()],
        [conn("c1", inactive=True)],
        [
            tag("c1", STATUS, "Inactive", "connection"),
            tag("p", UNIT, "Local 1 Newsroom"),
            tag("p", STATUS, "Active", tagging_id="st"),
        ],
    )
    [m] = result.mismatches
    assert m.inactive and m.reasons == ("status_outdated",)
    assert report_rows(result.mismatches) == []
    assert [d.tagging_id for d in plan_deletions(result.mismatches)] == ["st"]


def test_entity_type_is_compared_case_insensitively_and_units_are_skipped():
    result = judge(
        [person("p", "person"), person("u1", "Unit")], [conn("c1")], [tag("c1", TYPE, "Full", "connection")]
    )
    assert [m.person_id for m in result.mismatches] == ["p"]


def test_unknown_unit_entity_leaves_the_unit_uncompared():
    result = judge([person()], [conn("c1", unit="gone")], [tag("p", UNIT, "Whatever")])
    assert result.mismatches == [] and "unknown" in result.notes[0]


def test_whitespace_differences_are_not_mismatches():
    result = judge([person()], [conn("c1")], [tag("p", UNIT, "  Local 1 Newsroom ")])
    assert result.mismatches == []


def test_custom_field_names_are_honoured():
    names = FieldNames(unit="Local", membership_type="Member Type", connection_type="Member of")
    result = evaluate(
        [person()],
        [conn("c1", ctype="Member of")],
        UNITS,
        [tag("p", "Local", "Local 2 Sports", tagging_id="x"), tag("p", UNIT, "ignored")],
        names,
    )
    [m] = result.mismatches
    assert [t.tagging_id for t in m.outdated_taggings] == ["x"]
    assert plan_deletions(result.mismatches, names)[0].expected_value == "Local 1 Newsroom"


def test_report_rows_have_the_agreed_columns_and_no_internal_ids():
    result = judge(
        [person("a"), person("b")],
        [conn("c1", pid="a"), conn("c2", pid="b", inactive=True)],
        [
            tag("c1", TYPE, "Full", "connection"),
            tag("a", UNIT, "Local 2 Sports", tagging_id="SECRET-ID"),
            tag("b", UNIT, "Local 2 Sports"),
        ],
    )
    rows = report_rows(result.mismatches)
    assert [r["uuid"] for r in rows] == ["a"]
    assert list(rows[0]) == REPORT_COLUMNS
    row = rows[0]
    assert (row["correct_unit"], row["tagged_unit"]) == ("Local 1 Newsroom", "Local 2 Sports")
    assert row["correct_membership_type"] == "Full" and row["tagged_membership_type"] == ""
    assert row["what_to_change"] == (
        "Bargaining Unit: replace 'Local 2 Sports' with 'Local 1 Newsroom'; Membership Type: add 'Full'"
    )
    # The connection says nothing about status: blank, and the reason column says why.
    assert row["correct_membership_status"] == ""
    assert row["blank_correct_value_reason"] == (
        "Membership Status: the unit connection carries no Membership Status tag"
    )
    assert "SECRET-ID" not in str(rows)


def test_every_blank_correct_value_has_its_reason():
    several = judge(
        [person()],
        [conn("c1", unit="gone")],
        [
            tag("c1", TYPE, "Full", "connection"),
            tag("c1", TYPE, "Associate", "connection"),
            tag("c1", STATUS, "Active", "connection"),
            tag("p", STATUS, "Lapsed"),
        ],
    )
    [row] = report_rows(several.mismatches)
    assert row["correct_unit"] == "" and row["correct_membership_type"] == ""
    assert row["blank_correct_value_reason"] == (
        "Bargaining Unit: the connected unit could not be read; "
        "Membership Type: the unit connection carries several values (Associate; Full)"
    )
    assert row["what_to_change"] == "Membership Status: replace 'Lapsed' with 'Active'"


def test_what_to_change_keeps_the_right_tag_when_a_stale_one_sits_next_to_it():
    result = judge(
        [person()],
        [conn("c1")],
        [
            tag("c1", TYPE, "Full", "connection"),
            tag("p", TYPE, "Full"),
            tag("p", UNIT, "Local 1 Newsroom"),
            tag("p", UNIT, "Local 2 Sports"),
        ],
    )
    [row] = report_rows(result.mismatches)
    assert row["tagged_unit"] == "Local 1 Newsroom; Local 2 Sports"
    assert row["what_to_change"] == "Bargaining Unit: remove 'Local 2 Sports' (keep 'Local 1 Newsroom')"


def test_report_lists_the_worst_units_first():
    people = [person(p) for p in ("a", "b", "c")]
    connections = [
        conn("c1", pid="a", unit="u1"),
        conn("c2", pid="b", unit="u2"),
        conn("c3", pid="c", unit="u2"),
    ]
    taggings = [tag(c, TYPE, "Full", "connection") for c in ("c1", "c2", "c3")]
    rows = report_rows(judge(people, connections, taggings).mismatches)
    assert [r["correct_unit"] for r in rows] == ["Local 2 Sports", "Local 2 Sports", "Local 1 Newsroom"]
