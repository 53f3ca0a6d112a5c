"""What a sync would change: added / reinstated / changed / removed members, as one table.

Pure and vectorised (pandas), so the same function serves 2,000 members and 1,000,000.
``changed`` means a real field change (name, email or status), never "seen again".
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

# The change record and its counts are defined in records.py; the sync's steps import them from here.
from .records import DELTA_COLUMNS, KINDS, counts  # noqa: F401
from .validation import ACTIVE, REMOVED

FIELDS = ["name", "email", "status"]  # what a change may change (MemberChange's old_/new_ pairs)


def _frame(df: pd.DataFrame) -> pd.DataFrame:
    out = df[["kennitala", *FIELDS]].copy()
    for col in ["kennitala", *FIELDS]:
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out


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
    # Line both sides up by hashing the kennitalas once: a sorting merge of a million strings
    # costs seconds, and this runs every hour.
    codes, uniques = pd.factorize(pd.concat([up["kennitala"], cur["kennitala"]], ignore_index=True))
    up_codes, cur_codes = codes[: len(up)], codes[len(up) :]
    row_in_table = np.full(len(uniques), -1)
    row_in_table[cur_codes] = np.arange(len(cur))
    listed_upstream = np.zeros(len(uniques), dtype=bool)
    listed_upstream[up_codes] = True

    old_row = row_in_table[up_codes]  # each upstream member's row in the table, -1 if none
    known = old_row >= 0
    new = {f: up[f].to_numpy(dtype=object) for f in FIELDS}
    stored = {f: cur[f].to_numpy(dtype=object) for f in FIELDS}
    old = {f: np.full(len(up), None, dtype=object) for f in FIELDS}
    for f in FIELDS:
        old[f][known] = stored[f][old_row[known]]
    # Missing values are None on both sides (see _frame), so != is exactly "a real change".
    differs = np.zeros(len(up), dtype=bool)
    for f in FIELDS:
        differs |= new[f] != old[f]
    was_removed = old["status"] == REMOVED
    kind = np.full(len(up), None, dtype=object)
    kind[~known] = "added"
    kind[known & was_removed] = "reinstated"
    kind[known & ~was_removed & differs] = "changed"
    touched = ~known | was_removed | differs
    upstream_part = pd.DataFrame(
        {
            "kennitala": up["kennitala"].to_numpy(dtype=object)[touched],
            "change_kind": kind[touched],
            **{f"old_{f}": old[f][touched] for f in FIELDS},
            **{f"new_{f}": new[f][touched] for f in FIELDS},
        }
    )

    # A removal keeps the person's details and only marks them removed (soft delete).
    gone = ~listed_upstream[cur_codes] & (stored["status"] != REMOVED)
    gone &= ~cur["kennitala"].isin(set(protected)).to_numpy()
    removed_part = pd.DataFrame(
        {
            "kennitala": cur["kennitala"].to_numpy(dtype=object)[gone],
            "change_kind": "removed",
            **{f"old_{f}": stored[f][gone] for f in FIELDS},
            "new_name": stored["name"][gone],
            "new_email": stored["email"][gone],
            "new_status": REMOVED,
        }
    )
    delta = pd.concat([upstream_part, removed_part], ignore_index=True)[DELTA_COLUMNS]
    order = np.lexsort((delta["kennitala"].to_numpy(dtype=str), delta["change_kind"].to_numpy(dtype=str)))
    delta = delta.iloc[order].reset_index(drop=True).astype(object)
    return delta.where(delta.notna(), None)


def protected_from_removal(current: pd.DataFrame, upstream: pd.DataFrame, protected: Iterable[str]) -> int:
    """How many current members were kept only because their upstream row was rejected."""
    cur = current[current["status"] != REMOVED]
    listed = set(upstream.loc[upstream["status"] != REMOVED, "kennitala"])
    keep = set(protected) - listed
    return int(cur["kennitala"].isin(keep).sum())


def eligibility_losses(delta: pd.DataFrame) -> int:
    """Members who are eligible now and would not be after ``delta`` (suspended or removed)."""
    if not len(delta):
        return 0
    return int(((delta["old_status"] == ACTIVE) & (delta["new_status"] != ACTIVE)).sum())


def apply_in_memory(current: pd.DataFrame, delta: pd.DataFrame) -> pd.DataFrame:
    """The members table after applying ``delta`` (reference semantics for the SQL apply)."""
    table = {r.kennitala: {f: getattr(r, f) for f in FIELDS} for r in _frame(current).itertuples(index=False)}
    for r in delta.itertuples(index=False):
        table[r.kennitala] = {"name": r.new_name, "email": r.new_email, "status": r.new_status}
    rows = [{"kennitala": k, **v} for k, v in table.items()]
    return pd.DataFrame(rows, columns=["kennitala", *FIELDS])
