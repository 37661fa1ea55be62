"""The connection to the service's database and its schema upgrades.

``Database`` owns one SQLAlchemy async engine: a SQLite file in the data
directory by default (aiosqlite, WAL, foreign keys on), or PostgreSQL (asyncpg)
when ``database.url`` is set. ``start()`` brings the schema to the newest Alembic
revision, so the service upgrades its own schema on start-up. Everything runs on
the event loop; the blocking parts (SQLite, Alembic's migration code) run in the
drivers' own threads or greenlets.

The URL may hold a password: it is only ever logged through
``render_as_string(hide_password=True)``.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.util import CommandError
from sqlalchemy import Connection, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from vms.config import Config
from vms.storage.faults import describe

log = logging.getLogger(__name__)

SQLITE_FILE = "hallwatch.db"
SQLITE_LOCK_WAIT = 5.0
"""Seconds a write waits for another connection's SQLite write lock (``busy_timeout``)."""
CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a new PostgreSQL connection."""

MIGRATION_LOCK = 0x48414C4C
"""PostgreSQL advisory lock key held while migrating, so two instances starting
together do not both upgrade the schema."""


async def advisory_lock(executor: AsyncConnection | AsyncSession, key: int) -> None:
    """Hold PostgreSQL's advisory lock ``key`` until the current transaction ends (waiting
    for another transaction holding it): instances sharing the database take turns."""
    await executor.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


class DatabaseError(Exception):
    """The database could not be opened or its schema could not be upgraded."""


def database_url(config: Config) -> str:
    """The configured ``database.url``, else a SQLite file in ``server.data_dir`` (created if missing)."""
    if config.database.url is not None:
        return config.database.url.get_secret_value()
    data_dir = config.server.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    return URL.create("sqlite+aiosqlite", database=str(data_dir / SQLITE_FILE)).render_as_string(
        hide_password=False
    )


def alembic_config() -> AlembicConfig:
    """Alembic's configuration, built in code: the migrations ship inside the package."""
    cfg = AlembicConfig()
    location = str(Path(str(resources.files("vms.storage") / "migrations")))
    cfg.set_main_option("script_location", location.replace("%", "%%"))
    return cfg


def upgrade_schema(connection: Connection, revision: str = "head") -> None:
    """Run Alembic's upgrade on an open synchronous connection (call through ``run_sync``)."""
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


class Database:
    """One engine and its session factory; ``start()`` then ``session()``, ``stop()`` at the end.

    ``lock_wait``: seconds a SQLite write waits for another connection's write lock."""

    def __init__(self, url: str, *, lock_wait: float = SQLITE_LOCK_WAIT) -> None:
        self._url = make_url(url)
        self._lock_wait = lock_wait
        if self._url.get_backend_name() not in ("sqlite", "postgresql"):
            raise DatabaseError(f"unsupported database {self.safe_url}")
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._answering = True
        self._generation = 0

    @property
    def safe_url(self) -> str:
        """The URL with its password masked, for logs and messages."""
        return self._url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._url.get_backend_name()

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file, or ``None`` for PostgreSQL (or an in-memory SQLite)."""
        if self.dialect != "sqlite" or self._url.database in (None, "", ":memory:"):
            return None
        return Path(str(self._url.database))

    @property
    def url(self) -> URL:
        return self._url

    @property
    def started(self) -> bool:
        return self._engine is not None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("the database is not started")
        return self._engine

    def session(self) -> AsyncSession:
        """A new session; use it as ``async with db.session() as s:``."""
        if self._sessions is None:
            raise RuntimeError("the database is not started")
        return self._sessions()

    def _create_engine(self) -> AsyncEngine:
        engine = self._pooled_engine()
        if self.dialect == "sqlite":
            event.listen(engine.sync_engine, "connect", self._sqlite_pragmas)
        event.listen(engine.sync_engine, "connect", self._stamp)
        event.listen(engine.sync_engine, "checkout", self._refuse_stale)
        return engine

    def _sqlite_pragmas(self, dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={round(self._lock_wait * 1000)}")
        finally:
            cursor.close()

    def _stamp(self, dbapi_connection: Any, record: Any) -> None:
        record.info["generation"] = self._generation

    def _refuse_stale(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if record.info.get("generation") != self._generation:
            # The pool closes this connection properly and hands out a new one.
            raise DisconnectionError("opened before the pool was recycled")

    def _pooled_engine(self) -> AsyncEngine:
        if self.dialect == "sqlite":
            return create_async_engine(self._url, pool_pre_ping=True)
        return create_async_engine(
            self._url,
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=10,
            pool_timeout=CONNECT_TIMEOUT,
            connect_args={"timeout": CONNECT_TIMEOUT},
        )

    async def start(self) -> None:
        """Open the engine and upgrade the schema to the newest revision. Idempotent."""
        if self._engine is not None:
            return
        engine = self._create_engine()
        try:
            async with engine.begin() as conn:
                if self.dialect == "postgresql":
                    await advisory_lock(conn, MIGRATION_LOCK)
                await conn.run_sync(upgrade_schema)
        except CommandError as err:
            await engine.dispose()
            raise DatabaseError(
                f"cannot upgrade the database {self.safe_url} (written by a newer version?): {err}"
            ) from err
        except (SQLAlchemyError, OSError) as err:
            await engine.dispose()
            raise DatabaseError(
                f"cannot open or upgrade the database {self.safe_url}: "
                f"{describe(err, self.sqlite_path.parent if self.sqlite_path else None)}"
            ) from err
        except BaseException:
            await engine.dispose()
            raise
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        log.info("database ready: %s", self.safe_url)

    def recycle(self) -> None:
        """Have every pooled connection replaced: each is closed at its next checkout and a
        new one opened (a SQLite connection opened while the file was read-only stays
        read-only for its life). Connections in use finish their work first."""
        self._generation += 1

    async def stop(self) -> None:
        """Close every pooled connection. Idempotent."""
        engine, self._engine, self._sessions = self._engine, None, None
        if engine is not None:
            await engine.dispose()
            log.info("database closed: %s", self.safe_url)

    async def ping(self, timeout: float = 2.0) -> bool:  # noqa: ASYNC109 (a probe's bound, not a cancel scope)
        """True when ``SELECT 1`` answers within ``timeout`` seconds; False otherwise, never raises."""
        engine = self._engine
        if engine is None:
            return False
        try:
            async with asyncio.timeout(timeout), engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as err:
            if self._answering:
                log.warning("database %s does not answer: %s", self.safe_url, type(err).__name__)
            self._answering = False
            return False
        if not self._answering:
            log.info("database %s answers again", self.safe_url)
        self._answering = True
        self._generation = 0
        return True
