"""Validation of registry rows: kennitala rules, quarantine with reasons, protection from removal."""

from __future__ import annotations

import pytest

from membership_assets.registry.client import normalize_row
from membership_assets.registry.validation import kennitala_problem, mask, validate_members
from membership_assets.simulators.django_registry import check_digit, generate_registry, make_kennitala


@pytest.mark.parametrize(
    "raw, normalized, problem",
    [
        ("120174-3399", "1201743399", None),  # python-stdnum's documented examples
        ("1201743399", "1201743399", None),
        (" 120174 3399 ", "1201743399", None),
        ("530575-0299", "5305750299", "kennitala_invalid_checksum"),
        ("320174-3399", "3201743399", "kennitala_invalid_date"),
        ("450401-3150", "4504013150", "kennitala_is_organisation"),
        ("12017433", None, "kennitala_invalid_format"),
        ("1201743389", "1201743389", "kennitala_invalid_checksum"),
        ("1201743398", "1201743398", "kennitala_invalid_format"),  # century digit 8: stdnum takes 9 or 0
        ("abc", None, "kennitala_invalid_format"),
    ],
)
def test_kennitala_rules(raw, normalized, problem):
    assert kennitala_problem(raw) == (normalized, problem)


def test_generated_kennitalas_pass_stdnum():
    import random

    rng = random.Random(1)
    for _ in range(500):
        kt = make_kennitala(rng)
        assert kennitala_problem(kt) == (kt, None)
        assert int(kt[8]) == check_digit(kt[:8])


def row(n, kennitala="1201743399", name="Anna Jónsdóttir", email="anna@example.is", status="active"):
    return {"row_number": n, "kennitala": kennitala, "name": name, "email": email, "status": status}


def test_valid_rows_are_normalized():
    result = validate_members([row(1, "120174-3399", email="  Anna@Example.IS ", status="Unpaid")])
    [m] = result.members
    assert (m.kennitala, m.email, m.status) == ("1201743399", "anna@example.is", "suspended")
    assert result.rejects == []


def test_missing_email_is_fine():
    [m] = validate_members([row(1, email=None)]).members
    assert m.status == "active" and m.email is None


@pytest.mark.parametrize(
    "bad, reason",
    [
        ({"kennitala": None}, "kennitala_missing"),
        ({"name": "   "}, "name_missing"),
        ({"email": "nobody"}, "email_invalid"),
        ({"status": "honorary"}, "status_unknown"),
    ],
)
def test_invalid_rows_are_quarantined_with_reasons(bad, reason):
    result = validate_members([{**row(7), **bad}])
    assert result.members == []
    [r] = result.rejects
    assert r.row_number == 7 and reason in r.reasons


def test_several_problems_are_all_reported():
    [r] = validate_members([row(1, "3201743399", name="", email="x")]).rejects
    assert set(r.reasons) == {"kennitala_invalid_date", "name_missing", "email_invalid"}


def test_identical_duplicates_are_merged_conflicting_ones_rejected_and_protected():
    result = validate_members(
        [row(1), row(2, "120174-3399"), row(3, "0101302989", name="A"), row(4, "0101302989", name="B")]
    )
    assert [m.kennitala for m in result.members] == ["1201743399"]
    assert result.duplicates_merged == 1
    assert [(r.row_number, r.reasons) for r in result.rejects] == [
        (3, ("duplicate_kennitala_conflict",)),
        (4, ("duplicate_kennitala_conflict",)),
    ]
    assert result.protected == {"0101302989"}


def test_a_bad_checksum_still_protects_the_ten_digits_it_carries():
    result = validate_members([row(1, "1201743389")])
    assert result.protected == {"1201743389"}


def test_inactive_and_deleted_map_to_removed():
    result = validate_members([row(1, status="inactive"), row(2, "0101302989", status="deleted")])
    assert {m.status for m in result.members} == {"removed"}


def test_simulator_truth_is_found_exactly():
    data = generate_registry(1500, seed=9)
    result = validate_members(normalize_row(r, i) for i, r in enumerate(data.members, start=1))
    found: dict[str, set[str]] = {}
    for r in result.rejects:
        found.setdefault(r.kennitala_raw, set()).update(r.reasons)
    assert found == {k: set(v) for k, v in data.truth.rejected_rows.items()}
    assert sorted(m.kennitala for m in result.members) == sorted(data.truth.valid_kennitalas)


def test_ekklesia_shape_is_read():
    raw = {"id": 1, "name": "Jón", "ssn": "1201743399", "contact_info": {"email": "jon@example.is"}}
    assert normalize_row(raw, 3) == {
        "row_number": 3,
        "kennitala": "1201743399",
        "name": "Jón",
        "email": "jon@example.is",
        "status": None,
        "status_given": False,
    }


@pytest.mark.parametrize(
    "sent, read",
    [
        (403855259, "0403855259"),
        (1201743399, "1201743399"),
        (1201743399.0, "1201743399"),
        (403855259.0, "0403855259"),
    ],
)
def test_a_kennitala_sent_as_a_number_is_read_as_its_digits(sent, read):
    [m] = validate_members([normalize_row({"ssn": sent, "name": "Jón", "status": "active"}, 1)]).members
    assert m.kennitala == read


def test_a_kennitala_beyond_repair_still_protects_its_digits():
    [r] = validate_members([row(1, "403855258")]).rejects  # 9 digits, checksum wrong
    assert r.kennitala == "0403855258" and r.reasons == ("kennitala_invalid_format",)


@pytest.mark.parametrize(
    "bad, reason",
    [
        ({"name": "A" * 256}, "name_too_long"),
        ({"name": "Anna\x00"}, "name_control_characters"),
        ({"name": "\x1b[2JAnna"}, "name_control_characters"),
        ({"name": "Anna \u202eJón"}, "name_control_characters"),
        ({"email": "a" * 251 + "@x.is"}, "email_too_long"),
        ({"status": "a" * 51}, "status_too_long"),
        ({"status": ""}, "status_missing"),
        ({"status": None}, "status_missing"),
        ({"status": 1}, "status_not_text"),
        ({"name": {"first": "Anna"}}, "name_not_text"),
        ({"kennitala": "1" * 65}, "kennitala_invalid_format"),
    ],
)
def test_values_no_column_could_hold_are_rejected_and_stored_safely(bad, reason):
    [r] = validate_members([{**row(1), **bad}]).rejects
    assert reason in r.reasons and r.kennitala == ("1201743399" if "kennitala" not in bad else None)
    limits = {"kennitala_raw": 64, "name": 255, "email": 255, "status": 50}
    for f, limit in limits.items():
        value = getattr(r, f)
        assert value is None or (len(value) <= limit and "\x00" not in value)


def test_a_row_without_a_status_field_follows_the_rule():
    statusless = {**row(1), "status": None, "status_given": False}
    [r] = validate_members([statusless]).rejects
    assert r.reasons == ("status_field_absent",)
    [m] = validate_members([statusless], missing_status="active").members
    assert m.status == "active"
    with pytest.raises(ValueError, match="missing_status"):
        validate_members([statusless], missing_status="maybe")


def test_logs_mask_identifies_without_revealing_the_birth_date():
    masked = mask("1201743399")
    assert "120174" not in masked and "3399" not in masked and mask(None) == "<none>"
    assert mask("120174-3399") == masked != mask("1201743389")  # stable per member, distinct
