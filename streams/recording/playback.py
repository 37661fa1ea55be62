"""Playing recordings back: consecutive segment files as one continuous fragmented MP4 stream.

:func:`play` reads segment files one after the other (the last may be the one
being written) and yields what a player needs: the first file's init segment
(:class:`PlaybackInit`), then its ``moof`` + ``mdat`` fragments from the video
keyframe at or before the asked moment (:class:`PlaybackMedia`, a batch at a
time), rewritten so that media time 0 is that keyframe and each following file
continues where the previous one ended: decode times (``tfdt``) shifted, fragment
sequence numbers renumbered. Where the wall clock does not continue (the camera
was offline, the service stopped) the gap is squeezed out of the media timeline
and a :class:`PlaybackJump` says which wall clock the media time stands for
from there on. Sound fragments from before the first picture are left out.

The stream ends (:class:`PlaybackStop`) after the first video fragment at or
beyond the asked end, at a file whose init segment differs from the first's
(codec parameters or sound changed: a player needs a new init segment, so the
caller starts a new stream there), or where the recording ends. With
``follow=True`` it does not end where the recording ends now: it says so with a
:class:`PlaybackWait` about every :data:`FOLLOW_POLL` seconds and goes on as the
file being written grows and as new segments come (the caller's ``segments``
then never end; they yield None while they wait for the next file), so a player
at the recording's edge keeps playing what is recorded next, without a new init
segment.

Files are read in worker threads (:func:`~streams.outputs.frames.in_thread`: a
cancelled reader waits for its read, so a file is never closed under one), about
:data:`BATCH_BYTES` per hop and never a whole file at once.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from streams.formats.fmp4 import TRACK_ID
from streams.formats.fmp4_audio import AUDIO_TRACK_ID
from streams.outputs.frames import in_thread
from streams.packets import CLOCK_RATE
from streams.recording.boxes import sequence_field
from streams.recording.segment_file import RawFragment, SegmentFile, UnreadableSegment

__all__ = [
    "BATCH_BYTES",
    "JUMP_TOLERANCE_MS",
    "PlaybackInit",
    "PlaybackItem",
    "PlaybackJump",
    "PlaybackMedia",
    "PlaybackStop",
    "PlaybackWait",
    "SourceSegment",
    "play",
]

BATCH_BYTES = 1024 * 1024
"""About this many bytes of fragments are read per hop to a worker thread."""
BATCH_SECONDS = 0.5
"""... or this much media, whichever comes first, so a paced reader is not held up."""
FOLLOW_POLL = 0.5
"""Seconds between two looks at a segment being written, when following the recording."""
JUMP_TOLERANCE_MS = 100
"""A file that starts this much earlier or later than the previous one ended is a jump."""


@dataclass(frozen=True, slots=True)
class SourceSegment:
    """A segment file to play: its path (final or ``.part`` name) and the wall clock of its start."""

    path: Path
    start_ms: int


@dataclass(frozen=True, slots=True)
class PlaybackInit:
    """The init segment (``ftyp`` + ``moov``), and the wall clock media time 0 shows."""

    data: bytes
    codec: str
    audio: str | None
    width: int
    height: int
    wall_ms: int

    @property
    def mime(self) -> str:
        codecs = self.codec if self.audio is None else f"{self.codec}, {self.audio}"
        return f'video/mp4; codecs="{codecs}"'


@dataclass(frozen=True, slots=True)
class PlaybackMedia:
    """Fragments, rewritten; where the video sent so far ends, in media seconds and wall clock."""

    data: bytes
    media_end: float
    wall_end_ms: int


@dataclass(frozen=True, slots=True)
class PlaybackJump:
    """From media time ``media`` (seconds) on, the picture shows wall clock ``wall_ms``."""

    media: float
    wall_ms: int


@dataclass(frozen=True, slots=True)
class PlaybackStop:
    """The stream ended: ``range`` (the asked end was reached), ``changed`` (the file that starts
    at ``wall_ms`` has another init segment) or ``recorded`` (nothing more is recorded after
    ``wall_ms``, the end of the last video fragment read)."""

    reason: Literal["range", "changed", "recorded"]
    wall_ms: int


@dataclass(frozen=True, slots=True)
class PlaybackWait:
    """Following the recording: nothing is recorded after ``wall_ms`` yet; more may come."""

    wall_ms: int


PlaybackItem = PlaybackInit | PlaybackMedia | PlaybackJump | PlaybackStop | PlaybackWait


@dataclass(slots=True)
class _Timeline:
    """Where the output stands: video ticks and fragments written, and the file's shift."""

    init: bytes
    audio_rate: int | None
    end_ticks: int = 0
    """Where the video written so far ends (output 90 kHz ticks)."""
    end_wall_ms: int = 0
    sequence: int = 0
    shift: int = 0
    """Added to the current file's video decode times."""

    def audio_shift(self) -> int:
        rate = self.audio_rate or 0
        return (self.shift * rate * 2 + (CLOCK_RATE if self.shift >= 0 else -CLOCK_RATE)) // (2 * CLOCK_RATE)


async def play(
    segments: AsyncIterable[SourceSegment | None],
    start_ms: int,
    end_ms: int | None = None,
    *,
    follow: bool = False,
) -> AsyncGenerator[PlaybackItem, None]:
    """The stream of ``segments`` (in order) from the keyframe at or before ``start_ms`` (the
    first keyframe after it when it falls in a gap), until ``end_ms`` if given; see the module
    docstring. Yields nothing but a :class:`PlaybackStop` when no keyframe is found (also when
    following: the recording is followed only once it has been found)."""
    timeline: _Timeline | None = None
    async for source in segments:
        if source is None:  # the segments wait for the next file
            if timeline is None:
                break
            yield PlaybackWait(timeline.end_wall_ms)
            continue
        try:
            segment = await _open(source.path)
        except (UnreadableSegment, OSError):
            continue  # deleted by retention meanwhile, or not ours: the next one follows
        try:
            if timeline is None:
                if not await in_thread(segment.seek_keyframe, start_ms):
                    continue
                timeline = _Timeline(segment.init, segment.audio_rate())
                yield _init_of(segment, timeline)
            elif segment.init != timeline.init:
                yield PlaybackStop("changed", segment.start_ms)
                return
            else:
                jump = _follow(timeline, segment)
                if jump is not None:
                    yield jump
            async for item in _file(segment, timeline, end_ms, follow=follow):
                yield item
                if isinstance(item, PlaybackStop):
                    return
        finally:
            segment.close()  # no read is running: each was awaited to its end
    yield PlaybackStop("recorded", start_ms if timeline is None else timeline.end_wall_ms)


async def _open(path: Path) -> SegmentFile:
    """The segment opened in a worker thread; closed once open if the caller was cancelled meanwhile."""
    opening = asyncio.get_running_loop().run_in_executor(None, SegmentFile, path)
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_unwanted)
        raise


def _close_unwanted(opening: asyncio.Future[SegmentFile]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def _init_of(segment: SegmentFile, timeline: _Timeline) -> PlaybackInit:
    """Media time 0 at the keyframe the file is positioned at."""
    first = _first_video(segment)
    timeline.shift = -first
    timeline.end_wall_ms = segment.wall_ms(first)
    width, height = segment.size()
    return PlaybackInit(
        segment.init, segment.meta.codec, segment.meta.audio, width, height, segment.wall_ms(first)
    )


def _first_video(segment: SegmentFile) -> int:
    """The decode time of the video fragment at the file's position (without moving)."""
    position = segment.position
    try:
        while batch := segment.fragments(1):
            video = batch[0].video
            if video is not None:
                return video.decode_time
    finally:
        segment.position = position
    return segment.meta.media_start


def _follow(timeline: _Timeline, segment: SegmentFile) -> PlaybackJump | None:
    """Continue the timeline with a new file; the jump, when its start is not where the last ended."""
    timeline.shift = timeline.end_ticks - segment.meta.media_start
    if abs(segment.start_ms - timeline.end_wall_ms) <= JUMP_TOLERANCE_MS:
        return None
    timeline.end_wall_ms = segment.start_ms
    return PlaybackJump(timeline.end_ticks / CLOCK_RATE, segment.start_ms)


async def _file(
    segment: SegmentFile, timeline: _Timeline, end_ms: int | None, *, follow: bool
) -> AsyncIterator[PlaybackItem]:
    while True:
        batch, reached, exhausted = await in_thread(_batch, segment, timeline, end_ms)
        if batch:
            yield PlaybackMedia(batch, timeline.end_ticks / CLOCK_RATE, timeline.end_wall_ms)
        if reached:
            yield PlaybackStop("range", timeline.end_wall_ms)
            return
        if exhausted and not batch:
            if not (follow and await in_thread(segment.growing)):
                return
            yield PlaybackWait(timeline.end_wall_ms)
            await asyncio.sleep(FOLLOW_POLL)


def _batch(segment: SegmentFile, timeline: _Timeline, end_ms: int | None) -> tuple[bytes, bool, bool]:
    """Rewritten fragments, about :data:`BATCH_BYTES` or :data:`BATCH_SECONDS` of them; whether
    the asked end was reached; whether the file has no more now (worker thread)."""
    out: list[bytes] = []
    limit = timeline.end_ticks + round(BATCH_SECONDS * CLOCK_RATE)
    size = 0
    while size < BATCH_BYTES and timeline.end_ticks < limit:
        fragments = segment.fragments(64 * 1024)
        if not fragments:
            return b"".join(out), False, True
        for index, fragment in enumerate(fragments):
            data = _rewritten(fragment, timeline, segment)
            if data is None:
                continue
            out.append(data)
            size += len(data)
            if end_ms is not None and fragment.video is not None and timeline.end_wall_ms >= end_ms:
                return b"".join(out), True, False
            if size >= BATCH_BYTES or timeline.end_ticks >= limit:
                if index + 1 < len(fragments):  # the rest is for the next batch
                    segment.position = fragments[index + 1].offset
                break
    return b"".join(out), False, False


def _rewritten(fragment: RawFragment, timeline: _Timeline, segment: SegmentFile) -> bytes | None:
    """The fragment on the output timeline, or None for sound from before the first picture."""
    data = bytearray(fragment.data)
    shifts = {TRACK_ID: timeline.shift, AUDIO_TRACK_ID: timeline.audio_shift()}
    video_end: tuple[int, int] | None = None
    for run in fragment.runs:
        if not run.time_field:
            continue
        decode = run.decode_time + shifts.get(run.track_id, 0)
        if decode < 0:
            return None
        struct.pack_into(">Q" if run.wide_time else ">I", data, run.time_field, decode)
        if run.track_id == TRACK_ID:
            video_end = (decode + run.duration, segment.wall_ms(run.end))
    field = sequence_field(fragment.data[: fragment.moof_size])
    timeline.sequence += 1
    if field is not None:
        struct.pack_into(">I", data, field, timeline.sequence)
    if video_end is not None:
        timeline.end_ticks = max(timeline.end_ticks, video_end[0])
        timeline.end_wall_ms = video_end[1]
    return bytes(data)
