"""Who watched what: viewing sessions turned into audit records.

Each WebRTC session is remembered from its offer (who, which camera, from
where, when) until the media plane reports its end, when one ``view`` record
with start, end, duration and bytes is written. MJPEG viewers are recorded by
their route the same way. Sessions torn down by a vanished browser end in the
media plane like any other, so they are recorded too.

Media-plane callbacks are synchronous, so records go through a bounded queue
drained by one writer task that this object owns; ``stop()`` drains it.
Event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streams import WhepSession
from vms.access import Principal
from vms.audit import AuditError, AuditLog

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000
_DRAIN_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Viewer:
    principal: Principal
    camera_id: str
    protocol: str
    source_addr: str | None
    started_at: datetime


class ViewingRecorder:
    """See the module docstring."""

    def __init__(self, audit: AuditLog, *, queue_size: int = QUEUE_SIZE) -> None:
        self._audit = audit
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue_size)
        self._whep: dict[str, Viewer] = {}
        self._task: asyncio.Task[None] | None = None
        self.lost = 0
        """Records that could not be queued or written (each one logged as an error)."""

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

    def viewing_ended(self, viewer: Viewer, sent_bytes: int, detail: dict[str, str] | None = None) -> None:
        self.record_soon(
            "view",
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

    async def _write(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._audit.record(**event)
            except AuditError as err:
                self.lost += 1
                log.error("%s", err)
            finally:
                self._queue.task_done()
