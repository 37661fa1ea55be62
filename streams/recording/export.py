"""Cutting a wall-clock range out of recorded segments into one ordinary MP4 file.

:func:`export_range` reads segment files (fragmented MP4, see
:mod:`streams.recording.layout`) in order and copies their packets, never
decoding them, into one non-fragmented MP4 with its ``moov`` before its
``mdat`` (``movflags=faststart``), so any player starts it without reading to
the end. The file begins at the video keyframe at or before the range's start
(at the first keyframe after it when the start lies before the first segment)
and ends with the last frame that begins before the range's end; the sound
track, when the segments have one, is cut alike.

Time in the file runs without a break: a gap between two segments (the camera
was offline, recording was stopped) is squeezed out, and the file's duration is
the recorded time only. Which wall-clock stretches the file holds is what the
caller's manifest says, from the segments it passed.

Copying stops before the first segment whose codec parameters (picture size,
parameter sets, the sound's description) differ from the first one's: one MP4
track has one description. :attr:`ExportResult.stopped` then says why, and
:attr:`ExportResult.end` is where the file really ends.

The file is written under ``<name>.part`` and renamed when complete; its
SHA-256 is computed from the finished file. Blocking: run it in a worker thread
(a ``cancel`` event set from elsewhere stops it between two packets).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error

from streams.errors import StreamError
from streams.recording.boxes import top_level_boxes
from streams.recording.layout import PART_SUFFIX, SegmentMetadata, parse_metadata, to_millis

__all__ = ["ExportError", "ExportResult", "export_range"]


class ExportError(StreamError):
    """The range could not be exported; the message says why, in an operator's words."""


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What was written."""

    path: Path
    start: datetime
    """Wall clock of the first frame (the keyframe at or before the requested start)."""
    end: datetime
    """Wall clock at the end of the last frame written."""
    duration: float
    """Seconds of video in the file (gaps squeezed out)."""
    bytes: int
    sha256: str
    segments: list[Path]
    """The segment files the file was cut from, in order."""
    frames: int
    audio: bool
    stopped: str | None
    """Why the file ends before the requested end, if it does (a codec change)."""


@dataclass(frozen=True, slots=True)
class _Description:
    """What must stay the same for packets to go on in the same tracks."""

    video: tuple[object, ...]
    audio: tuple[object, ...] | None


@dataclass(slots=True)
class _Cut:
    """The state of one export across segments."""

    start: datetime
    end: datetime
    cancel: threading.Event | None
    video_end: Fraction = Fraction(0)
    """Output time (seconds) at the end of the last frame: where the next segment begins."""
    last_dts: dict[str, int] = field(default_factory=dict)
    first_wall: datetime | None = None
    last_wall: datetime | None = None
    frames: int = 0
    streams: dict[str, Any] = field(default_factory=dict)
    description: _Description | None = None
    used: list[Path] = field(default_factory=list)


@dataclass(slots=True)
class _Segment:
    """One segment being copied: its clock, and where its media time lands in the output."""

    wall0: datetime
    base: Fraction
    """Media time (seconds) of ``wall0``."""
    origin: Fraction | None = None
    """Media time (seconds) that lands at ``out_start`` in the output; None until the first packet."""
    out_start: Fraction = Fraction(0)
    written: int = 0

    def wall(self, media: Fraction) -> datetime:
        return self.wall0 + timedelta(seconds=float(media - self.base))


def read_metadata(path: Path) -> SegmentMetadata:
    """The metadata box of a segment file; :class:`ExportError` if it has none."""
    with path.open("rb") as file:
        for box in top_level_boxes(file, path.stat().st_size):
            if box.kind == b"uuid":
                file.seek(box.offset + box.header)
                meta = parse_metadata(file.read(box.size - box.header))
                if meta is not None:
                    return meta
            if box.kind in (b"moof", b"mdat"):
                break
    raise ExportError(f"{path.name} is not a recorded segment (no metadata box)")


def export_range(
    segments: Sequence[Path],
    start: datetime,
    end: datetime,
    destination: Path,
    *,
    cancel: threading.Event | None = None,
) -> ExportResult:
    """Write ``[start, end)`` of ``segments`` (oldest first) to ``destination``. See the module docstring."""
    if end <= start:
        raise ExportError("the range is empty")
    part = destination.with_name(destination.name + PART_SUFFIX)
    cut = _Cut(start, end, cancel)
    stopped: str | None = None
    try:
        with contextlib.closing(
            av.open(str(part), "w", format="mp4", options={"movflags": "faststart"})
        ) as output:
            for path in segments:
                stopped = _copy_segment(path, output, cut)
                if stopped is not None or (cut.last_wall is not None and cut.last_wall >= end):
                    break
            if cut.frames == 0:
                raise ExportError("nothing is recorded in this range")
        size = part.stat().st_size
        with part.open("rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
            os.fsync(file.fileno())
        part.rename(destination)
    except av.error.FFmpegError as err:
        part.unlink(missing_ok=True)
        raise ExportError(f"the recording could not be copied: {err}") from err
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    assert cut.first_wall is not None and cut.last_wall is not None
    return ExportResult(
        path=destination,
        start=to_millis(cut.first_wall),
        end=to_millis(cut.last_wall),
        duration=float(cut.video_end),
        bytes=size,
        sha256=digest,
        segments=cut.used,
        frames=cut.frames,
        audio="audio" in cut.streams,
        stopped=stopped,
    )


def _describe(container: Any) -> _Description:
    video = container.streams.video[0]
    ctx = video.codec_context
    audio = container.streams.audio[0] if container.streams.audio else None
    sound = None
    if audio is not None:
        actx = audio.codec_context
        sound = (actx.name, bytes(actx.extradata or b""), actx.sample_rate, actx.channels)
    return _Description((ctx.name, bytes(ctx.extradata or b""), ctx.width, ctx.height), sound)


def _packets(container: Any) -> Iterator[Any]:
    wanted = [container.streams.video[0], *container.streams.audio[:1]]
    for packet in container.demux(wanted):
        if packet.dts is not None and packet.size:
            yield packet


def _copy_segment(path: Path, output: Any, cut: _Cut) -> str | None:
    """Copy what ``path`` holds of the range; a reason when the export must stop before it."""
    try:
        meta = read_metadata(path)
        container = av.open(str(path))
    except OSError as err:
        raise ExportError(f"the segment {path.name} cannot be read: {err.strerror or err}") from err
    with contextlib.closing(container):
        description = _describe(container)
        if cut.description is None:
            cut.description = description
            _add_streams(output, container, cut)
        elif description != cut.description:
            changed = "sound" if description.video == cut.description.video else "video"
            return f"the {changed} parameters change at {meta.start.isoformat()}"
        segment = _Segment(meta.start, meta.media_start * Fraction(1, 90_000), out_start=cut.video_end)
        _copy_packets(container, segment, output, cut)
    if segment.written:
        cut.used.append(path)
    return None


def _add_streams(output: Any, container: Any, cut: _Cut) -> None:
    video = container.streams.video[0]
    cut.streams["video"] = output.add_stream_from_template(video)
    cut.streams["video"].time_base = video.time_base
    if container.streams.audio:
        audio = container.streams.audio[0]
        cut.streams["audio"] = output.add_stream_from_template(audio)
        cut.streams["audio"].time_base = audio.time_base


def _copy_packets(container: Any, segment: _Segment, output: Any, cut: _Cut) -> None:
    """Copy the packets of one open segment that fall in the range.

    Until the export has its first frame, the packets from the latest keyframe at or
    before the start are held back; they go out once a frame after the start shows up
    (or the segment ends), so the file begins at that keyframe."""
    held: list[tuple[Any, Fraction]] = []
    recorded_until = segment.wall0
    for packet in _packets(container):
        if cut.cancel is not None and cut.cancel.is_set():
            raise ExportError("the export was cancelled")
        media = packet.dts * packet.time_base
        wall = segment.wall(media)
        is_video = packet.stream.type == "video"
        if is_video and wall >= cut.end:
            break
        if cut.first_wall is None:
            if is_video:
                recorded_until = segment.wall(media + (packet.duration or 0) * packet.time_base)
            if is_video and packet.is_keyframe and (wall <= cut.start or not held):
                held = [(packet, media)]
            elif held and media >= held[0][1]:
                held.append((packet, media))
            if is_video and wall > cut.start and held:
                _begin(segment, held, output, cut)
                held = []
            continue
        if wall < cut.end:
            _mux(output, segment, packet, media, cut)
    if held and recorded_until > cut.start:  # the start lies within this segment's last frame
        _begin(segment, held, output, cut)


def _begin(segment: _Segment, held: list[tuple[Any, Fraction]], output: Any, cut: _Cut) -> None:
    """The export's first frame: the keyframe heading ``held``; write what was held back."""
    cut.first_wall = segment.wall(held[0][1])
    segment.origin = held[0][1]
    for packet, media in held:
        _mux(output, segment, packet, media, cut)


def _mux(output: Any, segment: _Segment, packet: Any, media: Fraction, cut: _Cut) -> None:
    """Mux one packet at output time ``out_start + media - origin``, in the output track of its kind.
    A sound frame that would not follow the previous one (it overlaps the end of the previous
    segment's sound by rounding) is left out."""
    if segment.origin is None:
        segment.origin = media
    kind = packet.stream.type
    time_base = packet.time_base
    shift = round((segment.out_start - segment.origin) / time_base)
    duration = packet.duration or 0
    if packet.dts + shift <= cut.last_dts.get(kind, -1):
        return
    packet.dts += shift
    cut.last_dts[kind] = packet.dts
    if packet.pts is not None:
        packet.pts += shift
    packet.stream = cut.streams[kind]
    packet.time_base = time_base
    output.mux(packet)
    segment.written += 1
    if kind == "video":
        cut.frames += 1
        cut.video_end = (packet.dts + duration) * time_base
        cut.last_wall = segment.wall(media + duration * time_base)
