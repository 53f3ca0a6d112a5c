"""Members database preflight: reachable, and its schema at the code's Alembic head.

Only reads (a connection, Alembic's version table); never migrates, never creates a SQLite file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..privacy import redact_url
from ..registry import migrate
from .core import Check, fail, ok, safe_error

SYSTEM = "Members DB"
MIGRATE = "python -m membership_assets migrate"


def check_members_db(members_db: Any) -> list[Check]:
    url = members_db.connection_url
    shown = redact_url(members_db.url)
    sqlite_file = sa.engine.make_url(url).database if url.startswith("sqlite") else None
    if sqlite_file and sqlite_file != ":memory:" and not Path(sqlite_file).exists():
        return [
            fail(SYSTEM, "reachable", f"{shown} does not exist yet", f"run `{MIGRATE}` (or the first run)")
        ]
    engine = sa.create_engine(url, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            current = migrate.current_revision(conn)
    except Exception as exc:  # noqa: BLE001 - any driver error means unreachable
        return [fail(SYSTEM, "reachable", safe_error(exc), "check MEMBERS_DB_URL and MEMBERS_DB_PASSWORD")]
    finally:
        engine.dispose()
    return [ok(SYSTEM, "reachable", shown), revision_check(current, migrate.head())]


def revision_check(current: str | None, head: str) -> Check:
    if current == head:
        return ok(SYSTEM, "schema", f"Alembic revision {current} (head)")
    try:
        migrate.check_known(current)
    except migrate.SchemaMismatchError as exc:
        return fail(SYSTEM, "schema", str(exc), "deploy the release that migrated it")
    return fail(SYSTEM, "schema", f"revision {current or 'none'}, head is {head}", f"run `{MIGRATE}`")
