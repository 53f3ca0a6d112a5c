"""Each record is defined once; its tables, frames and API fields derive from that definition."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from membership_assets.action_builder.records import Entity, Tagging
from membership_assets.action_builder.rules import (
    MISMATCH_COLUMNS,
    DeletionOutcome,
    Mismatch,
    mismatch_frame,
    mismatches_from_frame,
)
from membership_assets.columns import column, column_names, not_a_column, record_columns
from membership_assets.registry import migrate, store
from membership_assets.registry.history import LOG_COLUMNS
from membership_assets.registry.records import DELTA_COLUMNS, FIELD_LIMITS, MemberChange, SyncLogEntry
from membership_assets.warehouse.audit import RunIdentity, record
from membership_assets.warehouse.schema import MISMATCH_NOT_ARCHIVED, TABLES


def _shape(columns) -> list[tuple]:
    """What a table's columns are, as the database sees them."""
    return [
        (
            c.name,
            str(c.type.compile(dialect=postgresql.dialect())),
            c.nullable,
            c.primary_key,
            None if c.server_default is None else str(c.server_default.arg),
        )
        for c in columns
    ]


def _baseline(table: str) -> list[tuple]:
    items = migrate._baseline().tables()[table]
    return _shape([c for c in items if isinstance(c, sa.Column)])


def test_the_frozen_baseline_holds_the_sync_log_record_columns():
    assert _baseline("membership_sync_log") == _shape(store.sync_log.columns)
    stored = [c.name for c in store.sync_log.columns]
    assert stored == [*column_names(SyncLogEntry), "created_at"]


def test_the_frozen_baseline_holds_the_change_record_columns():
    assert _baseline("membership_changes") == _shape(store.changes.columns)
    assert [c.name for c in store.changes.columns] == ["sync_id", *DELTA_COLUMNS, "changed_at"]


def test_validation_limits_are_the_column_sizes():
    for table in (store.members, store.rejects, store.changes):
        for c in table.columns:
            name = c.name.removeprefix("old_").removeprefix("new_")
            if name in FIELD_LIMITS:
                assert c.type.length == FIELD_LIMITS[name], (table.name, c.name)
    assert {c.name: c.length for c in record_columns(MemberChange) if c.name.startswith("new_")} == {
        "new_name": FIELD_LIMITS["name"],
        "new_email": FIELD_LIMITS["email"],
        "new_status": FIELD_LIMITS["status"],
    }


def test_the_sync_api_fields_are_the_log_record_columns():
    assert LOG_COLUMNS == [
        "id",
        "sync_time",
        "source",
        "status",
        "dry_run",
        "members_fetched",
        "members_added",
        "members_reinstated",
        "members_removed",
        "members_updated",
        "members_rejected",
        "duration_ms",
        "run_id",
    ]
    assert set(LOG_COLUMNS) - {"members_reinstated"} <= set(column_names(SyncLogEntry))


def test_record_columns_read_types_from_annotations_and_refuse_what_they_cannot_read():
    @dataclass
    class Row:
        a: str
        b: int | None
        c: bool
        when: str = column("TIMESTAMP", "an ISO string")
        hidden: tuple = not_a_column(default=())

    assert [(c.name, c.type) for c in record_columns(Row)] == [
        ("a", "STRING"),
        ("b", "INT64"),
        ("c", "BOOL"),
        ("when", "TIMESTAMP"),
    ]

    @dataclass
    class Unreadable:
        items: list

    with pytest.raises(TypeError, match="Unreadable.items"):
        record_columns(Unreadable)


# -- Action Builder records and the audit warehouse ---------------------------------------------


def _mismatch(person_id: str, **kw) -> Mismatch:
    values = dict(
        person_id=person_id,
        given_name="Anna",
        family_name="Jónsdóttir",
        browser_url=f"https://ab.example/p/{person_id}",
        inactive=False,
        unit_name="Unit A",
        membership_type="Full",
        membership_status=None,
        current_unit_name="Unit B",
        current_membership_type="Full",
        current_membership_status="",
        reasons=("unit_outdated",),
        outdated_taggings=(Tagging("t1", "tag", "person", person_id, "S", "Bargaining Unit", "Unit B"),),
        blank_reasons=("Membership Status: the unit connection carries no Membership Status tag",),
    )
    return Mismatch(**{**values, **kw})


def test_the_mismatch_frame_is_the_record_and_reads_back():
    found = [_mismatch("p1"), _mismatch("p2", reasons=("unit_outdated", "type_missing"), inactive=True)]
    frame = mismatch_frame(found)
    assert list(frame.columns) == [c.name for c in MISMATCH_COLUMNS] == column_names(Mismatch)
    assert frame.loc[1, "reasons"] == "unit_outdated, type_missing"
    assert frame.loc[0, "outdated_taggings"] == 1
    back = mismatches_from_frame(frame)
    assert back == [replace(m, outdated_taggings=()) for m in found]


def test_warehouse_tables_are_their_records_columns():
    def names(table: str) -> list[str]:
        return TABLES[table].column_names

    run = ["run_id", "run_started_at"]
    assert names("ab_mismatches") == run + [
        c for c in column_names(Mismatch) if c not in MISMATCH_NOT_ARCHIVED
    ]
    assert names("ab_tagging_deletions") == [*run, "attempt_run_id", *column_names(DeletionOutcome)]
    assert names("ab_people") == [*run, *column_names(Entity)[:-1], "quarantine_reason"]
    assert names("membership_deltas") == [*run, "sync_id", *DELTA_COLUMNS, "dry_run"]
    logged = [c for c in column_names(SyncLogEntry) if c not in ("id", "run_id")]
    assert names("membership_sync_log") == [*run, "sync_id", *logged]
    assert TABLES["membership_sync_log"].columns[0 + 3 + logged.index("errors")].type == "STRING"


def test_the_warehouse_writer_refuses_a_column_its_table_does_not_know(warehouse):
    run = RunIdentity("run-a", "run-a", datetime(2026, 10, 1, tzinfo=timezone.utc))
    frame = mismatch_frame([_mismatch("p1")])
    # Columns the table leaves out on purpose (names, page address) are dropped, not archived.
    assert record(warehouse, "ab_mismatches", frame, run) == 1
    stored = warehouse.query("SELECT * FROM {dataset}.ab_mismatches")
    assert list(stored.columns) == TABLES["ab_mismatches"].column_names
    # A column nobody declared (a record that grew, a typo) fails, naming it, and writes nothing.
    with pytest.raises(ValueError, match=r"ab_mismatches: columns not in the schema: \['surprise'\]"):
        record(warehouse, "ab_mismatches", frame.assign(surprise=1, person_id="p2"), run)
    assert warehouse.query("SELECT person_id FROM {dataset}.ab_mismatches")["person_id"].tolist() == ["p1"]
