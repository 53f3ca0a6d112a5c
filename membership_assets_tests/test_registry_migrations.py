"""Versioned migrations of the members database (Alembic), on SQLite and Postgres."""

from __future__ import annotations

import threading
import tomllib
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from membership_assets.__main__ import main
from membership_assets.registry import migrate
from membership_assets.registry.store import MembersStore, SyncLogEntry, metadata

KT = "0101302989"


def _pre_alembic_schema(conn: sa.Connection) -> None:
    """What ``ensure_schema`` created before migrations existed (frozen copy of that code)."""
    meta = sa.MetaData()
    ts = sa.DateTime(timezone=True)
    json = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
    sa.Table(
        "members",
        meta,
        sa.Column("kennitala", sa.String(10), primary_key=True),
        sa.Column("name", sa.String(255)),
        sa.Column("email", sa.String(255)),
        sa.Column("status", sa.String(50), nullable=False, server_default="active"),
        sa.Column("source", sa.String(50), nullable=False, server_default="django"),
        sa.Column("synced_at", ts),
        sa.Column("sync_id", sa.String(36)),
        sa.Column("created_at", ts, server_default=sa.func.current_timestamp()),
        sa.Index("idx_members_status_synced", "status", "synced_at"),
    )
    log = sa.Table(
        "membership_sync_log",
        meta,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("sync_time", ts, nullable=False),
        sa.Column("source", sa.String(50)),
        sa.Column("status", sa.String(50)),
        sa.Column("dry_run", sa.Boolean, nullable=False, server_default=sa.false()),
        *(
            sa.Column(c, sa.Integer)
            for c in (
                "members_fetched",
                "members_added",
                "members_removed",
                "members_updated",
                "members_rejected",
            )
        ),
        sa.Column("errors", json),
        sa.Column("duration_ms", sa.Integer),
        sa.Column("run_id", sa.String(64)),
        sa.Column("rolled_back_sync_id", sa.String(36)),
        sa.Column("created_at", ts, server_default=sa.func.current_timestamp()),
    )
    sa.Index("idx_sync_log_time", log.c.sync_time.desc())
    sa.Table(
        "membership_changes",
        meta,
        sa.Column("sync_id", sa.String(36), primary_key=True),
        sa.Column("kennitala", sa.String(10), primary_key=True),
        sa.Column("change_kind", sa.String(20), nullable=False),
        *(
            sa.Column(f"{a}_{b}", sa.String(255 if b != "status" else 50))
            for a in ("old", "new")
            for b in ("name", "email", "status")
        ),
        sa.Column("changed_at", ts, nullable=False),
    )
    sa.Table(
        "member_rejects",
        meta,
        sa.Column("sync_id", sa.String(36), primary_key=True),
        sa.Column("row_number", sa.Integer, primary_key=True),
        sa.Column("kennitala_raw", sa.String(64)),
        sa.Column("kennitala", sa.String(10)),
        sa.Column("name", sa.String(255)),
        sa.Column("email", sa.String(255)),
        sa.Column("status", sa.String(50)),
        sa.Column("reasons", sa.Text),
        sa.Column("rejected_at", ts, nullable=False),
    )
    meta.create_all(conn)
    conn.exec_driver_sql(
        "CREATE VIEW member_eligibility AS SELECT kennitala, name, email, status, "
        "CASE WHEN status = 'active' THEN TRUE ELSE FALSE END AS eligible, synced_at "
        "FROM members WHERE status IN ('active', 'suspended')"
    )


def _schema_drift(store: MembersStore) -> list:
    """Differences between the migrated database and ``store.metadata`` (other tables ignored)."""

    def ours(name, kind, _parent) -> bool:
        return kind != "table" or name in metadata.tables

    with store.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"include_name": ours}), metadata)


def _version(store: MembersStore) -> str | None:
    with store.engine.connect() as conn:
        return migrate.current_revision(conn)


@pytest.fixture
def empty_store(members_db_url):
    s = MembersStore.from_url(members_db_url)
    yield s
    s.engine.dispose()


def test_upgrade_from_an_empty_database_builds_the_schema_the_code_uses(empty_store):
    assert empty_store.ensure_schema() == (None, migrate.head())
    assert _version(empty_store) == migrate.head()
    assert _schema_drift(empty_store) == []
    with empty_store.engine.connect() as conn:
        assert "member_eligibility" in sa.inspect(conn).get_view_names()
    assert empty_store.eligibility_counts() == (0, 0)
    # Applying again changes nothing and takes no lock.
    assert empty_store.ensure_schema() == (migrate.head(), migrate.head())


def test_a_pre_alembic_database_is_adopted_with_its_data(empty_store):
    now = datetime.now(timezone.utc)
    with empty_store.write() as conn:
        _pre_alembic_schema(conn)
        conn.execute(
            sa.text("INSERT INTO members (kennitala, name, status) VALUES (:k, 'Anna', 'active')"), {"k": KT}
        )
        conn.execute(
            sa.text("INSERT INTO membership_sync_log (id, sync_time, status) VALUES ('s1', :t, 'success')"),
            {"t": now},
        )
    assert _version(empty_store) is None
    before, head = empty_store.ensure_schema()
    assert (before, head) == ("pre-alembic", migrate.head())
    assert _version(empty_store) == migrate.head()
    assert _schema_drift(empty_store) == []
    assert empty_store.is_eligible(KT)
    assert empty_store.last_applied_sync()["id"] == "s1"
    # And it keeps working as a migrated database.
    empty_store.record_failure(SyncLogEntry(id="s2", source="manual", status="failed"))
    assert empty_store.log_entry("s2")["status"] == "failed"


def test_an_unknown_members_schema_is_refused_untouched(empty_store):
    with empty_store.write() as conn:
        conn.exec_driver_sql("CREATE TABLE members (kennitala VARCHAR(10) PRIMARY KEY, vote BOOLEAN)")
    with pytest.raises(migrate.SchemaMismatchError, match="members"):
        empty_store.ensure_schema()
    with empty_store.engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    assert tables == {"members"}  # nothing created, no history stamped


def test_unrelated_tables_in_the_same_database_are_left_alone(empty_store):
    with empty_store.write() as conn:
        conn.exec_driver_sql("CREATE TABLE membership_comrade (id INTEGER PRIMARY KEY, ssn VARCHAR(10))")
    try:
        assert empty_store.ensure_schema() == (None, migrate.head())
        with empty_store.engine.connect() as conn:
            assert "membership_comrade" in sa.inspect(conn).get_table_names()
        assert _schema_drift(empty_store) == []
    finally:
        with empty_store.write() as conn:
            conn.exec_driver_sql("DROP TABLE membership_comrade")


def test_concurrent_first_starts_migrate_once(members_db_url):
    stores = [MembersStore.from_url(members_db_url) for _ in range(3)]
    results, errors = [], []

    def start(s: MembersStore) -> None:
        try:
            results.append(s.ensure_schema())
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.engine.dispose()
    assert errors == []
    assert sorted(results, key=str) == sorted(
        [(None, migrate.head())] + [(migrate.head(), migrate.head())] * 2, key=str
    )


def test_baseline_downgrades_and_upgrades_again(empty_store):
    from alembic import command

    empty_store.ensure_schema()
    with empty_store.write() as conn:
        command.downgrade(migrate._config(conn), "base")
    with empty_store.engine.connect() as conn:
        assert not {t.name for t in metadata.sorted_tables} & set(sa.inspect(conn).get_table_names())
    assert empty_store.ensure_schema() == (None, migrate.head())


def test_migrate_command_applies_checks_and_prints_sql(members_db_url, capsys):
    assert main(["migrate", "--url", members_db_url, "--check"]) == 1
    assert main(["migrate", "--url", members_db_url]) == 0
    assert f"to {migrate.head()}" in capsys.readouterr().out
    assert main(["migrate", "--url", members_db_url, "--check"]) == 0
    assert main(["migrate", "--sql"]) == 0
    sql = capsys.readouterr().out
    assert "CREATE TABLE members" in sql and "CREATE VIEW member_eligibility" in sql
    assert "alembic_version" in sql


def test_migration_files_ship_in_the_wheel():
    """Every file of the migrations directory is matched by the package-data globs."""
    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "membership_assets"
    ]
    package = root / "membership_assets"
    files = [
        p.relative_to(package).as_posix()
        for p in migrate.SCRIPT_LOCATION.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]

    def shipped(f: str) -> bool:  # setuptools globs: '*' never crosses a directory
        return any(
            len(PurePosixPath(g).parts) == f.count("/") + 1 and PurePosixPath(f).match(g) for g in globs
        )

    assert files and all(shipped(f) for f in files), files


def test_production_runs_refuse_an_unmigrated_database_and_name_the_command(members_db_url):
    from membership_assets.registry.resources import MembersDatabase

    with pytest.raises(migrate.SchemaMismatchError, match="python -m membership_assets migrate"):
        MembersDatabase(url=members_db_url, auto_migrate=False).store()
    assert main(["migrate", "--url", members_db_url]) == 0
    store = MembersDatabase(url=members_db_url, auto_migrate=False).store()
    assert store.eligibility_counts() == (0, 0)
    store.engine.dispose()


def test_a_database_migrated_by_newer_code_is_refused(empty_store):
    empty_store.ensure_schema()
    with empty_store.write() as conn:
        conn.execute(sa.text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(migrate.SchemaMismatchError, match="9999.*newer release"):
        empty_store.ensure_schema()
