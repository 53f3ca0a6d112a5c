"""Asset metadata helpers shared by every domain."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields

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


def table_schema(columns: Iterable[tuple[str, str, str]]) -> dg.TableSchema:
    """A column schema for the asset's page in the UI from (name, type, description) triples."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, type_, description=description or None)
            for name, type_, description in columns
        ]
    )


def dataclass_columns(cls: type, descriptions: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(name, type, description) of a record dataclass's fields, as its DataFrame has them."""
    return [(f.name, _column_type(str(f.type)), descriptions.get(f.name, "")) for f in fields(cls)]


def _column_type(annotation: str) -> str:
    for python, column in (("bool", "bool"), ("int", "int"), ("float", "float"), ("str", "string")):
        if annotation.startswith(python):
            return column
    return "string"
