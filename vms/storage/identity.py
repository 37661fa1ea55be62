"""Which store this is, so that a store that vanished is never silently replaced.

The database keeps a random ``store_id`` (table ``store_state``), written when a
store is first claimed. The same id goes into marker files: ``store-id`` in the
data directory and, when ``server.store_marker`` names one, a file outside it
(another disk, ``/etc``), which survives the removal of the whole data directory.

At start-up :func:`claim_store` compares them. An empty database (no identity,
no user) under a marker means the store that was there is gone (the SQLite file
was deleted, the PostgreSQL database dropped or replaced): the start is refused
with :class:`StoreLost`, before any first administrator could be created over it,
until the operator restores the data or deletes the markers to start afresh. A
database whose identity differs from a marker (a restored backup of another
store) starts, with an error in the log, and the markers are rewritten.

When the running service sees its database file removed (:mod:`vms.storage.health`),
:func:`leave_tombstone` writes the markers again (re-creating the data directory
if it must), so a restart over the emptied directory is refused too.
Event loop (the file writes are tiny and synchronous).
"""

from __future__ import annotations

import logging
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from vms.storage.database import MIGRATION_LOCK, Database, advisory_lock
from vms.storage.tables import StoreState, User

log = logging.getLogger(__name__)

MARKER_NAME = "store-id"


class StoreLost(Exception):
    """The markers name a store that the database no longer holds; the message says what to do."""


def marker_paths(data_dir: Path, outside: Path | None = None) -> list[Path]:
    """Where the markers live: the data directory, then ``outside`` if configured."""
    paths = [data_dir / MARKER_NAME]
    if outside is not None:
        paths.append(outside)
    return paths


def read_marker(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        log.error("cannot read the store marker %s: %s", path, err)
        return None
    return text or None


def write_marker(path: Path, store_id: str) -> bool:
    """Write ``store_id`` to ``path`` durably (temp file, fsync, rename); False (logged) on failure."""
    temp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "w", encoding="ascii") as out:
            out.write(store_id + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as err:
        log.error("cannot write the store marker %s: %s", path, err.strerror or err)
        return False
    return True


async def claim_store(db: Database, markers: list[Path]) -> str:
    """The store's id, created on first use; :class:`StoreLost` when the markers name a store
    that this empty database is not. Writes the markers that are missing or stale."""
    found = {path: mark for path in markers if (mark := read_marker(path)) is not None}
    now = datetime.now(UTC)
    async with db.session() as s, s.begin():
        if db.dialect == "postgresql":  # instances starting together on an empty store: one creates it
            await advisory_lock(s, MIGRATION_LOCK)
        row = await s.get(StoreState, 1)
        if row is None:
            users = await s.scalar(select(func.count()).select_from(User)) or 0
            if found and not users:
                raise StoreLost(_lost_message(db, found))
            row = StoreState(id=1, store_id=uuid.uuid4().hex, created_at=now, heartbeat_at=now)
            s.add(row)
            log.info("new store %s in %s", row.store_id, db.safe_url)
        store_id = row.store_id
    for path in markers:
        mark = found.get(path)
        if mark is not None and mark != store_id:
            log.error(
                "the database %s holds store %s but the marker %s names store %s: "
                "a different store (a restored backup?) is now in use; the marker is rewritten",
                db.safe_url,
                store_id,
                path,
                mark,
            )
        if mark != store_id:
            write_marker(path, store_id)
    return store_id


def leave_tombstone(markers: list[Path], store_id: str) -> None:
    """Write the markers again after the store's file vanished, so a restart is refused."""
    for path in markers:
        if read_marker(path) != store_id and write_marker(path, store_id):
            log.error("the store %s vanished; marker %s written so that a restart stops", store_id, path)


def _lost_message(db: Database, found: dict[Path, str]) -> str:
    names = ", ".join(str(path) for path in found)
    ids = ", ".join(sorted(set(found.values())))
    return (
        f"the database {db.safe_url} is empty, but the marker(s) {names} say store {ids} was kept here: "
        "its data was removed or replaced. Refusing to start, so that no first administrator is "
        "created over a lost audit trail. Restore the database (and data directory) from a backup; "
        f"or, to start afresh with new first administrators, delete {names}."
    )
