"""The recordings' index: segments the media plane closed, what start-up recovered, retention.

:class:`RecordingIndex` hears the recorders' events through
``StreamManager.add_output_listener``: each closed segment becomes a row of
``recording_segments`` (camera, stream, relative path, start and end to the
millisecond, bytes, codecs, SHA-256), a recording failure becomes an alarm and
its end clears it. Listing a camera's recorded spans reads the index, never the
directories, so thirty days answer as fast as one. The segment each recorder is
writing now is remembered from its opening until it closes: spans and playback
include it up to its last complete fragment (read from the ``.part`` file,
continuing where the previous look stopped).

At start-up, before the cameras start, :meth:`RecordingIndex.recover` closes the
segments a crash left open (the media plane cuts each back to its last complete
fragment) and indexes them, then reconciles the index with the disk: rows whose
files are gone and files the index does not know are counted and reported in the
log and in :attr:`RecordingIndex.report`, never silently dropped or adopted.

Retention deletes a camera's segments older than its ``retention_days``, file
first, then row, every :attr:`RecordingIndex.retention_interval` seconds. The disk
guard then deletes the oldest segments of any camera while the recordings take
more than ``max_bytes`` or leave less than ``min_free_bytes`` free, and says so in
the log and in :attr:`RecordingIndex.reclaimed`.

A row the database cannot take now (it is locked or down) waits in memory, in
order, and is retried; the file is on disk meanwhile, and a restart would find it
in the reconciliation.

Event loop only; file system work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql import ColumnElement

from streams import (
    RecordingFailed,
    RecordingResumed,
    SegmentClosed,
    SegmentInfo,
    SegmentOpened,
    SourceSegment,
    recorded_end,
    recover,
)
from vms.alarms import AlarmCentre
from vms.config import Config
from vms.storage import Database
from vms.storage.tables import RecordingSegment

log = logging.getLogger(__name__)

GAP_TOLERANCE = timedelta(seconds=1)
"""Segments closer than this are one span: a cut at a keyframe leaves no real gap."""
MAX_PENDING = 10_000
"""Closed segments waiting for the database, at most; beyond, the oldest wait for the next start."""
RETRY_INTERVAL = 5.0
SPACE_ALARM_INTERVAL = 3600.0
"""Seconds between two alarms about one camera's recordings deleted for space."""


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of time recorded without interruption, or a gap between two."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Spans:
    """What a camera stream has in a time range: recorded spans and the gaps between them."""

    spans: list[Span]
    gaps: list[Span]
    segments: int
    bytes: int


@dataclass(slots=True)
class Report:
    """What start-up recovery and reconciliation found, per camera."""

    recovered: dict[str, int] = field(default_factory=dict)
    missing_files: dict[str, int] = field(default_factory=dict)
    """Index rows whose files are gone (the rows are removed)."""
    unknown_files: dict[str, list[str]] = field(default_factory=dict)
    """Files the index does not know (left in place, listed here)."""


@dataclass(frozen=True, slots=True)
class IndexedSegment:
    """One indexed segment file, as playback and exports read it."""

    path: Path
    """Absolute."""
    relative: str
    """As in the index: ``<camera>/<date>/<time>.mp4`` below the recordings directory."""
    start_ms: int
    end_ms: int
    bytes: int
    codec: str
    audio: str | None
    sha256: str


Millis = tuple[int, int]
"""A stretch of time as ``(start, end)`` milliseconds since the Unix epoch."""


def spans_of(rows: Iterable[Millis], start: int, end: int) -> list[Millis]:
    """Merge segments sorted by start into spans clipped to ``[start, end]`` (milliseconds:
    a month of segments is merged without making a datetime for each)."""
    tolerance = GAP_TOLERANCE // timedelta(milliseconds=1)
    spans: list[list[int]] = []
    for row_start, row_end in rows:
        s, e = max(row_start, start), min(row_end, end)
        if e <= s:
            continue
        if spans and s - spans[-1][1] <= tolerance:
            if e > spans[-1][1]:
                spans[-1][1] = e
        else:
            spans.append([s, e])
    return [(s, e) for s, e in spans]


def gaps_between(spans: list[Millis], start: int, end: int) -> list[Millis]:
    gaps: list[Millis] = []
    at = start
    for span_start, span_end in spans:
        if span_start > at:
            gaps.append((at, span_start))
        at = max(at, span_end)
    if at < end:
        gaps.append((at, end))
    return gaps


def _as_spans(pairs: list[Millis]) -> list[Span]:
    return [Span(from_ms(s), from_ms(e)) for s, e in pairs]


LAST_FRAME_SLACK = timedelta(seconds=1)
"""Longer than a frame's interval at any rate a camera records (1 fps and up)."""


class RecordingIndex:
    """See the module docstring."""

    def __init__(self, db: Database, config: Config, alarms: AlarmCentre | None = None) -> None:
        self.db = db
        self.config = config
        self.alarms = alarms
        self.root = config.recordings_dir().resolve()
        self.report = Report()
        self.retention_interval = 60.0
        self.reclaimed: dict[str, int] = {}
        """Segments deleted before their retention to make room, by camera."""
        self._space_alarmed: dict[str, float] = {}
        self._pending: deque[SegmentInfo] = deque(maxlen=MAX_PENDING)
        self._guarding = asyncio.Lock()
        self._open: dict[tuple[str, str], SegmentOpened] = {}
        """The segment each recorder writes now, by camera and stream."""
        self._open_ends: dict[Path, tuple[int, int]] = {}
        """Of each open segment: where its video ends (ms) and how far its file was read."""
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- the media plane's listener -----------------------------------------------------

    def on_output_event(self, camera_id: str, event: object) -> None:
        """``StreamManager.add_output_listener``: index closed segments, alarm on failures."""
        if isinstance(event, SegmentOpened):
            self._open[(event.camera_id, event.stream)] = event
        elif isinstance(event, SegmentClosed):
            info = event.info
            opened = self._open.get((info.camera_id, info.stream))
            if opened is not None and opened.path == info.path:
                del self._open[(info.camera_id, info.stream)]
            self._open_ends.pop(info.path, None)
            self._pending.append(info)
            self._wake.set()
        elif isinstance(event, RecordingFailed):
            if self.alarms is not None:
                self.alarms.recording_failed(camera_id, event.reason)
        elif isinstance(event, RecordingResumed) and self.alarms is not None:
            self.alarms.recording_resumed(camera_id)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="recording index"),
            asyncio.create_task(self._retention_loop(), name="recording retention"),
        ]

    async def stop(self) -> None:
        """Write what is pending (the recorders have stopped by now), then stop."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        with contextlib.suppress(SQLAlchemyError, OSError, ConnectionError):
            await self._write_pending()
        if self._pending:
            log.warning(
                "%d closed segments could not be indexed; the next start will report their files",
                len(self._pending),
            )

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._write_pending()
            except (SQLAlchemyError, OSError, ConnectionError) as err:
                log.warning("cannot index %d closed segments now, retrying: %s", len(self._pending), err)
                await asyncio.sleep(RETRY_INTERVAL)
                self._wake.set()

    async def _write_pending(self) -> None:
        while self._pending:
            batch = list(self._pending)
            async with self.db.session() as s, s.begin():
                for info in batch:
                    s.add(self._row(info))
            for _ in batch:
                self._pending.popleft()

    def _row(self, info: SegmentInfo) -> RecordingSegment:
        return RecordingSegment(
            camera_id=info.camera_id,
            stream=info.stream,
            path=self._relative(info.path),
            start_ms=to_ms(info.start),
            end_ms=to_ms(info.end),
            bytes=info.bytes,
            codec=info.codec,
            audio=info.audio,
            sha256=info.sha256,
            recovered=info.recovered,
        )

    def _relative(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()

    # -- start-up ----------------------------------------------------------------------

    async def recover(self, camera_ids: Collection[str] | None = None) -> Report:
        """Close and index what a crash left open, then reconcile index and disk: for every
        camera, or only ``camera_ids`` (in a cluster, the cameras this instance takes over:
        the shared directory's other cameras are being written by their owners)."""
        for camera in self.config.cameras:
            if camera_ids is not None and camera.id not in camera_ids:
                continue
            directory = self.root / camera.id
            if not directory.is_dir():
                continue
            stream = self.config.record_stream(camera)
            found = await asyncio.to_thread(recover, directory, camera.id, stream)
            if found:
                async with self.db.session() as s, s.begin():
                    for info in found:
                        s.add(self._row(info))
                self.report.recovered[camera.id] = self.report.recovered.get(camera.id, 0) + len(found)
                log.warning("%s: closed %d segments a crash had left open", camera.id, len(found))
        await self._reconcile(camera_ids)
        return self.report

    async def _reconcile(self, camera_ids: Collection[str] | None) -> None:
        query = select(RecordingSegment.id, RecordingSegment.camera_id, RecordingSegment.path)
        if camera_ids is not None:
            query = query.where(RecordingSegment.camera_id.in_(list(camera_ids)))
        async with self.db.session() as s:
            rows = (await s.execute(query)).all()
        known = {path for _, _, path in rows}
        on_disk = await asyncio.to_thread(segment_files, self.root, camera_ids)
        gone = [(row_id, camera_id) for row_id, camera_id, path in rows if path not in on_disk]
        if gone:
            async with self.db.session() as s, s.begin():
                await s.execute(delete(RecordingSegment).where(RecordingSegment.id.in_([i for i, _ in gone])))
            missing: dict[str, int] = {}
            for _, camera_id in gone:
                missing[camera_id] = missing.get(camera_id, 0) + 1
            for camera_id, count in missing.items():
                self.report.missing_files[camera_id] = self.report.missing_files.get(camera_id, 0) + count
                log.warning(
                    "%s: %d indexed segments have no file any more; removed from the index", camera_id, count
                )
        unknown: dict[str, list[str]] = {}
        for path in sorted(on_disk - known):
            unknown.setdefault(path.split("/", 1)[0], []).append(path)
        for camera_id, paths in unknown.items():
            self.report.unknown_files.setdefault(camera_id, []).extend(paths)
            log.warning(
                "%s: %d segment files are not in the index (left in place): %s%s",
                camera_id,
                len(paths),
                ", ".join(paths[:3]),
                " …" if len(paths) > 3 else "",
            )

    # -- reading -----------------------------------------------------------------------

    async def spans(self, camera_id: str, stream: str, start: datetime, end: datetime) -> Spans:
        """Recorded spans and gaps of one camera stream within ``[start, end)``."""
        async with self.db.session() as s:
            rows = (
                await s.execute(
                    select(RecordingSegment.start_ms, RecordingSegment.end_ms, RecordingSegment.bytes)
                    .where(*self._overlapping(camera_id, stream, start, end))
                    .order_by(RecordingSegment.start_ms)
                )
            ).all()
        first, last = to_ms(start), to_ms(end)
        found = [(a, b, size) for a, b, size in rows]
        found += [(to_ms(i.start), to_ms(i.end), i.bytes) for i in self._unindexed(camera_id, stream)]
        recording = await self._open_span(camera_id, stream)
        if recording is not None:
            found.append((*recording, 0))
        found.sort()
        spans = spans_of(((a, b) for a, b, _ in found), first, last)
        gaps = gaps_between(spans, first, last)
        return Spans(_as_spans(spans), _as_spans(gaps), len(found), sum(size for _, _, size in found))

    def _unindexed(self, camera_id: str, stream: str) -> list[SegmentInfo]:
        """Closed segments still waiting for the database."""
        return [i for i in self._pending if i.camera_id == camera_id and i.stream == stream]

    async def _open_span(self, camera_id: str, stream: str) -> Millis | None:
        """The span of the segment being written now, up to its last complete fragment."""
        opened = self._open.get((camera_id, stream))
        if opened is None:
            return None
        end = await asyncio.to_thread(recorded_end, opened.path, self._open_ends.get(opened.path))
        if end is None or self._open.get((camera_id, stream)) is not opened:
            return None
        self._open_ends[opened.path] = end
        return to_ms(opened.start), end[0]

    async def playable(
        self, camera_id: str, stream: str, start: datetime, end: datetime
    ) -> list[SourceSegment]:
        """The segment files of one camera stream that overlap ``[start, end)``, oldest first:
        indexed, closed but not indexed yet, and the one being written; also one that ended
        less than :data:`LAST_FRAME_SLACK` before ``start`` (a segment's end is its last
        frame's time, so a point shown by that frame still belongs to it, and the keyframe
        at or before the point is in it, not in the next segment)."""
        start -= LAST_FRAME_SLACK
        first, last = to_ms(start), to_ms(end)
        # Taken before the query: a segment closed or indexed while it runs is still found.
        unindexed = self._unindexed(camera_id, stream)
        opened = self._open.get((camera_id, stream))
        found = {s.path: s.start_ms for s in await self.segments(camera_id, stream, start, end)}
        for info in unindexed:
            if to_ms(info.start) < last and to_ms(info.end) > first:
                found.setdefault(info.path.resolve(), to_ms(info.start))
        if opened is not None and to_ms(opened.start) < last:
            found.setdefault(opened.path.resolve(), to_ms(opened.start))
        return sorted((SourceSegment(path, at) for path, at in found.items()), key=lambda s: s.start_ms)

    async def next_start(self, camera_id: str, stream: str, after: datetime) -> datetime | None:
        """Where the first indexed segment of a camera stream starting at or after ``after`` starts."""
        async with self.db.session() as s:
            first = await s.scalar(
                select(func.min(RecordingSegment.start_ms)).where(
                    RecordingSegment.camera_id == camera_id,
                    RecordingSegment.stream == stream,
                    RecordingSegment.start_ms >= to_ms(after),
                )
            )
        return None if first is None else from_ms(first)

    async def segments(
        self, camera_id: str, stream: str, start: datetime, end: datetime
    ) -> list[IndexedSegment]:
        """The indexed segments of one camera stream that overlap ``[start, end)``, oldest first."""
        async with self.db.session() as s:
            rows = (
                await s.execute(
                    select(
                        RecordingSegment.path,
                        RecordingSegment.start_ms,
                        RecordingSegment.end_ms,
                        RecordingSegment.bytes,
                        RecordingSegment.codec,
                        RecordingSegment.audio,
                        RecordingSegment.sha256,
                    )
                    .where(*self._overlapping(camera_id, stream, start, end))
                    .order_by(RecordingSegment.start_ms)
                )
            ).all()
        return [
            IndexedSegment(self.root / path, path, start_ms, end_ms, size, codec, audio, sha256)
            for path, start_ms, end_ms, size, codec, audio, sha256 in rows
        ]

    def _overlapping(
        self, camera_id: str, stream: str, start: datetime, end: datetime
    ) -> list[ColumnElement[bool]]:
        """Conditions for the segments overlapping ``[start, end)``; the lower bound on the start
        (no segment is longer than twice its configured length) keeps the index range short."""
        longest = timedelta(seconds=self.config.recording.segment_seconds * 2 + 60)
        return [
            RecordingSegment.camera_id == camera_id,
            RecordingSegment.stream == stream,
            RecordingSegment.start_ms >= to_ms(start - longest),
            RecordingSegment.start_ms < to_ms(end),
            RecordingSegment.end_ms > to_ms(start),
        ]

    # -- retention ---------------------------------------------------------------------

    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.apply_retention()
                await self.guard_disk()
            except (SQLAlchemyError, OSError, ConnectionError) as err:
                log.warning("recording retention could not run now: %s", err)
            await asyncio.sleep(self.retention_interval)

    async def apply_retention(self, now: datetime | None = None) -> int:
        """Delete every camera's segments older than its retention; how many."""
        now = now or datetime.now(UTC)
        removed = 0
        for camera in self.config.cameras:
            cutoff = now - timedelta(days=self.config.retention_for(camera))
            async with self.db.session() as s:
                old = (
                    await s.execute(
                        select(RecordingSegment.id, RecordingSegment.path)
                        .where(
                            RecordingSegment.camera_id == camera.id, RecordingSegment.end_ms < to_ms(cutoff)
                        )
                        .order_by(RecordingSegment.start_ms)
                    )
                ).all()
            if not old:
                continue
            await self._delete(old)
            removed += len(old)
            log.info(
                "%s: %d segments past %g days deleted", camera.id, len(old), self.config.retention_for(camera)
            )
        return removed

    async def _delete(self, rows: Sequence[tuple[int, str]]) -> None:
        """Delete segments given as ``(id, path)``: the files first, then their rows."""
        await asyncio.to_thread(_unlink_all, [self.root / path for _, path in rows])
        async with self.db.session() as s, s.begin():
            await s.execute(delete(RecordingSegment).where(RecordingSegment.id.in_([i for i, _ in rows])))

    async def guard_disk(self) -> int:
        """Delete the oldest segments, whatever their camera, while the recordings take more
        than ``max_bytes`` or leave less than ``min_free_bytes``; how many. One run at a time:
        two that overlapped would each free the space that was missing."""
        async with self._guarding:
            return await self._guard_disk()

    async def _guard_disk(self) -> int:
        limits = self.config.recording
        removed = 0
        take_counts: dict[str, int] = {}
        while True:
            over = 0
            if limits.max_bytes is not None:
                async with self.db.session() as s:
                    total = int(
                        await s.scalar(select(func.coalesce(func.sum(RecordingSegment.bytes), 0))) or 0
                    )
                over = max(over, total - limits.max_bytes)
            free = await asyncio.to_thread(_free_bytes, self.root)
            if free is not None:
                over = max(over, limits.min_free_bytes - free)
            if over <= 0:
                break
            batch = await _oldest(self.db, 64)
            if not batch:
                break
            take, freed = [], 0
            for row in batch:
                take.append(row)
                freed += row[3]
                if freed >= over:
                    break
            await self._delete([(row_id, path) for row_id, _, path, _ in take])
            removed += len(take)
            for _, camera_id, _, _ in take:
                self.reclaimed[camera_id] = self.reclaimed.get(camera_id, 0) + 1
                take_counts[camera_id] = take_counts.get(camera_id, 0) + 1
        if removed:
            log.warning("recordings: deleted the %d oldest segments to keep within the disk limits", removed)
            self._alarm_space(take_counts)
        return removed

    def _alarm_space(self, counts: dict[str, int]) -> None:
        """One alarm per camera and :data:`SPACE_ALARM_INTERVAL`, however often the guard runs."""
        now = time.monotonic()
        for camera_id, count in counts.items():
            last = self._space_alarmed.get(camera_id)
            if self.alarms is not None and (last is None or now - last >= SPACE_ALARM_INTERVAL):
                self._space_alarmed[camera_id] = now
                self.alarms.recording_space(camera_id, count)


async def _oldest(db: Database, limit: int) -> list[tuple[int, str, str, int]]:
    async with db.session() as s:
        rows = await s.execute(
            select(
                RecordingSegment.id, RecordingSegment.camera_id, RecordingSegment.path, RecordingSegment.bytes
            )
            .order_by(RecordingSegment.start_ms)
            .limit(limit)
        )
        return [(row_id, camera_id, path, size) for row_id, camera_id, path, size in rows]


def to_ms(value: datetime) -> int:
    """Milliseconds since the Unix epoch, as the index stores times."""
    return round(value.timestamp() * 1000)


def from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


def segment_files(root: Path, camera_ids: Collection[str] | None = None) -> set[str]:
    """Closed segment files below ``root``, as paths relative to it: every camera's, or only
    those of ``camera_ids`` (only their directories are walked)."""
    tops = [root] if camera_ids is None else [root / camera_id for camera_id in camera_ids]
    return {path.relative_to(root).as_posix() for top in tops for path in top.rglob("*.mp4")}


def _free_bytes(root: Path) -> int | None:
    """Free bytes on the file system of ``root`` (or of its nearest existing parent)."""
    for where in (root, *root.parents):
        if where.exists():
            return shutil.disk_usage(where).free
    return None


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with contextlib.suppress(OSError):  # the day's directory, once empty
            path.parent.rmdir()
