"""Alembic's environment: how migrations reach the database.

The service calls Alembic in code (``vms.storage.database.upgrade_schema``) and
hands over an open connection in ``config.attributes["connection"]``. A developer
may also run the ``alembic`` command with ``alembic.ini`` beside this file; the
URL then comes from ``$HALLWATCH_DATABASE_URL`` (for example
``sqlite+aiosqlite:///data/hallwatch.db``).
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, pool
from sqlalchemy.ext.asyncio import create_async_engine

from vms.storage.tables import Base

target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite alters tables by copying them; batch mode does that for later migrations.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _developer_url() -> str:
    url = os.environ.get("HALLWATCH_DATABASE_URL") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set HALLWATCH_DATABASE_URL to the database to migrate")
    return url


async def _run_with_own_engine() -> None:
    engine = create_async_engine(_developer_url(), poolclass=pool.NullPool)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_configure)
    finally:
        await engine.dispose()


def run_offline() -> None:
    context.configure(url=_developer_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
    else:
        asyncio.run(_run_with_own_engine())


if context.config.config_file_name is not None and "connection" not in context.config.attributes:
    fileConfig(context.config.config_file_name)

if context.is_offline_mode():
    run_offline()
else:
    run_online()
