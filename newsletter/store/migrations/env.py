"""Alembic's entry point for the newsletter schema.

``newsletter.store.migrations.upgrade_database`` runs it on a connection it has already
locked and opened a transaction on (``config.attributes["connection"]``), so the whole
upgrade is one transaction it commits. Run by hand (``alembic`` with a config whose
``sqlalchemy.url`` is set) it opens its own connection.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from newsletter.store.migrations import VERSION_TABLE
from newsletter.store.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is not None:
    _run(given)
else:
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()
