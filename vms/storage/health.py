"""Whether the database takes writes now, and why not: the truth behind ``/readyz``.

A ``SELECT 1`` answers while another process holds the write lock, while the
disk is full and while the file is read-only, so :class:`DatabaseHealth` writes:
each check rewrites the heartbeat row of ``store_state`` in a short transaction
with a deadline. On SQLite it does so on a fresh connection (``mode=rw``, so a
removed file is not silently re-created), which takes the write lock; it also
compares the file's identity (device and inode) with the one seen at start, checks
that the file is still writable for this process, and the free space of its disk.
A failed check is named by :mod:`vms.storage.faults`.

Checks run every ``interval`` seconds in a task this object owns, and on demand
(each ``/readyz``) when the last result is older than ``max_age``; requests that
arrive during a check share its result, so a burst of probes costs one write. The pool is
recycled when a fault begins, before each check during a fault and when it ends:
connections opened during a fault (a read-only SQLite connection stays read-only,
and keeps the process's other connections to the file read-only) do not outlive it. After each
good check the ``on_healthy`` callbacks run (the audit journal's replay).
Event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, pool, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from vms.storage.database import Database
from vms.storage.faults import GONE, MIN_FREE_BYTES, NO_ANSWER, READ_ONLY, describe, disk_fault, fault_of
from vms.storage.tables import StoreState

log = logging.getLogger(__name__)

CHECK_INTERVAL = 2.0
"""Seconds between two background checks."""
CHECK_TIMEOUT = 3.0
"""Seconds a heartbeat write may take before the database counts as not answering."""
LOCK_WAIT_MS = 1000
"""How long the SQLite heartbeat waits for the write lock before it counts as locked."""

FileIdentity = tuple[int, int]
_UNCHECKED = "the database has not been checked yet"


def file_identity(path: Path) -> FileIdentity | None:
    """``(st_dev, st_ino)`` of ``path``, ``None`` when it does not exist."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def _heartbeat_engine(path: Path) -> AsyncEngine:
    engine = create_async_engine(f"sqlite+aiosqlite:///file:{path}?mode=rw&uri=true", poolclass=pool.NullPool)

    def pragmas(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={LOCK_WAIT_MS}")
        finally:
            cursor.close()

    event.listen(engine.sync_engine, "connect", pragmas)
    return engine


class DatabaseHealth:
    """See the module docstring: ``start()``, ``reason()``/``current()``, ``async stop()``."""

    def __init__(
        self,
        db: Database,
        *,
        interval: float = CHECK_INTERVAL,
        timeout: float = CHECK_TIMEOUT,
        max_age: float = 0.0,
        min_free_bytes: int = MIN_FREE_BYTES,
    ) -> None:
        self.db = db
        self.interval = interval
        self.timeout = timeout
        self.max_age = max_age
        self.min_free_bytes = min_free_bytes
        self._path = db.sqlite_path
        self._identity: FileIdentity | None = None
        self._beat: AsyncEngine | None = None
        self._reason: str | None = _UNCHECKED
        self._checked = float("-inf")
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._on_healthy: list[Callable[[], Awaitable[object]]] = []
        self._on_fault: list[Callable[[str], None]] = []

    @property
    def ok(self) -> bool:
        """The last check's verdict (no new check)."""
        return self._reason is None

    @property
    def reason(self) -> str | None:
        """Why the last check failed, ``None`` when it passed."""
        return self._reason

    def on_healthy(self, callback: Callable[[], Awaitable[object]]) -> None:
        """Run ``callback`` after every good check (in the checking task; keep it bounded)."""
        self._on_healthy.append(callback)

    def on_fault(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` when writes start failing (synchronous, quick)."""
        self._on_fault.append(callback)

    async def start(self) -> str | None:
        """Note the file's identity, run a first check (its reason is returned), start checking."""
        if self._path is not None:
            self._identity = file_identity(self._path)
            self._beat = _heartbeat_engine(self._path)
        reason = await self.check()
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="database-health")
        return reason

    async def stop(self) -> None:
        """Stop checking and close the heartbeat's engine. Idempotent."""
        task, self._task = self._task, None
        self._stopping.set()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        beat, self._beat = self._beat, None
        if beat is not None:
            await beat.dispose()

    async def current(self) -> str | None:
        """The reason writes fail now (``None`` if they work): the cheap facts (database
        open, file identity) every time, the write when the last one is older than ``max_age``."""
        if time.monotonic() - self._checked > self.max_age or self._cheap_fault() != self._reason:
            return await self.check()
        return self._reason

    async def check(self) -> str | None:
        """Check now (callers at the same time share one check); the reason, or ``None``."""
        started = time.monotonic()
        async with self._lock:
            if self._checked >= started:
                return self._reason  # checked while this call waited
            reason = await self._probe()
            self._checked = time.monotonic()
            before, self._reason = self._reason, reason
        if reason != before:
            await self._changed(reason, first=before is _UNCHECKED)
        return reason

    async def _changed(self, reason: str | None, *, first: bool) -> None:
        if reason is None:
            if not first:
                log.warning("database %s takes writes again", self.db.safe_url)
        else:
            log.error("database %s cannot take writes: %s", self.db.safe_url, reason)
            for callback in self._on_fault:
                callback(reason)
        self.db.recycle()

    def explain(self, err: BaseException) -> str:
        """Why a write failed with ``err``: its named fault, else what the file and disk show
        (SQLite says "disk I/O error" when a full disk leaves no room for its shared memory)."""
        return fault_of(err) or self._cheap_fault() or describe(err)

    def _cheap_fault(self) -> str | None:
        """What can be seen without writing: a closed database, a file gone or replaced, a full disk."""
        if not self.db.started:
            return NO_ANSWER
        if self._path is not None:
            if self._identity is None or file_identity(self._path) != self._identity:
                return GONE
            # SQLite reuses a closed connection's descriptor for a new one to the same file, so a
            # fresh connection alone does not see a file made read-only under the running process.
            if not os.access(self._path, os.W_OK) or not self._side_files_writable():
                return READ_ONLY
            return disk_fault(self._path.parent, self.min_free_bytes)
        return None

    def _side_files_writable(self) -> bool:
        """The write-ahead log and shared-memory files are writable, made so if they can be.

        SQLite creates them with the database file's mode: while the file was read-only they
        were made read-only too, and they would keep every connection read-only after the
        file's mode is restored. They follow the file's mode again where this process may."""
        assert self._path is not None
        for suffix in ("-wal", "-shm"):
            side = self._path.with_name(self._path.name + suffix)
            if not side.exists() or os.access(side, os.W_OK):
                continue
            try:
                os.chmod(side, stat.S_IMODE(os.stat(self._path).st_mode))
            except OSError as err:
                log.error("%s is read-only and cannot be made writable: %s", side, err.strerror)
                return False
            log.warning("%s was left read-only; it follows the database file's mode again", side)
        return True

    async def _probe(self) -> str | None:
        fault = self._cheap_fault()
        if fault is not None:
            return fault
        if self._reason not in (None, _UNCHECKED):
            # Close the pool before testing for recovery: SQLite shares one read-only view of its
            # shared memory among every connection of the process to the file, so one connection
            # left from the fault keeps new ones read-only too.
            self.db.recycle()
        engine = self._beat or self.db.engine
        try:
            async with asyncio.timeout(self.timeout), engine.begin() as conn:
                result = await conn.execute(
                    update(StoreState).where(StoreState.id == 1).values(heartbeat_at=datetime.now(UTC))
                )
                if not getattr(result, "rowcount", 1):
                    return GONE  # the store's own row went: not the store we opened
        except TimeoutError:
            return NO_ANSWER
        except Exception as err:  # any failure is the answer, never a crash of the check
            return self.explain(err)
        return None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)
                return
            reason = await self.check()
            if reason is not None:
                continue
            for callback in self._on_healthy:
                try:
                    await callback()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("a task run after a good database check failed")
