"""Analysts read the audit history through views without kennitalas, names or emails."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from membership_assets.privacy import pseudonym
from membership_assets.warehouse.analyst import analyst_dataset
from membership_assets.warehouse.schema import DIRECT_IDENTIFIER_COLUMNS, KENNITALA_COLUMNS, TABLES

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
RUN = "0131fb5f-0000-4000-8000-000000000001"


def _write_personal_rows(warehouse) -> None:
    base = {"run_id": RUN, "run_started_at": NOW, "sync_id": RUN}
    warehouse.write(
        "registry_members_raw",
        pd.DataFrame(
            [
                {
                    **base,
                    "row_number": 1,
                    "kennitala": "120174-3399",
                    "name": "Jón Jónsson",
                    "email": "jon@example.is",
                    "status": "active",
                },
                {
                    **base,
                    "row_number": 2,
                    "kennitala": "0101302989",
                    "name": "Anna Sig",
                    "email": "anna@example.is",
                    "status": "active",
                },
            ]
        ),
    )
    warehouse.write(
        "membership_deltas",
        pd.DataFrame(
            [
                {
                    **base,
                    "kennitala": "1201743399",
                    "change_kind": "changed",
                    "old_name": "Jón Jónsson",
                    "new_name": "Jón Jónsson",
                    "old_email": "jon@example.is",
                    "new_email": "jon@new.is",
                    "old_status": "active",
                    "new_status": "active",
                    "dry_run": False,
                },
            ]
        ),
    )
    warehouse.write(
        "ab_people",
        pd.DataFrame(
            [
                {
                    "run_id": RUN,
                    "run_started_at": NOW,
                    "person_id": "p-1",
                    "entity_type": "Person",
                    "given_name": "Anna",
                    "family_name": "Sigurðardóttir",
                }
            ]
        ),
    )


def test_analyst_views_carry_pseudonyms_and_no_direct_identifiers(audit_warehouse):
    _write_personal_rows(audit_warehouse)
    views = audit_warehouse.publish_analyst_views()
    analyst = analyst_dataset(audit_warehouse.dataset)
    assert sorted(views) == sorted(f"{analyst}.{t}" for t in TABLES)

    def view(table: str) -> pd.DataFrame:
        sql = f"SELECT * FROM {{dataset}}.{table}".replace("{dataset}", "{analyst}")
        if audit_warehouse.kind == "duckdb":
            return audit_warehouse.query(sql.replace("{analyst}", f'"{analyst}"'))
        return audit_warehouse.query(sql.replace("{analyst}", f"`membership-test.{analyst}`"))

    for table in TABLES:
        columns = set(view(table).columns)
        assert not columns & (DIRECT_IDENTIFIER_COLUMNS | KENNITALA_COLUMNS), table
    members = view("registry_members_raw").sort_values("row_number")
    # The same pseudonym the logs show, whichever way the kennitala was written.
    assert list(members["member_key"]) == [pseudonym("1201743399"), pseudonym("0101302989")]
    delta = view("membership_deltas")
    assert delta["member_key"][0] == pseudonym("1201743399")
    assert (bool(delta["name_changed"][0]), bool(delta["email_changed"][0])) == (False, True)
    people = view("ab_people")
    assert list(people["person_id"]) == ["p-1"] and "given_name" not in people.columns
    shown = "".join(view(t).astype(str).to_csv() for t in ("registry_members_raw", "membership_deltas"))
    for leak in ("1201743399", "120174-3399", "Jón", "jon@", "anna@", "0101302989"):
        assert leak not in shown
