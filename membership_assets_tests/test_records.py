"""Each record is defined once; its tables, frames and API fields derive from that definition."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from membership_assets.columns import column, column_names, not_a_column, record_columns
from membership_assets.registry import migrate, store
from membership_assets.registry.history import LOG_COLUMNS
from membership_assets.registry.records import DELTA_COLUMNS, FIELD_LIMITS, MemberChange, SyncLogEntry


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
