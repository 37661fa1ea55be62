"""Real segment files for the recording benchmarks, written by the recorder's own segmenter and writer.

:func:`write_recording` runs a clip's access units (looped, timestamps continued)
through :class:`~streams.recording.segmenter.Segmenter` and
:class:`~streams.recording.writer.SegmentWriter` faster than real time, with
arrival times set so that the segments start at the wall clock asked: the files
are what the recorder would have written for that camera at that time, and the
:class:`~streams.recording.events.SegmentInfo` it returns is what the index would
have been told. :func:`info_row` turns one into a row of ``recording_segments``;
:func:`insert_rows` adds rows to a running service's index; :func:`drop_from_cache`
evicts a file from the page cache, so reading it costs what reading an old
recording costs.

Event loop of the caller (the writer has its thread, as in the recorder).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert

from bench._record_index import segment_row
from streams.packets import CLOCK_RATE, MediaPacket
from streams.recording.events import SegmentInfo
from streams.recording.segmenter import Segmenter, Step
from streams.recording.writer import SegmentWriter
from streams.sources.file import _load
from vms.recordings import to_ms
from vms.storage import Database
from vms.storage.tables import RecordingSegment


def clip_units(clip: Path) -> tuple[list[Any], int]:
    """The clip's access units as the file camera reads them, and one pass's length in 90 kHz ticks."""
    return _load(clip, 10.0)


async def write_recording(
    root: Path,
    camera: str,
    start: datetime,
    seconds: float,
    segment_seconds: float,
    clip: tuple[list[Any], int],
) -> list[SegmentInfo]:
    """``seconds`` of the looped clip recorded for ``camera`` from ``start`` on, under ``root``."""
    units, length = clip
    closed: list[SegmentInfo] = []
    failed: list[OSError] = []
    writer = SegmentWriter(
        camera, camera, "main", sync_interval=1.0,
        on_opened=lambda path, meta: None, on_closed=closed.append, on_failed=failed.append,
    )  # fmt: skip
    segmenter = Segmenter(root / camera, segment_seconds)
    arrival = start.timestamp() - (time.time() - time.monotonic())
    """``time.monotonic()`` of ``start``, as the segmenter turns arrivals into wall clock."""
    writer.start()
    try:
        for packet in _looped(units, length, round(seconds * CLOCK_RATE), arrival):
            await _put_all(writer, segmenter.video(packet, None))
        await _put_all(writer, segmenter.cut())
    finally:
        await writer.stop()
        await asyncio.sleep(0)  # the writer's last reports
    if failed:
        raise failed[0]
    return closed


def _looped(units: list[Any], length: int, until: int, arrival: float) -> Iterator[MediaPacket]:
    """Packets of the clip over and over, until the first keyframe at or after ``until`` ticks."""
    offset = 0
    while True:
        for unit in units:
            dts = offset + unit.dts
            if dts >= until and unit.keyframe:
                return
            yield MediaPacket(
                data=unit.data,
                pts=offset + unit.pts,
                keyframe=unit.keyframe,
                received=arrival + dts / CLOCK_RATE,
                dts=dts if unit.dts != unit.pts else None,
            )
        offset += length


async def _put_all(writer: SegmentWriter, steps: list[Step]) -> None:
    for step in steps:
        while not writer.put(step):  # faster than real time: wait for the writer, never drop
            writer.flush()
            await asyncio.sleep(0.005)
    writer.flush()


def info_row(info: SegmentInfo, root: Path) -> dict[str, object]:
    return segment_row(
        info.camera_id,
        info.path.relative_to(root).as_posix(),
        to_ms(info.start),
        to_ms(info.end),
        size=info.bytes,
        codec=info.codec,
        sha256=info.sha256,
    )


async def insert_rows(data_dir: Path, rows: list[dict[str, object]], replaced: Sequence[str] = ()) -> None:
    """Add ``rows`` to the service's SQLite index, after deleting the rows of paths ``replaced``."""
    db = Database(f"sqlite+aiosqlite:///{data_dir / 'hallwatch.db'}")
    await db.start()
    try:
        async with db.session() as s, s.begin():
            if replaced:
                await s.execute(delete(RecordingSegment).where(RecordingSegment.path.in_(replaced)))
            for at in range(0, len(rows), 2000):
                await s.execute(insert(RecordingSegment), rows[at : at + 2000])
    finally:
        await db.stop()


def drop_from_cache(path: Path) -> None:
    """Evict the file's pages from the page cache (they are clean: the writer synced them)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
