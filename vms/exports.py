"""Exports: a camera's recorded range copied into one MP4 file with a signed manifest.

:class:`ExportService` takes a request (:meth:`ExportService.create`: a row in
``exports`` and an ``export`` audit record in one transaction), then makes the
file off the event loop: at most ``exports.max_concurrent`` at once, each in a
worker thread (:func:`streams.export_range`, a stream copy of the indexed
segments), and writes the manifest beside it (:mod:`vms.export_signing`). A
failure leaves the export ``failed`` with a sentence saying why; an export
still pending or running when the service stops is marked failed at the next
start. Exports older than ``exports.retention_days`` are deleted, files first.

The service owns its tasks (``start()`` / idempotent ``async stop()``): stopping
asks the worker threads to stop between two packets and waits for them.

Event loop only; file work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError

from streams import ExportError, ExportResult, export_range
from vms.access import Principal
from vms.audit import AuditLog
from vms.config import Camera, Config
from vms.export_signing import SigningKey, load_or_create_key
from vms.recordings import GAP_TOLERANCE, IndexedSegment, RecordingIndex, from_ms, to_ms
from vms.storage import Database
from vms.storage.tables import Export

log = logging.getLogger(__name__)

MAX_WAITING = 32
"""Exports pending at once, all users; beyond, a request is refused (:class:`ExportsBusy`)."""
PURGE_INTERVAL = 3600.0
STOP_TIMEOUT = 10.0
UNFINISHED = ("pending", "running")
INTERRUPTED = "the service stopped before the export was finished; request it again"


class ExportsBusy(Exception):
    """Too many exports are waiting to be made."""


@dataclass(frozen=True, slots=True)
class Request:
    """What to export, checked by the caller (the camera is visible, the range sound)."""

    camera: Camera
    stream: str
    start: datetime
    end: datetime
    reason: str | None


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class ExportService:
    """See the module docstring."""

    def __init__(self, db: Database, config: Config, index: RecordingIndex, audit: AuditLog) -> None:
        self.db, self.config, self.index, self.audit = db, config, index, audit
        self.root = config.exports_dir().resolve()
        self.purge_interval = PURGE_INTERVAL
        self._slots = asyncio.Semaphore(config.exports.max_concurrent)
        self._cancel = threading.Event()
        self._jobs: set[asyncio.Task[None]] = set()
        self._purger: asyncio.Task[None] | None = None
        self._key: SigningKey | None = None
        self._key_lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Mark what a previous run left unfinished as failed; start the retention task."""
        async with self.db.session() as s, s.begin():
            result = await s.execute(
                update(Export)
                .where(Export.status.in_(UNFINISHED))
                .values(status="failed", error=INTERRUPTED, finished_at=datetime.now(UTC))
            )
        count: int = getattr(result, "rowcount", 0) or 0
        if count:
            log.warning("%d exports left unfinished by the last run are marked failed", count)
        self._cancel.clear()
        self._purger = asyncio.create_task(self._retention(), name="export retention")

    async def stop(self) -> None:
        """Stop the exports being made (they end failed) and the retention task. Idempotent."""
        self._cancel.set()
        purger, self._purger = self._purger, None
        if purger is not None:
            purger.cancel()
            await asyncio.gather(purger, return_exceptions=True)
        jobs = list(self._jobs)
        if jobs:
            _, late = await asyncio.wait(jobs, timeout=STOP_TIMEOUT)
            for job in late:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)

    # -- requests ----------------------------------------------------------------------

    async def signing_key(self) -> SigningKey:
        """This instance's key, made on first use."""
        async with self._key_lock:
            if self._key is None:
                self._key = await asyncio.to_thread(load_or_create_key, self.config.server.data_dir.resolve())
            return self._key

    async def create(self, principal: Principal, request: Request) -> Export:
        """Store and audit the request, and start making it."""
        waiting = sum(not job.done() for job in self._jobs)
        if waiting >= MAX_WAITING:
            raise ExportsBusy(f"{waiting} exports are being made or waiting; try again in a few minutes")
        row = Export(
            id=secrets.token_hex(8),
            camera_id=request.camera.id,
            stream=request.stream,
            centre_id=principal.centre_id,
            user_id=principal.user_id,
            created_by=principal.username,
            reason=request.reason,
            requested_start_ms=to_ms(request.start),
            requested_end_ms=to_ms(request.end),
            status="pending",
            created_at=datetime.now(UTC),
        )
        detail = {
            "export": row.id,
            "stream": request.stream,
            "from": iso(request.start),
            "to": iso(request.end),
            "reason": request.reason,
        }
        async with self.db.session() as s, s.begin():
            s.add(row)
            await self.audit.add(s, "export", principal=principal, camera_id=request.camera.id, detail=detail)
        job = asyncio.create_task(self._make(row.id, request, principal), name=f"export {row.id}")
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return row

    async def visible(self, principal: Principal, limit: int = 200) -> list[Export]:
        """The exports made in the caller's centre of cameras the caller sees, newest first."""
        async with self.db.session() as s:
            rows = (
                await s.scalars(
                    select(Export)
                    .where(Export.centre_id == principal.centre_id)
                    .order_by(Export.created_at.desc(), Export.id)
                    .limit(limit)
                )
            ).all()
        return [row for row in rows if principal.may_see_camera(self.config, row.camera_id)]

    async def get(self, principal: Principal, export_id: str) -> Export | None:
        """One export, if the caller may see it."""
        async with self.db.session() as s:
            row = await s.get(Export, export_id)
        if row is None or row.centre_id != principal.centre_id:
            return None
        return row if principal.may_see_camera(self.config, row.camera_id) else None

    def file_path(self, row: Export) -> Path:
        assert row.file_name is not None
        return self.root / row.file_name

    def manifest_path(self, row: Export) -> Path:
        return self.file_path(row).with_suffix(".manifest.json")

    # -- making one --------------------------------------------------------------------

    async def _make(self, export_id: str, request: Request, principal: Principal) -> None:
        try:
            async with self._slots:
                if self._cancel.is_set():
                    raise ExportError(INTERRUPTED)
                await self._set(export_id, status="running")
                await self._made(export_id, request, principal)
        except ExportError as err:
            stopped = self._cancel.is_set()
            await self._failed(export_id, INTERRUPTED if stopped else str(err))
        except OSError as err:
            await self._failed(export_id, f"the export could not be written: {err.strerror or err}")
        except (SQLAlchemyError, ConnectionError) as err:
            log.warning("export %s: the database failed: %s", export_id, err)
            await self._failed(export_id, "the database failed while the export was being made")
        except Exception:
            log.exception("export %s failed", export_id)
            await self._failed(export_id, "an internal error stopped the export")

    async def _made(self, export_id: str, request: Request, principal: Principal) -> None:
        camera = request.camera
        segments = await self.index.segments(camera.id, request.stream, request.start, request.end)
        if not segments:
            raise ExportError(
                f"nothing of {camera.id} ({request.stream}) is recorded between "
                f"{iso(request.start)} and {iso(request.end)}"
            )
        name = f"{camera.id}-{request.start.astimezone(UTC):%Y%m%d-%H%M%S}-{export_id}.mp4"
        destination = self.root / name
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        result = await asyncio.to_thread(
            export_range,
            [segment.path for segment in segments],
            request.start,
            request.end,
            destination,
            cancel=self._cancel,
        )
        used = [segment for segment in segments if segment.path in set(result.segments)]
        manifest = self._manifest(export_id, request, principal, result, used)
        signed = (await self.signing_key()).sign(manifest)
        await asyncio.to_thread(_write_json, destination.with_suffix(".manifest.json"), signed)
        early = f"the export ends at {iso(result.end)}: {result.stopped}" if result.stopped else None
        await self._set(
            export_id,
            status="ready",
            error=early,
            start_ms=to_ms(result.start),
            end_ms=to_ms(result.end),
            file_name=name,
            bytes=result.bytes,
            sha256=result.sha256,
            finished_at=datetime.now(UTC),
        )
        log.info(
            "export %s of %s ready: %d bytes, %.1f s", export_id, camera.id, result.bytes, result.duration
        )

    def _manifest(
        self,
        export_id: str,
        request: Request,
        principal: Principal,
        result: ExportResult,
        used: Sequence[IndexedSegment],
    ) -> dict[str, Any]:
        camera = request.camera
        hall = self.config.hall(camera.hall)
        return {
            "export_id": export_id,
            "camera": {"id": camera.id, "name": camera.name, "hall": {"id": hall.id, "name": hall.name}},
            "stream": request.stream,
            "requested": {"start": iso(request.start), "end": iso(request.end)},
            "actual": {"start": iso(result.start), "end": iso(result.end)},
            "ended_early": result.stopped,
            "gaps": _gaps(used),
            "segments": [
                {
                    "path": segment.relative,
                    "start": iso(from_ms(segment.start_ms)),
                    "end": iso(from_ms(segment.end_ms)),
                    "bytes": segment.bytes,
                    "sha256": segment.sha256,
                }
                for segment in used
            ],
            "file": {
                "name": result.path.name,
                "bytes": result.bytes,
                "sha256": result.sha256,
                "duration": round(result.duration, 3),
            },
            "exported_by": {"user": principal.username, "centre": principal.centre_id},
            "exported_at": iso(datetime.now(UTC)),
            "reason": request.reason,
        }

    async def _set(self, export_id: str, **values: Any) -> None:
        async with self.db.session() as s, s.begin():
            await s.execute(update(Export).where(Export.id == export_id).values(**values))

    async def _failed(self, export_id: str, error: str) -> None:
        log.warning("export %s failed: %s", export_id, error)
        try:
            await self._set(export_id, status="failed", error=error, finished_at=datetime.now(UTC))
        except (SQLAlchemyError, OSError, ConnectionError) as err:
            log.warning("export %s: cannot record its failure now (the next start will): %s", export_id, err)

    # -- retention ---------------------------------------------------------------------

    async def _retention(self) -> None:
        while True:
            try:
                await self.purge()
            except (SQLAlchemyError, OSError, ConnectionError) as err:
                log.warning("export retention could not run now: %s", err)
            await asyncio.sleep(self.purge_interval)

    async def purge(self, now: datetime | None = None) -> int:
        """Delete the finished exports older than the retention, files first; how many."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.config.exports.retention_days)
        async with self.db.session() as s:
            old = (
                await s.scalars(
                    select(Export).where(Export.created_at < cutoff, Export.status.not_in(UNFINISHED))
                )
            ).all()
        if not old:
            return 0
        named = [row for row in old if row.file_name]
        files = [path for row in named for path in (self.file_path(row), self.manifest_path(row))]
        await asyncio.to_thread(_unlink_all, files)
        async with self.db.session() as s, s.begin():
            await s.execute(delete(Export).where(Export.id.in_([row.id for row in old])))
        log.info("%d exports older than %g days deleted", len(old), self.config.exports.retention_days)
        return len(old)


def _gaps(segments: Sequence[IndexedSegment]) -> list[dict[str, str]]:
    """Stretches between the segments that the file's timeline leaves out."""
    tolerance = GAP_TOLERANCE // timedelta(milliseconds=1)
    return [
        {"start": iso(from_ms(before.end_ms)), "end": iso(from_ms(after.start_ms))}
        for before, after in itertools.pairwise(segments)
        if after.start_ms - before.end_ms > tolerance
    ]


def _write_json(path: Path, document: dict[str, Any]) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    with part.open("rb") as file:
        os.fsync(file.fileno())
    part.rename(path)


def _unlink_all(paths: Sequence[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
