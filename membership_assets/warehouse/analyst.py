"""Analysts' access to the audit history, without direct identifiers.

The audit dataset holds kennitalas, names and emails (it is where they belong); analysts read an
*analyst dataset* (``{dataset}_analyst``) of views instead: every audit table, minus names and
emails, with each kennitala replaced by ``member_key``, the keyed pseudonym logs and alerts show
(``privacy.pseudonym``), so a finding can be handed to an administrator who can look the member
up. The key lives in ``{dataset}._pseudonym_key``, a table in the restricted dataset the views
read and analysts cannot; on BigQuery the views are *authorized views* of that dataset, so
analysts need access to the analyst dataset only.
"""

from __future__ import annotations

from .schema import DIRECT_IDENTIFIER_COLUMNS, KENNITALA_COLUMNS, TABLES, Table

KEY_TABLE = "_pseudonym_key"
PSEUDONYM_HEX = 16  # privacy.PSEUDONYM_LENGTH


def analyst_dataset(dataset: str) -> str:
    return f"{dataset}_analyst"


def _member_key(column: str, dialect: str) -> str:
    normalized = f"REPLACE(REPLACE(t.{column}, '-', ''), ' ', '')"
    if dialect == "bigquery":
        digest = f"TO_HEX(SHA256(CONCAT(k.secret, ':', {normalized})))"
    else:
        digest = f"sha256(k.secret || ':' || {normalized})"  # DuckDB: hex text already
    return f"SUBSTR({digest}, 1, {PSEUDONYM_HEX})"


def analyst_columns(table: Table, dialect: str) -> list[str]:
    """The view's select list: identifiers out, pseudonyms and change flags in."""
    names = table.column_names
    out = []
    for name in names:
        if name in KENNITALA_COLUMNS:
            out.append(f"{_member_key(name, dialect)} AS member_key")
        elif name in DIRECT_IDENTIFIER_COLUMNS:
            field = name.removeprefix("new_")
            if name.startswith("new_") and f"old_{field}" in names:
                out.append(f"(t.old_{field} IS DISTINCT FROM t.new_{field}) AS {field}_changed")
        else:
            out.append(f"t.{name}")
    return out


def view_sql(table: Table, *, source: str, key: str, view: str, dialect: str) -> str:
    """CREATE OR REPLACE VIEW ``view`` over ``source`` (both fully quoted by the caller)."""
    select = ",\n       ".join(analyst_columns(table, dialect))
    join = f" CROSS JOIN {key} AS k" if any(c in KENNITALA_COLUMNS for c in table.column_names) else ""
    return f"CREATE OR REPLACE VIEW {view} AS\nSELECT {select}\nFROM {source} AS t{join}"


def all_tables() -> list[Table]:
    return list(TABLES.values())
