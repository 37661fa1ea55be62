"""Who watched what: viewing sessions turned into audit records.

Each WebRTC session is remembered from its offer (who, which camera, from
where, when) until the media plane reports its end, when one ``view`` record
with start, end, duration and bytes is written. MJPEG viewers are recorded by
their route the same way, and so is each playback of recordings (``playback``).
Sessions torn down by a vanished browser end in the media plane like any other,
so they are recorded too.

Media-plane callbacks are synchronous, so records go through a bounded queue
drained by one writer task that this object owns; ``stop()`` drains it. A snapshot
is recorded before it is served (:meth:`ViewingRecorder.record_now`).

No viewing record is lost to a database fault: when the database cannot take a
record (or the health check already says so, or older records still wait), it is
appended to the local journal (:mod:`vms.storage.journal`, fsync'd) and replayed
into the database after the next good health check; each record's unique id makes
the replay idempotent. When neither can take it, :meth:`record_now` raises
:class:`RecordRefused` and the action that needs the record is refused, and
:meth:`check_recordable` lets a new live session be refused before it starts.
Event loop only; journal files are written in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streams import WhepSession
from vms.access import Principal
from vms.audit import AuditError, AuditLog
from vms.storage.health import DatabaseHealth
from vms.storage.journal import Journal
from vms.storage.tables import AuditEvent

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000
_DRAIN_TIMEOUT = 10.0
REPLAY_BATCH = 500
"""Journal records inserted per transaction while replaying."""
_TIMES = ("at", "started_at", "ended_at")
_COLUMNS = frozenset(AuditEvent.__table__.columns.keys()) - {"id"}


class RecordRefused(Exception):
    """Neither the database nor the journal can take a viewing record; the message says why."""


@dataclass(frozen=True, slots=True)
class Viewer:
    principal: Principal
    camera_id: str
    protocol: str
    source_addr: str | None
    started_at: datetime


class ViewingRecorder:
    """See the module docstring."""

    def __init__(
        self,
        audit: AuditLog,
        *,
        journal: Journal | None = None,
        health: DatabaseHealth | None = None,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._audit = audit
        self._journal = journal
        self._health = health
        self._replaying = asyncio.Lock()
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue_size)
        self._whep: dict[str, Viewer] = {}
        self._task: asyncio.Task[None] | None = None
        self.lost = 0
        """Records that could not be queued or written (each one logged as an error)."""
        self.journaled = 0
        """Records written to the journal instead of the database."""

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._write(), name="audit-viewing")

    async def stop(self) -> None:
        """Write what is queued (bounded in time), then stop. Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), _DRAIN_TIMEOUT)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # -- WebRTC ----------------------------------------------------------------

    def whep_started(self, session_id: str, viewer: Viewer) -> None:
        self._whep[session_id] = viewer

    def whep_owner(self, session_id: str) -> Principal | None:
        viewer = self._whep.get(session_id)
        return viewer.principal if viewer is not None else None

    def whep_ended(self, session: WhepSession) -> None:
        """Media-plane listener: the session has ended and freed its resources."""
        viewer = self._whep.pop(session.id, None)
        if viewer is None:
            return
        self.viewing_ended(viewer, session.bytes_sent, detail={"end": session.end_reason or "closed"})

    # -- any protocol ------------------------------------------------------------

    def viewing_ended(
        self, viewer: Viewer, sent_bytes: int, detail: dict[str, Any] | None = None, *, action: str = "view"
    ) -> None:
        """Record a viewing (``view``) or a playback (``playback``) that has ended."""
        self.record_soon(
            action,
            principal=viewer.principal,
            camera_id=viewer.camera_id,
            protocol=viewer.protocol,
            source_addr=viewer.source_addr,
            started_at=viewer.started_at,
            ended_at=datetime.now(UTC),
            bytes=sent_bytes,
            detail=detail,
        )

    def record_soon(self, action: str, **fields: Any) -> None:
        """Queue one audit event; never blocks. A full queue loses the event, loudly."""
        try:
            self._queue.put_nowait({"action": action, **fields})
        except asyncio.QueueFull:
            self.lost += 1
            log.error("audit queue full: a %s record of camera %s was lost", action, fields.get("camera_id"))

    async def record_now(self, action: str, **fields: Any) -> None:
        """Store one record before the action it records is done; :class:`RecordRefused`
        when neither the database nor the journal can take it."""
        try:
            await self._store(self._audit.event(action, **fields))
        except (AuditError, OSError) as err:
            why = self._health.reason if self._health is not None and self._health.reason else "it refuses"
            raise RecordRefused(
                f"the audit trail cannot record this now ({why}; the local journal cannot take it "
                "either); try again later"
            ) from err

    def check_recordable(self) -> None:
        """:class:`RecordRefused` when a record made now could be stored nowhere: the database
        fails its health check and the journal's disk is full, read-only or gone."""
        if self._health is None or self._health.ok:
            return
        if self._journal is None or not self._journal.writable():
            raise RecordRefused(f"the audit trail cannot record a new viewing now: {self._health.reason}")

    async def _store(self, row: dict[str, Any]) -> None:
        """Into the database when it takes writes and nothing waits in the journal, else
        into the journal; the last error when neither takes it."""
        healthy = self._health is None or self._health.ok
        if self._journal is None or (healthy and not self._journal.pending()):
            try:
                await self._audit.insert([row])
                return
            except AuditError as err:
                if self._journal is None:
                    raise
                log.warning("%s; keeping the record in the local journal", err)
        await asyncio.to_thread(self._journal.append, _to_json(row))
        self.journaled += 1

    async def replay(self) -> int:
        """Move the journal's records into the database (a health callback); how many."""
        journal = self._journal
        if journal is None or not journal.pending():
            return 0
        moved = 0
        async with self._replaying:
            for segment in await asyncio.to_thread(journal.take):
                rows = [_from_json(record) for record in await asyncio.to_thread(journal.read, segment)]
                for start in range(0, len(rows), REPLAY_BATCH):
                    await self._audit.insert(rows[start : start + REPLAY_BATCH])
                await asyncio.to_thread(journal.done, segment)
                moved += len(rows)
        if moved:
            log.warning("replayed %d audit record(s) from the local journal into the database", moved)
        return moved

    async def _write(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._store(self._audit.event(**event))
            except (AuditError, OSError) as err:
                self.lost += 1
                log.error("a %s record was lost: %s", event.get("action"), err)
            finally:
                self._queue.task_done()


def _to_json(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()}


def _from_json(record: dict[str, Any]) -> dict[str, Any]:
    row = {key: value for key, value in record.items() if key in _COLUMNS}
    if not row.get("record_id"):  # not written by this version: an id from its content
        row["record_id"] = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]
    for key in _TIMES:
        if isinstance(row.get(key), str):
            row[key] = datetime.fromisoformat(row[key])
    return row
