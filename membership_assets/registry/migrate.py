"""Versioned schema of the members database: Alembic revisions shipped inside the package.

``store.metadata`` is the one definition of the tables the code uses; each revision in
``migrations/versions`` is the frozen step that brings a database to it (a test compares the
migrated schema with the metadata). ``MembersStore.ensure_schema`` upgrades to head under the
sync lock, so the local default and tests migrate by themselves; production applies the same
revisions with ``python -m membership_assets migrate`` (``--sql`` prints them for a DBA instead).

A database created by the pre-Alembic code (``create_all``, no ``alembic_version``) is recognised
by its tables and columns, stamped at the baseline ``0001`` and upgraded from there. Anything else
that holds some of these tables is refused with the differences named: guessing would risk a
voting roll.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

SCRIPT_LOCATION = Path(__file__).with_name("migrations")
BASELINE = "0001"
VERSION_TABLE = "alembic_version"


class SchemaMismatchError(RuntimeError):
    """The database holds a members schema that no revision describes; nothing was changed."""


def _config(connection: sa.Connection | None = None, dialect: str | None = None) -> Config:
    cfg = Config(stdout=io.StringIO())
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    cfg.attributes["connection"] = connection
    cfg.attributes["dialect_name"] = dialect
    return cfg


@cache
def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head() -> str:
    """The one head revision (several heads mean two branches were merged without chaining)."""
    heads = script().get_heads()
    if len(heads) != 1:
        raise SchemaMismatchError(f"migrations have {len(heads)} heads {sorted(heads)}; chain them")
    return heads[0]


def current_revision(conn: sa.Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def check_known(revision: str | None) -> None:
    """A revision this code does not ship means newer code migrated the database: stop."""
    if revision is not None and revision not in {r.revision for r in script().walk_revisions()}:
        raise SchemaMismatchError(
            f"the members database is at revision {revision}, which this code does not know "
            "(was it migrated by a newer release?); deploy that release or restore the schema"
        )


def _baseline():
    return script().get_revision(BASELINE).module


def legacy_differences(conn: sa.Connection) -> list[str] | None:
    """None when no baseline table exists; else how the tables differ from the baseline ([] = same)."""
    inspector = sa.inspect(conn)
    present = set(inspector.get_table_names())
    baseline = {
        name: {item.name for item in items if isinstance(item, sa.Column)}
        for name, items in _baseline().tables().items()
    }
    if not present & set(baseline):
        return None
    problems = []
    for name, columns in baseline.items():
        if name not in present:
            problems.append(f"table {name} missing")
            continue
        found = {c["name"] for c in inspector.get_columns(name)}
        if found != columns:
            problems.append(
                f"table {name}: missing columns {sorted(columns - found)}, unknown columns {sorted(found - columns)}"
            )
    return problems


def upgrade_to_head(conn: sa.Connection) -> tuple[str | None, str]:
    """Bring the database on ``conn`` (which holds the sync lock) to head: (revision before, head)."""
    target = head()
    before = current_revision(conn)
    check_known(before)
    if before is None:
        problems = legacy_differences(conn)
        if problems:
            raise SchemaMismatchError(
                "the members database has tables of this application but no migration history, and "
                "they differ from the pre-migration schema: " + "; ".join(problems)
            )
        if problems == []:  # created by the pre-Alembic create_all: adopt it
            baseline = _baseline()
            if "member_eligibility" not in sa.inspect(conn).get_view_names():
                conn.exec_driver_sql(baseline.ELIGIBILITY_VIEW)
            command.stamp(_config(conn), BASELINE)
            before = "pre-alembic"
    if before != target:
        command.upgrade(_config(conn), "head")
    return before, target


def upgrade_sql(dialect: str, start: str | None = None) -> str:
    """The SQL that upgrades a ``dialect`` database from ``start`` (empty database: None) to head."""
    cfg = _config(dialect=dialect)
    out = io.StringIO()
    cfg.output_buffer = out
    command.upgrade(cfg, f"{start}:head" if start else "head", sql=True)
    return out.getvalue()
