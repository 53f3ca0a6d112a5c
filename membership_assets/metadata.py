"""Asset metadata helpers shared by every domain."""

from __future__ import annotations

import dagster as dg
import pandas as pd


def md_preview(
    frame: pd.DataFrame, columns: list[str] | None = None, *, rows: int | None = 20, empty: str = "no rows"
) -> dg.MetadataValue:
    """The first ``rows`` rows (all when None) as a markdown table, for the asset's page in the UI."""
    if not len(frame):
        return dg.MetadataValue.md(empty)
    shown = frame[columns] if columns else frame
    if rows is not None:
        shown = shown.head(rows)
    return dg.MetadataValue.md(shown.to_markdown(index=False))
