"""Alembic environment of the members database, run by ``membership_assets.registry.migrations``.

Online, the caller hands over a connection that already holds the sync lock (one writer at a
time); offline (``--sql``) the SQL is rendered for the dialect the caller names.
"""

from __future__ import annotations

import os

from alembic import context

from membership_assets.registry.store import metadata

config = context.config

if context.is_offline_mode():
    context.configure(
        dialect_name=config.attributes["dialect_name"],
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    context.configure(
        connection=config.attributes["connection"], target_metadata=metadata, render_as_batch=True
    )
    with context.begin_transaction():
        context.run_migrations()
else:  # the `alembic` command line (alembic.ini), for drafting revisions: MEMBERS_DB_URL, locked
    from membership_assets.registry.store import MembersStore

    with MembersStore.from_url(os.environ["MEMBERS_DB_URL"]).write() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
