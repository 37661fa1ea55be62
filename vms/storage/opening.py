"""Opening the store at start-up, refusing clearly when it cannot take writes.

:func:`open_store` opens the database (migrating it), claims the store's identity
(:mod:`vms.storage.identity`), and proves that writes go through with a first
health check (:mod:`vms.storage.health`). A read-only file, a full disk, a lock
held by another process or a store that vanished stops the start-up with a
:class:`~vms.storage.DatabaseError` or :class:`~vms.storage.identity.StoreLost`
whose message names the fault and the file or data directory.
:func:`startup_problem` runs the same opening once, before the server starts (and asks
the cluster, if any, whether this instance may join), so the command line can print
that message and exit instead of a traceback.
Event loop (``startup_problem`` runs its own).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from vms.cluster import ClusterError, cluster_for
from vms.config import Config
from vms.storage.database import Database, DatabaseError, database_url
from vms.storage.faults import describe
from vms.storage.health import DatabaseHealth
from vms.storage.identity import StoreLost, claim_store, marker_paths

JOURNAL_DIR = "audit-journal"
"""The audit journal's directory inside ``server.data_dir``."""


@dataclass(frozen=True)
class OpenStore:
    db: Database
    health: DatabaseHealth
    store_id: str
    markers: list[Path]


def _where(db: Database) -> str:
    path = db.sqlite_path
    return f"the database file {path}" if path is not None else f"the database {db.safe_url}"


async def open_store(config: Config) -> OpenStore:
    """Open, claim and check the store; the caller stops ``health`` then ``db``."""
    data_dir = config.server.data_dir.resolve()
    try:
        db = Database(database_url(config), lock_wait=config.database.sqlite_lock_wait)
    except OSError as err:
        raise DatabaseError(f"cannot create the data directory {data_dir}: {describe(err)}") from err
    await db.start()
    try:
        markers = marker_paths(data_dir, config.server.store_marker)
        try:
            store_id = await claim_store(db, markers)
        except SQLAlchemyError as err:
            raise DatabaseError(f"cannot write to {_where(db)}: {describe(err, data_dir)}") from err
        health = DatabaseHealth(db)
        reason = await health.start()
        if reason is not None:
            await health.stop()
            where = _where(db)
            raise DatabaseError(f"cannot write to {where} (data directory {data_dir}): {reason}")
    except BaseException:
        await db.stop()
        raise
    return OpenStore(db, health, store_id, markers)


async def close_store(store: OpenStore) -> None:
    """Stop the health checks, then close the database."""
    await store.health.stop()
    await store.db.stop()


async def _try_open(config: Config) -> None:
    store = await open_store(config)
    try:
        cluster = cluster_for(config, store.db)
        if cluster is not None:
            await cluster.check()
    finally:
        await close_store(store)


def startup_problem(config: Config) -> str | None:
    """Why the service cannot start on this store, or in its cluster (a message for people),
    or ``None``."""
    try:
        asyncio.run(_try_open(config))
    except (DatabaseError, StoreLost, ClusterError) as err:
        return str(err)
    return None
