"""The audit-history tables analysts query: one definition for DuckDB and BigQuery alike.

Every table is append-only history, partitioned by ``run_started_at`` (day) and written by
replacing a *slice*: all rows sharing the slice key of the incoming rows are deleted and the new
rows inserted. Snapshots of a run are sliced by the logical run id (Dagster's root run id), so
re-executing a run replaces its rows instead of duplicating them. Facts produced by side effects
are sliced by their own identity: an applied sync by its sync id (itself the logical run id, and
applied at most once), tag deletions and tag repairs by the logical run with earlier attempts'
outcomes merged in (a deletion made by a first attempt is never overwritten by a re-execution's
"already gone").
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # BigQuery type names: STRING, INT64, FLOAT64, BOOL, TIMESTAMP
    description: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    slice_key: str
    description: str
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def _cols(*specs: tuple[str, str] | tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(*s) for s in specs)


RUN_COLUMNS = (
    ("run_id", "STRING", "Logical Dagster run (root run id of re-executions)"),
    ("run_started_at", "TIMESTAMP", "When the logical run started; the partition column"),
)

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
        ),
        Table(
            "ab_people",
            "run_id",
            "Entities listed by the scan (people and units).",
            _cols(
                *RUN_COLUMNS,
                ("person_id", "STRING"),
                ("entity_type", "STRING"),
                ("given_name", "STRING"),
                ("family_name", "STRING"),
                ("modified_date", "STRING"),
                ("quarantine_reason", "STRING"),
            ),
        ),
        Table(
            "ab_connections",
            "run_id",
            "Connections of scanned people.",
            _cols(
                *RUN_COLUMNS,
                ("connection_id", "STRING"),
                ("person_id", "STRING"),
                ("other_id", "STRING"),
                ("connection_type", "STRING"),
                ("inactive", "BOOL"),
                ("position", "INT64"),
            ),
        ),
        Table(
            "ab_taggings",
            "run_id",
            "Membership taggings of judged people and their unit connections.",
            _cols(
                *RUN_COLUMNS,
                ("tagging_id", "STRING"),
                ("tag_id", "STRING"),
                ("item_type", "STRING"),
                ("item_id", "STRING"),
                ("section", "STRING"),
                ("field", "STRING"),
                ("value", "STRING"),
            ),
        ),
        Table(
            "ab_mismatches",
            "run_id",
            "People whose own tags disagree with their unit connection.",
            _cols(
                *RUN_COLUMNS,
                ("person_id", "STRING"),
                ("inactive", "BOOL"),
                # The report's CSV calls these correct_unit ... and tagged_unit ...
                ("unit_name", "STRING", "CORRECT unit: the unit of the person's unit connection"),
                ("membership_type", "STRING", "CORRECT membership type: the one on the unit connection"),
                ("membership_status", "STRING", "CORRECT membership status: the one on the unit connection"),
                ("current_unit_name", "STRING", "TAGGED unit: the person's unit tag(s) at the scan"),
                ("current_membership_type", "STRING", "TAGGED membership type: the person's tag(s)"),
                ("current_membership_status", "STRING", "TAGGED membership status: the person's tag(s)"),
                ("reasons", "STRING"),
                ("outdated_taggings", "INT64"),
            ),
        ),
        Table(
            "ab_tagging_deletions",
            "run_id",
            "One row per planned tagging deletion and what happened to it.",
            _cols(
                *RUN_COLUMNS,
                ("attempt_run_id", "STRING"),
                ("person_id", "STRING"),
                ("tagging_id", "STRING"),
                ("tag_id", "STRING"),
                ("field", "STRING"),
                ("value", "STRING"),
                ("expected_value", "STRING"),
                ("inactive", "BOOL"),
                (
                    "action",
                    "STRING",
                    "deleted | already_gone | dry_run | blocked_cap | failed | not_attempted; "
                    "pending (intent, not sent) | sending (DELETE may have been sent) after a crash",
                ),
                ("error", "STRING"),
                ("acted_at", "TIMESTAMP"),
            ),
        ),
        Table(
            "ab_tag_repairs",
            "run_id",
            "One row per tag repair step (add, remove, hold, verify) and what happened to it.",
            _cols(
                *RUN_COLUMNS,
                ("attempt_run_id", "STRING"),
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
                ("sync_id", "STRING"),
                ("row_number", "INT64"),
                ("kennitala", "STRING"),
                ("name", "STRING"),
                ("email", "STRING"),
                ("status", "STRING"),
            ),
        ),
        Table(
            "registry_rejects",
            "run_id",
            "Registry rows quarantined by validation, with reasons.",
            _cols(
                *RUN_COLUMNS,
                ("sync_id", "STRING"),
                ("row_number", "INT64"),
                ("kennitala_raw", "STRING"),
                ("kennitala", "STRING"),
                ("name", "STRING"),
                ("email", "STRING"),
                ("status", "STRING"),
                ("reasons", "STRING"),
            ),
        ),
        Table(
            "membership_deltas",
            "sync_id",
            "Every membership change a sync applied (or planned, dry_run).",
            _cols(
                *RUN_COLUMNS,
                ("sync_id", "STRING"),
                ("kennitala", "STRING"),
                ("change_kind", "STRING", "added | reinstated | changed | removed"),
                ("old_name", "STRING"),
                ("old_email", "STRING"),
                ("old_status", "STRING"),
                ("new_name", "STRING"),
                ("new_email", "STRING"),
                ("new_status", "STRING"),
                ("dry_run", "BOOL"),
            ),
        ),
        Table(
            "membership_sync_log",
            "sync_id",
            "One row per registry sync, mirrored from the members DB.",
            _cols(
                *RUN_COLUMNS,
                ("sync_id", "STRING"),
                ("sync_time", "TIMESTAMP"),
                ("source", "STRING"),
                ("status", "STRING"),
                ("dry_run", "BOOL"),
                ("members_fetched", "INT64"),
                ("members_added", "INT64"),
                ("members_removed", "INT64"),
                ("members_updated", "INT64"),
                ("members_rejected", "INT64"),
                ("errors", "STRING"),
                ("duration_ms", "INT64"),
                ("rolled_back_sync_id", "STRING"),
            ),
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
    """Exactly the table's columns, in order, with types both backends load the same way."""
    unknown = set(df.columns) - set(table.column_names)
    if unknown:
        raise ValueError(f"{table.name}: columns not in the schema: {sorted(unknown)}")
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
