"""The database: schema upgrades at start-up, the schema matching the models, ping."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from tests.db_fixtures import PostgresServer
from vms.config import Config
from vms.storage import Database, DatabaseError, database_url
from vms.storage.tables import Base


def _schema_diff(conn: Connection) -> list[object]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


async def test_migrated_schema_matches_the_models(database: Database) -> None:
    async with database.engine.connect() as conn:
        assert await conn.run_sync(_schema_diff) == []
        tables = await conn.run_sync(_tables)
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
    assert tables == {*Base.metadata.tables, "alembic_version"}
    assert version == "0013"


async def test_second_start_is_a_no_op(database_url: str) -> None:
    first = Database(database_url)
    await first.start()
    await first.start()  # the same object: nothing happens
    async with first.session() as session:
        await session.execute(
            text("INSERT INTO audit_events (at, action) VALUES (CURRENT_TIMESTAMP, 'logout')")
        )
        await session.commit()
    await first.stop()
    await first.stop()

    second = Database(database_url)
    await second.start()  # an upgraded database: upgrade finds nothing to do, data stays
    try:
        async with second.engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM audit_events"))).scalar_one()
            assert await conn.run_sync(_schema_diff) == []
        assert count == 1
    finally:
        await second.stop()


async def test_a_schema_from_a_newer_version_is_refused(database_url: str) -> None:
    db = Database(database_url)
    await db.start()
    async with db.engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    await db.stop()
    with pytest.raises(DatabaseError, match="newer version"):
        await db.start()
    assert not await db.ping()


async def test_dialect_and_sqlite_pragmas(database: Database) -> None:
    assert database.dialect in ("sqlite", "postgresql")
    if database.dialect != "sqlite":
        return
    async with database.engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
        assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
        assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one() == 5000


async def test_the_sqlite_lock_wait_is_the_busy_timeout(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'hallwatch.db'}", lock_wait=0.25)
    await db.start()
    try:
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one() == 250
    finally:
        await db.stop()


async def test_ping_follows_the_database(database: Database, request: pytest.FixtureRequest) -> None:
    assert await database.ping()
    if database.dialect == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        server.stop()
        try:
            assert not await database.ping(timeout=2.0)
        finally:
            server.start()
        assert await database.ping()  # stale pooled connections are replaced
    await database.stop()
    assert not await database.ping()


async def test_ping_is_bounded_by_its_timeout() -> None:
    # A listener that never answers: the connect hangs, the ping must not.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        db = Database(f"postgresql+asyncpg://hallwatch:secret@127.0.0.1:{port}/hallwatch")
        # Hand it an engine without migrating: start() would wait for the silent server.
        db._engine = db._create_engine()
        try:
            began = time.monotonic()
            assert not await db.ping(timeout=0.3)
            assert time.monotonic() - began < 1.5
        finally:
            await db.stop()


async def test_start_failure_names_the_database_without_its_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    db = Database(f"postgresql+asyncpg://hallwatch:s3cret-pw@127.0.0.1:{port}/hallwatch")
    with caplog.at_level(logging.DEBUG), pytest.raises(DatabaseError) as raised:
        await db.start()
    assert f"127.0.0.1:{port}" in str(raised.value)
    assert "s3cret-pw" not in str(raised.value)
    assert "s3cret-pw" not in caplog.text
    assert not await db.ping()
    await db.stop()


def test_default_url_is_a_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    config = Config.model_validate({"server": {"data_dir": str(tmp_path / "state")}})
    url = database_url(config)
    assert url == f"sqlite+aiosqlite:///{tmp_path / 'state' / 'hallwatch.db'}"
    assert (tmp_path / "state").is_dir()


def test_configured_url_wins(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://hallwatch:pw@db.example:5432/hallwatch"
    config = Config.model_validate({"server": {"data_dir": str(tmp_path)}, "database": {"url": url}})
    assert database_url(config) == url
    assert Database(url).safe_url == "postgresql+asyncpg://hallwatch:***@db.example:5432/hallwatch"


async def test_sqlite_file_is_created_and_reused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hallwatch.db'}"
    db = Database(url)
    await db.start()
    await db.stop()
    assert (tmp_path / "hallwatch.db").is_file()
    again = Database(url)
    await asyncio.wait_for(again.start(), 10)
    assert await again.ping()
    await again.stop()
