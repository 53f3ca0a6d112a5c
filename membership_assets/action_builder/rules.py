"""Tag-hygiene rules: which people's own membership tags disagree with their unit connection.

Semantics (reference: SGShuman/actionbuilder_updater, shared/reference/action-builder-api.md §3a),
with the deliberate differences called out:

* The truth is the person's *active* "People + Units" connection: its unit entity's name, and the
  "Membership Type" / "Membership Status" taggings on that connection. A person with no active
  connection is an inactive member and is judged against their first (inactive) one. (The
  reference read the type from the first connection even when inactive.) A person active in two
  units is not judged: either unit tag may be right.
* People with no "People + Units" connection at all are not judged: there is no truth to compare
  with, and a glitch in fetching connections must never wipe tags. (The reference flagged them as
  "Unknown Unit" and deleted their tags.)
* A field is only compared when the connection says something about it. Status is compared
  "where present"; a connection without a type tagging leaves the type alone.
* Only the outdated taggings are deleted: a person holding both the right and a stale unit tag
  loses the stale one only. (The reference deleted both unit and type taggings of every mismatch.)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from ..columns import column, not_a_column, record_columns
from .records import COLUMN_DESCRIPTIONS, Connection, Entity, Tagging, Unit


@dataclass(frozen=True)
class FieldNames:
    """Action Builder field and connection-type names the organization uses."""

    unit: str = "Bargaining Unit"
    membership_type: str = "Membership Type"
    membership_status: str = "Membership Status"
    connection_type: str = "People + Units"
    unit_entity_type: str = "Unit"

    @property
    def tag_fields(self) -> tuple[str, str, str]:
        return (self.unit, self.membership_type, self.membership_status)


# Read "correct" as what the unit connection says and "tagged" as what the person carries now;
# the report's CSV heads these columns correct_* / tagged_* (REPORT_SCHEMA).
@dataclass(frozen=True)
class Mismatch:
    """A person whose own unit/type/status tags disagree with their unit connection.

    Its columns (the membership_mismatches frame, the audit table ab_mismatches) are its fields;
    the tuples are held there as text or a count (``mismatch_frame``).
    """

    person_id: str = column(description=COLUMN_DESCRIPTIONS["person_id"])
    given_name: str | None = column(description=COLUMN_DESCRIPTIONS["given_name"])
    family_name: str | None = column(description=COLUMN_DESCRIPTIONS["family_name"])
    browser_url: str | None = column(description=COLUMN_DESCRIPTIONS["browser_url"])
    inactive: bool = column(
        description="True for an inactive member (judged against their first, inactive connection)"
    )
    unit_name: str | None = column(description="CORRECT unit: the unit of the person's unit connection")
    membership_type: str | None = column(
        description="CORRECT membership type: the one on the unit connection"
    )
    membership_status: str | None = column(
        description="CORRECT membership status: the one on the unit connection"
    )
    current_unit_name: str = column(
        description="TAGGED unit: the unit tag(s) the person carries now (may be outdated)"
    )
    current_membership_type: str = column(description="TAGGED membership type: the person's tag(s) now")
    current_membership_status: str = column(description="TAGGED membership status: the person's tag(s) now")
    reasons: tuple[str, ...] = column(
        "STRING", "unit/type/status _outdated (a wrong tag) or _missing (no tag)"
    )
    outdated_taggings: tuple[Tagging, ...] = column(
        "INT64", "How many of the person's taggings the cleanup would delete"
    )
    # Why a correct value (unit_name, membership_type, membership_status) is None, per field.
    blank_reasons: tuple[str, ...] = column(
        "STRING", "Why a correct value is blank (that field is then not judged)", default=()
    )
    # Fields whose truth could not be settled (unit unreadable, several values on the connection).
    undetermined: tuple[str, ...] = not_a_column(default=())


MISMATCH_COLUMNS = record_columns(Mismatch)
# How the frame holds Mismatch's tuples: joined text, and the outdated taggings' count.
_JOINED = {"reasons": ", ", "blank_reasons": "; "}


def mismatch_frame(mismatches: Iterable[Mismatch]) -> pd.DataFrame:
    """Mismatches as the membership_mismatches frame: one row each, MISMATCH_COLUMNS."""
    names = [c.name for c in MISMATCH_COLUMNS]
    rows = [
        {
            **{name: getattr(m, name) for name in names},
            **{name: sep.join(getattr(m, name)) for name, sep in _JOINED.items()},
            "outdated_taggings": len(m.outdated_taggings),
        }
        for m in mismatches
    ]
    return pd.DataFrame(rows, columns=names)


def mismatches_from_frame(frame: pd.DataFrame) -> list[Mismatch]:
    """Inverse of mismatch_frame, without the outdated taggings (the report never shows them).

    The blank reasons stay one joined text: the report joins them the same way again.
    """
    out = []
    for r in frame[[c.name for c in MISMATCH_COLUMNS]].to_dict("records"):
        blank = r["blank_reasons"]
        out.append(
            Mismatch(
                **{
                    **r,
                    "inactive": bool(r["inactive"]),
                    "reasons": tuple(x for x in (r["reasons"] or "").split(", ") if x),
                    "outdated_taggings": (),
                    "blank_reasons": (blank,) if isinstance(blank, str) and blank else (),
                }
            )
        )
    return out


@dataclass(frozen=True)
class PlannedDeletion:
    """An outdated tagging the cleanup is to delete."""

    person_id: str
    tagging_id: str
    tag_id: str | None
    field: str | None
    value: str | None
    expected_value: str | None
    inactive: bool


@dataclass(frozen=True)
class DeletionOutcome(PlannedDeletion):
    """What became of one planned deletion: a row of the audit table ab_tagging_deletions."""

    action: str = column(description=COLUMN_DESCRIPTIONS["action"])
    error: str | None = column(description=COLUMN_DESCRIPTIONS["error"])
    acted_at: str = column("TIMESTAMP", COLUMN_DESCRIPTIONS["acted_at"])  # ISO 8601, UTC

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Evaluation:
    mismatches: list[Mismatch] = field(default_factory=list)
    people_evaluated: int = 0
    inactive_members: int = 0
    without_unit_connection: list[str] = field(default_factory=list)
    several_active_units: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReportColumn:
    """A column of the emailed CSV and how a mismatch fills it (plain text, escaped when written)."""

    name: str
    description: str
    cell: Callable[[Mismatch, FieldNames], str]


# The emailed CSV, in order. "correct_*" is what the unit connection says, "tagged_*" what the
# person carries: names nobody can read the other way round (the reference's "current_unit_name"
# was the outdated tag).
REPORT_SCHEMA = (
    ReportColumn("uuid", "The person's Action Builder id.", lambda m, _: m.person_id),
    ReportColumn("first_name", "The person's first name.", lambda m, _: m.given_name or ""),
    ReportColumn("last_name", "The person's last name.", lambda m, _: m.family_name or ""),
    ReportColumn(
        "correct_unit",
        "The unit of the person's unit connection: the unit tag they should carry.",
        lambda m, _: m.unit_name or "",
    ),
    ReportColumn(
        "tagged_unit",
        "The unit tag(s) the person carries now ('; ' between several, blank: none).",
        lambda m, _: m.current_unit_name,
    ),
    ReportColumn(
        "correct_membership_type",
        "The membership type on the unit connection.",
        lambda m, _: m.membership_type or "",
    ),
    ReportColumn(
        "tagged_membership_type",
        "The membership type tag(s) the person carries now.",
        lambda m, _: m.current_membership_type,
    ),
    ReportColumn(
        "correct_membership_status",
        "The membership status on the unit connection.",
        lambda m, _: m.membership_status or "",
    ),
    ReportColumn(
        "tagged_membership_status",
        "The membership status tag(s) the person carries now.",
        lambda m, _: m.current_membership_status,
    ),
    ReportColumn(
        "what_to_change", "Each tag to add or replace, in words.", lambda m, names: what_to_change(m, names)
    ),
    ReportColumn(
        "blank_correct_value_reason",
        "Why a correct_* cell is blank: that field is not judged and its tags are left alone.",
        lambda m, _: "; ".join(m.blank_reasons),
    ),
    ReportColumn(
        "mismatch_reasons",
        "Codes: unit/type/status _outdated (a wrong tag is present) or _missing (no tag at all).",
        lambda m, _: ", ".join(m.reasons),
    ),
    ReportColumn(
        "action_builder_url", "The person's page in Action Builder.", lambda m, _: m.browser_url or ""
    ),
)
REPORT_COLUMNS = [c.name for c in REPORT_SCHEMA]
# Personal data in the CSV: organizers need it, run history (metadata previews) must not keep it.
REPORT_NAME_COLUMNS = ("first_name", "last_name")


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def _values(taggings: Iterable[Tagging], field_name: str) -> list[str]:
    return sorted({v for t in taggings if t.field == field_name and (v := _clean(t.value))})


def _single_value(
    taggings: Iterable[Tagging], field_name: str, person_id: str, notes: list[str]
) -> tuple[str | None, str | None]:
    """The connection's one value for the field, or None and why (for the report's reason column)."""
    values = _values(taggings, field_name)
    if len(values) > 1:
        notes.append(f"{person_id}: connection carries several {field_name!r} values {values}; not compared")
        return None, f"{field_name}: the unit connection carries several values ({'; '.join(values)})"
    if not values:
        return None, f"{field_name}: the unit connection carries no {field_name} tag"
    return values[0], None


def _unit_value(unit: Unit | None, field_name: str) -> tuple[str | None, str | None]:
    if unit is None:
        return None, f"{field_name}: the connected unit could not be read"
    name = _clean(unit.name)
    return name, None if name else f"{field_name}: the connected unit has no name"


def evaluate(
    people: Iterable[Entity],  # units too: only people are judged
    connections: Iterable[Connection],
    units: Mapping[str, Unit],
    taggings: Iterable[Tagging],
    names: FieldNames = FieldNames(),
) -> Evaluation:
    """Compare every person's own tags with what their unit connection says."""
    by_person: dict[str, list[Connection]] = defaultdict(list)
    for conn in connections:
        by_person[conn.person_id].append(conn)
    by_item: dict[tuple[str, str], list[Tagging]] = defaultdict(list)
    for tagging in taggings:
        by_item[(tagging.item_type, tagging.item_id)].append(tagging)

    result = Evaluation()
    for person in people:
        if not person.is_person:
            continue
        pid = person.person_id
        unit_conns = sorted(
            (c for c in by_person.get(pid, ()) if c.connection_type == names.connection_type),
            key=lambda c: c.position,
        )
        if not unit_conns:
            result.without_unit_connection.append(pid)
            continue
        active = [c for c in unit_conns if not c.inactive]
        if len(active) > 1:
            # Active in two units: either unit tag may be right, so neither is judged.
            result.several_active_units.append(pid)
            continue
        result.people_evaluated += 1
        source = active[0] if active else unit_conns[0]
        inactive = not active
        result.inactive_members += inactive

        unit = units.get(source.other_id or "")
        on_connection = by_item.get(("connection", source.connection_id), ())
        judged = {
            names.unit: _unit_value(unit, names.unit),
            names.membership_type: _single_value(on_connection, names.membership_type, pid, result.notes),
            names.membership_status: _single_value(on_connection, names.membership_status, pid, result.notes),
        }
        expected = {f: value for f, (value, _why) in judged.items()}
        if unit is None:
            result.notes.append(f"{pid}: unit {source.other_id} unknown; unit not compared")
        undetermined = ((names.unit,) if unit is None or expected[names.unit] is None else ()) + tuple(
            f for f in (names.membership_type, names.membership_status) if len(_values(on_connection, f)) > 1
        )

        own = by_item.get(("person", pid), ())
        current: dict[str, list[Tagging]] = {f: [t for t in own if t.field == f] for f in names.tag_fields}
        reasons: list[str] = []
        outdated: list[Tagging] = []
        for fname, label in (
            (names.unit, "unit"),
            (names.membership_type, "type"),
            (names.membership_status, "status"),
        ):
            want = expected[fname]
            if want is None:
                continue
            stale = [t for t in current[fname] if _clean(t.value) != want]
            if stale:
                reasons.append(f"{label}_outdated")
                outdated.extend(stale)
            elif not current[fname]:
                reasons.append(f"{label}_missing")
        if not reasons:
            continue

        shown = {f: "; ".join(sorted({_clean(t.value) or "" for t in ts})) for f, ts in current.items()}
        result.mismatches.append(
            Mismatch(
                person_id=pid,
                given_name=person.given_name,
                family_name=person.family_name,
                browser_url=person.browser_url,
                inactive=inactive,
                unit_name=expected[names.unit],
                membership_type=expected[names.membership_type],
                membership_status=expected[names.membership_status],
                current_unit_name=shown[names.unit],
                current_membership_type=shown[names.membership_type],
                current_membership_status=shown[names.membership_status],
                reasons=tuple(reasons),
                outdated_taggings=tuple(sorted(outdated, key=lambda t: t.tagging_id)),
                blank_reasons=tuple(why for _value, why in judged.values() if why),
                undetermined=undetermined,
            )
        )
    result.mismatches.sort(key=lambda m: m.person_id)
    return result


# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV Injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """A cell a spreadsheet shows as text: OWASP's escape (a leading ``'``) for formula triggers.

    Ordinary values are unchanged; the csv module quotes any value holding a quote or separator.
    """
    return "'" + value if value.startswith(FORMULA_TRIGGERS) else value


def what_to_change(m: Mismatch, names: FieldNames = FieldNames()) -> str:
    """The tags to add or replace, in words, e.g. "Bargaining Unit: replace 'A' with 'B'"."""
    fields = (
        ("unit", names.unit, m.unit_name, m.current_unit_name),
        ("type", names.membership_type, m.membership_type, m.current_membership_type),
        ("status", names.membership_status, m.membership_status, m.current_membership_status),
    )
    changes = []
    for label, field_name, correct, tagged in fields:
        if f"{label}_outdated" in m.reasons:
            values = [v for v in tagged.split("; ") if v]
            stale = " and ".join(f"'{v}'" for v in values if v != correct)
            if correct in values:  # the right tag is there too: only the stale one goes
                changes.append(f"{field_name}: remove {stale} (keep '{correct}')")
            else:
                changes.append(f"{field_name}: replace {stale} with '{correct}'")
        elif f"{label}_missing" in m.reasons:
            changes.append(f"{field_name}: add '{correct}'")
    return "; ".join(changes)


def report_records(mismatches: Iterable[Mismatch], names: FieldNames = FieldNames()) -> list[dict[str, str]]:
    """Active members' rows of the report, worst units first, as plain text (not yet escaped)."""
    rows = [{c.name: c.cell(m, names) for c in REPORT_SCHEMA} for m in mismatches if not m.inactive]
    per_unit: dict[str, int] = defaultdict(int)
    for r in rows:
        per_unit[r["correct_unit"]] += 1
    rows.sort(
        key=lambda r: (
            -per_unit[r["correct_unit"]],
            r["correct_unit"],
            r["last_name"],
            r["first_name"],
            r["uuid"],
        )
    )
    return rows


def report_rows(mismatches: Iterable[Mismatch], names: FieldNames = FieldNames()) -> list[dict[str, str]]:
    """The emailed CSV: active members only, the correct values, no internal tagging ids.

    Every cell is escaped against formula injection (names and tag values are typed by people).
    """
    return [{k: csv_cell(v) for k, v in r.items()} for r in report_records(mismatches, names)]


def plan_deletions(mismatches: Iterable[Mismatch], names: FieldNames = FieldNames()) -> list[PlannedDeletion]:
    """One deletion per outdated tagging, inactive members included (as the reference did)."""
    plan = []
    for m in mismatches:
        expected = {
            names.unit: m.unit_name,
            names.membership_type: m.membership_type,
            names.membership_status: m.membership_status,
        }
        plan.extend(
            PlannedDeletion(
                person_id=m.person_id,
                tagging_id=t.tagging_id,
                tag_id=t.tag_id,
                field=t.field,
                value=t.value,
                expected_value=expected.get(t.field or ""),
                inactive=m.inactive,
            )
            for t in m.outdated_taggings
        )
    return plan
