"""Recorded segments read back as the relay's own unit: access units (:class:`MediaPacket`).

:func:`recorded_packets` demuxes segment files one after the other (PyAV, the same
reader as the file source: ``h264_mp4toannexb`` and the parameter sets before every
keyframe) and yields each video access unit with the wall clock it was recorded at,
from the keyframe at or before the asked start in its file (the first keyframe after
it when the start falls in a gap or after the file's last keyframe) until the first
access unit at or beyond the asked end. Media time runs on across files, gaps
squeezed out, so a sender may pace on it; it starts at 0, or, given an ``origin_ms``,
at the first access unit's distance from that wall clock (0 if it is before it), so
that a sender seeking in a range keeps media time as the position in the range.
This is what an output needs that sends packets rather than the fMP4 fragments of
:mod:`streams.recording.playback` (GB/T 28181 playback, as MPEG-PS over RTP).

A segment is read from its start: finding a moment late in a long segment costs a
demux of the file up to it (no decoding). H.264 only, as the file source. Sound
(the AAC track the recorder writes) comes along, interleaved as the file stores it,
from the first keyframe sent on, with the file's :class:`AudioInfo` on every unit.

Files are opened and read in worker threads, a batch of access units at a time; a
cancelled reader waits for its read, so a file is never closed under one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass
from pathlib import Path

from streams.errors import SourceError
from streams.packets import CLOCK_RATE, AudioInfo, MediaPacket
from streams.recording.layout import PART_SUFFIX
from streams.recording.playback import SourceSegment
from streams.sources.file import _Reader, _Unit

__all__ = ["OPEN_TIMEOUT", "RecordedPacket", "recorded_packets"]

OPEN_TIMEOUT = 5.0
"""Seconds PyAV may take to open one segment file."""
_BATCH = 32
"""Access units read per worker-thread call."""


@dataclass(frozen=True, slots=True)
class RecordedPacket:
    """One recorded access unit on the output's media timeline, and when it was recorded."""

    packet: MediaPacket
    wall_ms: int
    audio: AudioInfo | None = None
    """The sound the unit's file carries (its frames are the units whose packet is audio)."""


def _existing(path: Path) -> Path:
    """The segment under the name it has now: the writer renames ``.part`` when it closes it."""
    if path.exists():
        return path
    if path.name.endswith(PART_SUFFIX):
        return path.with_name(path.name.removesuffix(PART_SUFFIX))
    return path.with_name(path.name + PART_SUFFIX)


async def recorded_packets(
    segments: AsyncIterable[SourceSegment], start_ms: int, end_ms: int, origin_ms: int | None = None
) -> AsyncGenerator[RecordedPacket, None]:
    """The video access units (and sound) of ``segments`` (in order) covering
    ``[start_ms, end_ms)``; see the module docstring. Yields nothing when nothing is recorded there."""
    base: int | None = None
    """Output ticks where the next file's first access unit lands; None before the first."""
    started = False
    async for source in segments:
        try:
            reader = await asyncio.to_thread(_Reader, _existing(source.path), OPEN_TIMEOUT, audio=True)
        except SourceError:
            continue  # deleted by retention meanwhile, or unreadable: the next one follows
        try:
            first: int | None = None
            """The file's decode time that lands at ``base``."""
            preroll: list[_Unit] = []
            while batch := await asyncio.to_thread(reader.read, _BATCH):
                for unit in batch:
                    wall = source.start_ms + unit.dts * 1000 // CLOCK_RATE
                    if wall >= end_ms:
                        return
                    if started:
                        if unit.audio and first is None:
                            continue  # sound of a file whose picture has not begun
                        due = [unit]
                    else:
                        if unit.keyframe and not unit.audio:
                            preroll = []
                        elif unit.audio and not preroll:
                            continue
                        preroll.append(unit)
                        if wall < start_ms:
                            continue
                        started, due = True, preroll
                    for kept in due:
                        if base is None:
                            base = _base(source.start_ms + kept.dts * 1000 // CLOCK_RATE, origin_ms)
                        first = kept.dts if first is None else first
                        yield _recorded(kept, base - first, source.start_ms, reader.audio_info)
            if first is not None and base is not None:
                base += reader.end - first
        finally:
            await asyncio.to_thread(reader.close)


def _base(wall_ms: int, origin_ms: int | None) -> int:
    """Output ticks where the first access unit, recorded at ``wall_ms``, lands."""
    return 0 if origin_ms is None else max(0, wall_ms - origin_ms) * CLOCK_RATE // 1000


def _recorded(unit: _Unit, offset: int, file_start_ms: int, audio: AudioInfo | None) -> RecordedPacket:
    packet = MediaPacket(
        data=unit.data,
        pts=offset + unit.pts,
        keyframe=unit.keyframe,
        codec="aac" if unit.audio else "h264",
        dts=offset + unit.dts if unit.dts != unit.pts else None,
    )
    return RecordedPacket(packet, file_start_ms + unit.dts * 1000 // CLOCK_RATE, audio)
