"""What a sync would change: added / reinstated / changed / removed members, as one table.

Pure and vectorised (pandas), so the same function serves 2,000 members and 1,000,000.
``changed`` means a real field change (name, email or status), never "seen again".
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from .validation import REMOVED

FIELDS = ["name", "email", "status"]
DELTA_COLUMNS = [
    "kennitala",
    "change_kind",
    "old_name",
    "old_email",
    "old_status",
    "new_name",
    "new_email",
    "new_status",
]
KINDS = ("added", "reinstated", "changed", "removed")


def _frame(df: pd.DataFrame) -> pd.DataFrame:
    out = df[["kennitala", *FIELDS]].copy()
    for col in ["kennitala", *FIELDS]:
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out


def _differs(a: pd.Series, b: pd.Series) -> pd.Series:
    both_missing = a.isna() & b.isna()
    return ~both_missing & ((a != b) | a.isna() | b.isna())


def compute_delta(
    upstream: pd.DataFrame, current: pd.DataFrame, protected: Iterable[str] = ()
) -> pd.DataFrame:
    """Changes that turn ``current`` (members table, removed rows included) into ``upstream``.

    ``upstream`` holds validated members (status active/suspended/removed); ``protected``
    kennitalas (seen in rejected rows) are never removed.
    """
    up = _frame(upstream)
    dupes = up["kennitala"][up["kennitala"].duplicated()]
    if len(dupes):
        raise ValueError(f"upstream lists {dupes.nunique()} kennitalas more than once; validate first")
    up = up[up["status"] != REMOVED]
    cur = _frame(current)
    merged = up.merge(cur, on="kennitala", how="outer", suffixes=("_new", "_old"), indicator=True)
    merged = merged.rename(columns={f"{f}_new": f"new_{f}" for f in FIELDS}).rename(
        columns={f"{f}_old": f"old_{f}" for f in FIELDS}
    )
    upstream_only = merged["_merge"] == "left_only"
    both = merged["_merge"] == "both"
    current_only = merged["_merge"] == "right_only"
    was_removed = merged["old_status"] == REMOVED

    changed_fields = pd.Series(False, index=merged.index)
    for f in FIELDS:
        changed_fields |= _differs(merged[f"new_{f}"], merged[f"old_{f}"])

    kind = pd.Series(None, index=merged.index, dtype=object)
    kind[upstream_only] = "added"
    kind[both & was_removed] = "reinstated"
    kind[both & ~was_removed & changed_fields] = "changed"
    protected_set = set(protected)
    removable = current_only & ~was_removed & ~merged["kennitala"].isin(protected_set)
    kind[removable] = "removed"

    delta = merged[kind.notna()].copy()
    delta["change_kind"] = kind[kind.notna()]
    removed = delta["change_kind"] == "removed"
    # A removal keeps the person's details and only marks them removed (soft delete).
    delta.loc[removed, "new_name"] = delta.loc[removed, "old_name"]
    delta.loc[removed, "new_email"] = delta.loc[removed, "old_email"]
    delta.loc[removed, "new_status"] = REMOVED
    delta = delta[DELTA_COLUMNS].sort_values(["change_kind", "kennitala"]).reset_index(drop=True)
    return delta.astype(object).where(delta.notna(), None)


def protected_from_removal(current: pd.DataFrame, upstream: pd.DataFrame, protected: Iterable[str]) -> int:
    """How many current members were kept only because their upstream row was rejected."""
    cur = current[current["status"] != REMOVED]
    listed = set(upstream.loc[upstream["status"] != REMOVED, "kennitala"])
    keep = set(protected) - listed
    return int(cur["kennitala"].isin(keep).sum())


def counts(delta: pd.DataFrame) -> dict[str, int]:
    found = delta["change_kind"].value_counts().to_dict() if len(delta) else {}
    return {k: int(found.get(k, 0)) for k in KINDS}


def apply_in_memory(current: pd.DataFrame, delta: pd.DataFrame) -> pd.DataFrame:
    """The members table after applying ``delta`` (reference semantics for the SQL apply)."""
    table = {r.kennitala: {f: getattr(r, f) for f in FIELDS} for r in _frame(current).itertuples(index=False)}
    for r in delta.itertuples(index=False):
        table[r.kennitala] = {"name": r.new_name, "email": r.new_email, "status": r.new_status}
    rows = [{"kennitala": k, **v} for k, v in table.items()]
    return pd.DataFrame(rows, columns=["kennitala", *FIELDS])
