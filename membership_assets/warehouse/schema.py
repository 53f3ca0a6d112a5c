"""The audit-history tables analysts query: one definition for DuckDB and BigQuery alike.

Every table is append-only history, partitioned by ``run_started_at`` (day) and written by
replacing a *slice*: all rows sharing the slice key of the incoming rows are deleted and the new
rows inserted. Snapshots of a run are sliced by the logical run id (Dagster's root run id), so
re-executing a run replaces its rows instead of duplicating them. Facts produced by side effects
are sliced by their own identity: an applied sync by its sync id (itself the logical run id, and
applied at most once), tag deletions and tag repairs by the logical run with earlier attempts'
outcomes merged in (a deletion made by a first attempt is never overwritten by a re-execution's
"already gone").

The tables of records (Action Builder's, mismatches, deletions, member changes, the sync log)
are those records' columns (columns.py), so a record and its table cannot say different things.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

from ..action_builder.records import COLUMN_DESCRIPTIONS, Connection, Entity, Tagging
from ..action_builder.rules import DeletionOutcome, Mismatch
from ..columns import Column, record_columns
from ..registry.records import MemberChange, SyncLogEntry


@dataclass(frozen=True)
class Table:
    name: str
    slice_key: str
    description: str
    columns: tuple[Column, ...]
    # Columns of the rows written here that the table leaves out on purpose (each says why);
    # any other column not in the table fails the write (``conform``).
    omitted: frozenset[str] = frozenset()

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def _cols(*specs: Column | tuple[str, str] | tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(s if isinstance(s, Column) else Column(*s) for s in specs)


RUN_COLUMNS = (
    ("run_id", "STRING", "Logical Dagster run (root run id of re-executions)"),
    ("run_started_at", "TIMESTAMP", "When the logical run started; the partition column"),
)
ATTEMPT_RUN_ID = Column("attempt_run_id", "STRING", "The Dagster run (attempt) that acted")
SYNC_ID = Column("sync_id", "STRING", "The registry sync (its logical Dagster run id)")


def _record(cls: type, *, without: tuple[str, ...] = ()) -> tuple[Column, ...]:
    """The warehouse columns of record ``cls`` (see columns.py), but ``without``.

    A JSON document is archived as its text; a column without its own description takes the
    Action Builder records' one.
    """
    return tuple(
        replace(
            c,
            type="STRING" if c.type == "JSON" else c.type,
            description=c.description or COLUMN_DESCRIPTIONS.get(c.name, ""),
            length=None,
            primary_key=False,
            required=False,
        )
        for c in record_columns(cls)
        if c.name not in without
    )


QUARANTINE = ("quarantine_reason", "STRING", COLUMN_DESCRIPTIONS["quarantine_reason"])
# Names are kept (analysts' views leave them out); the page address is not history.
PERSON_NOT_ARCHIVED = ("browser_url",)
# The report's, not the audit's: names and page address (ab_people has them) and the blank reasons.
MISMATCH_NOT_ARCHIVED = ("given_name", "family_name", "browser_url", "blank_reasons")

TABLES: dict[str, Table] = {
    t.name: t
    for t in [
        Table(
            "ab_scan_runs",
            "run_id",
            "One row per Action Builder scan: mode, scope, cost.",
            _cols(
                *RUN_COLUMNS,
                ("mode", "STRING"),
                ("since", "TIMESTAMP"),
                ("strategy", "STRING"),  # how taggings were read: per_person | per_tag
                ("connections_strategy", "STRING"),  # per_person | per_unit
                ("entities", "INT64"),
                ("people", "INT64"),
                ("judged", "INT64"),
                ("quarantined", "INT64"),
                ("requests", "INT64"),
                ("rate_limited_429", "INT64"),
                ("retries", "INT64"),
                ("seconds", "FLOAT64"),
            ),
            # The scan's own bookkeeping (ab_scan's metadata shows it): not analysed across runs.
            omitted=frozenset(
                {
                    "attempt_requests",
                    "requests_by_kind",
                    "resumed_items",
                    "campaign_id",
                    "notes",
                    "names_confirmed_by",
                    "scan_started_at",
                }
            ),
        ),
        Table(
            "ab_people",
            "run_id",
            "Entities listed by the scan (people and units).",
            (*_cols(*RUN_COLUMNS), *_record(Entity, without=PERSON_NOT_ARCHIVED), *_cols(QUARANTINE)),
            omitted=frozenset(PERSON_NOT_ARCHIVED),
        ),
        Table(
            "ab_connections",
            "run_id",
            "Connections of scanned people.",
            (*_cols(*RUN_COLUMNS), *_record(Connection)),
        ),
        Table(
            "ab_taggings",
            "run_id",
            "Membership taggings of judged people and their unit connections.",
            (*_cols(*RUN_COLUMNS), *_record(Tagging)),
        ),
        Table(
            "ab_mismatches",
            "run_id",
            "People whose own tags disagree with their unit connection.",
            (*_cols(*RUN_COLUMNS), *_record(Mismatch, without=MISMATCH_NOT_ARCHIVED)),
            omitted=frozenset(MISMATCH_NOT_ARCHIVED),
        ),
        Table(
            "ab_tagging_deletions",
            "run_id",
            "One row per planned tagging deletion and what happened to it.",
            (*_cols(*RUN_COLUMNS), ATTEMPT_RUN_ID, *_record(DeletionOutcome)),
        ),
        Table(
            "ab_tag_repairs",
            "run_id",
            "One row per tag repair step (add, remove, hold, verify) and what happened to it.",
            _cols(
                *RUN_COLUMNS,
                ATTEMPT_RUN_ID,
                ("person_id", "STRING"),
                ("seq", "INT64", "Order within the person: adds, then removals; 0 = hold, 1000 = verify"),
                ("step", "STRING", "add | remove | hold (left for a human or the cleanup) | verify"),
                ("field", "STRING"),
                ("value", "STRING", "add: the value added; remove: the outdated value"),
                ("expected_value", "STRING"),
                ("tag_id", "STRING"),
                ("tagging_id", "STRING"),
                ("reason", "STRING", "hold: why the person is not repaired automatically"),
                (
                    "action",
                    "STRING",
                    "added | already_present | tag_vanished | removed | already_gone | kept | person_gone "
                    "| failed | not_attempted | dry_run | blocked_cap | needs_human | cleanup_only | verified "
                    "| still_mismatched | unverified; pending | sending (request may have been sent) after a crash",
                ),
                ("error", "STRING"),
                ("acted_at", "TIMESTAMP"),
            ),
        ),
        Table(
            "registry_members_raw",
            "run_id",
            "Members as the Django registry listed them.",
            _cols(
                *RUN_COLUMNS,
                SYNC_ID,
                ("row_number", "INT64"),
                ("kennitala", "STRING"),
                ("name", "STRING"),
                ("email", "STRING"),
                ("status", "STRING"),
            ),
            omitted=frozenset({"status_given"}),  # how validation read the row, not what it listed
        ),
        Table(
            "registry_rejects",
            "run_id",
            "Registry rows quarantined by validation, with reasons.",
            _cols(
                *RUN_COLUMNS,
                SYNC_ID,
                ("row_number", "INT64"),
                ("kennitala_raw", "STRING"),
                ("kennitala", "STRING"),
                ("name", "STRING"),
                ("email", "STRING"),
                ("status", "STRING"),
                ("reasons", "STRING"),
            ),
            omitted=frozenset({"rejected_at"}),  # the members DB's write time; run_started_at dates it
        ),
        Table(
            "membership_deltas",
            "sync_id",
            "Every membership change a sync applied (or planned, dry_run).",
            (
                *_cols(*RUN_COLUMNS),
                SYNC_ID,
                *_record(MemberChange),
                Column("dry_run", "BOOL", "A change the sync only planned"),
            ),
        ),
        Table(
            "membership_sync_log",
            "sync_id",
            "One row per registry sync, mirrored from the members DB.",
            (*_cols(*RUN_COLUMNS), SYNC_ID, *_record(SyncLogEntry, without=("id", "run_id"))),
            # The log's id is sync_id here; its run_id (the attempt) is replaced by the logical run.
            omitted=frozenset({"created_at"}),
        ),
    ]
}


# Direct identifiers: analysts' views (analyst.py) leave them out. A kennitala becomes member_key,
# the same keyed pseudonym the logs show; a changed name or email becomes a yes/no.
KENNITALA_COLUMNS = frozenset({"kennitala"})
DIRECT_IDENTIFIER_COLUMNS = frozenset(
    {"kennitala_raw", "name", "email", "given_name", "family_name"}
    | {f"{age}_{field}" for age in ("old", "new") for field in ("name", "email")}
)


def conform(table: Table, df: pd.DataFrame) -> pd.DataFrame:
    """Exactly the table's columns, in order, with types both backends load the same way.

    Columns the table leaves out on purpose (``Table.omitted``) are dropped; any other column it
    does not know fails, so a record and its table cannot drift apart unnoticed.
    """
    unknown = set(df.columns) - set(table.column_names) - table.omitted
    if unknown:
        raise ValueError(
            f"{table.name}: columns not in the schema: {sorted(unknown)}; add them to the table in "
            "warehouse/schema.py, or to its omitted columns if they are not to be archived"
        )
    out = pd.DataFrame(index=df.index)
    for col in table.columns:
        values = df[col.name] if col.name in df.columns else pd.Series([None] * len(df), index=df.index)
        if col.type == "TIMESTAMP":
            out[col.name] = pd.to_datetime(values, utc=True, format="ISO8601")
        elif col.type == "INT64":
            out[col.name] = pd.array(values, dtype="Int64")
        elif col.type == "FLOAT64":
            out[col.name] = pd.array(values, dtype="Float64")
        elif col.type == "BOOL":
            out[col.name] = pd.array(values, dtype="boolean")
        else:
            out[col.name] = (
                values.astype(object).where(values.notna(), None).map(lambda v: v if v is None else str(v))
            )
    return out.reset_index(drop=True)
