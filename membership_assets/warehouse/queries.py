"""Analyst queries shipped with the project: the same SQL runs on DuckDB and on BigQuery."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from .resources import AuditWarehouse

QUERY_DIR = Path(__file__).parent / "queries"
_PARAM = re.compile(r"\{(\w+)\}")


def query_names() -> list[str]:
    return sorted(p.stem for p in QUERY_DIR.glob("*.sql"))


def analyst_sql(name: str, **params: str) -> str:
    """The query's SQL with its parameters filled in; ``{dataset}`` is left to the warehouse."""
    sql = (QUERY_DIR / f"{name}.sql").read_text()
    wanted = set(_PARAM.findall(sql)) - {"dataset"}
    missing = wanted - set(params)
    if missing:
        raise ValueError(f"query {name!r} needs {sorted(missing)}")
    for key, value in params.items():
        if not re.fullmatch(r"[\w:. -]+", value):  # dates and names only: no injection via params
            raise ValueError(f"parameter {key}={value!r} is not a plain value")
        sql = sql.replace("{" + key + "}", value)
    return sql


def run_analyst_query(warehouse: AuditWarehouse, name: str, **params: str) -> pd.DataFrame:
    return warehouse.query(analyst_sql(name, **params))
