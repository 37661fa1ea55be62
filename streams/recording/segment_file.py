"""Reading one recorded segment file fragment by fragment: its head, its keyframes, its fragments.

A :class:`SegmentFile` opens a segment (the ``.mp4``, or the ``.mp4.part``
still being written: whichever exists now; an open descriptor keeps reading
after the writer renames it) and walks its top-level boxes through a buffered
reader, never holding more than one batch of fragments. The head (``ftyp`` +
``moov``, then the metadata ``uuid`` box) is read on opening. A ``moof`` counts
only with the whole ``mdat`` after it, so a file being written is read up to its
last complete fragment, and more on a later read once the writer has added some.

Blocking: every method reads the file. Use one from one thread at a time
(playback hands it to ``asyncio.to_thread``).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from streams.formats.fmp4 import TRACK_ID
from streams.formats.fmp4_audio import AUDIO_TRACK_ID, FRAME_SAMPLES
from streams.packets import CLOCK_RATE
from streams.recording.boxes import FragmentTiming, Track, fragment_timing, top_level_boxes, tracks
from streams.recording.layout import PART_SUFFIX, SegmentMetadata, parse_metadata

__all__ = ["RawFragment", "SegmentFile", "UnreadableSegment", "recorded_end"]

_BUFFER = 256 * 1024
_DEFAULT_DURATIONS = {AUDIO_TRACK_ID: FRAME_SAMPLES}


class UnreadableSegment(Exception):
    """The file is gone (retention deleted it) or is not a segment of ours."""


@dataclass(frozen=True, slots=True)
class RawFragment:
    """One ``moof`` + ``mdat`` as it is in the file, and its timing."""

    data: bytes
    moof_size: int
    runs: tuple[FragmentTiming, ...]
    offset: int

    @property
    def video(self) -> FragmentTiming | None:
        return next((run for run in self.runs if run.track_id == TRACK_ID), None)


class SegmentFile:
    """One segment file, open for reading. See the module docstring."""

    def __init__(self, path: Path) -> None:
        self.file = _open(path)
        try:
            self.init, moov, self.meta, self.position = self._head()
        except BaseException:
            self.file.close()
            raise
        self.tracks: dict[int, Track] = {track.track_id: track for track in tracks(moov)}

    @property
    def start_ms(self) -> int:
        return round(self.meta.start.timestamp() * 1000)

    def wall_ms(self, decode_time: int) -> int:
        """The wall clock (ms) of a video decode time of this file."""
        return self.start_ms + (decode_time - self.meta.media_start) * 1000 // CLOCK_RATE

    def close(self) -> None:
        self.file.close()

    def _length(self) -> int:
        return os.fstat(self.file.fileno()).st_size

    def _head(self) -> tuple[bytes, bytes, SegmentMetadata, int]:
        """(init segment, its ``moov``, metadata, where the fragments begin)."""
        head: list[bytes] = []
        for box in top_level_boxes(self.file, self._length()):
            self.file.seek(box.offset)
            data = self.file.read(box.size)
            if box.kind in (b"ftyp", b"moov"):
                head.append(data)
            elif box.kind == b"uuid":
                meta = parse_metadata(data[box.header :])
                if meta is None or len(head) != 2:
                    break
                return b"".join(head), head[1], meta, box.end
            else:
                break
        raise UnreadableSegment(f"{self.file.name} has no segment head")

    def fragments(self, max_bytes: int) -> list[RawFragment]:
        """The complete fragments from the current position on, about ``max_bytes`` of them
        at most (at least one); empty at the end of what is written now."""
        out: list[RawFragment] = []
        size = 0
        moof: bytes | None = None
        moof_at = 0
        length = self._length()
        for box in top_level_boxes(self.file, length, self.position):
            at = box.offset
            if box.kind == b"moof":
                self.file.seek(at)
                moof, moof_at = self.file.read(box.size), at
                continue
            if box.kind != b"mdat" or moof is None:
                moof = None
                continue
            self.file.seek(at)
            data = moof + self.file.read(box.size)
            runs = tuple(fragment_timing(moof, _DEFAULT_DURATIONS))
            out.append(RawFragment(data, len(moof), runs, moof_at))
            size += len(data)
            moof = None
            if size >= max_bytes:
                break
        if out:
            last = out[-1]
            self.position = last.offset + len(last.data)
        return out

    def seek_keyframe(self, wall_ms: int) -> bool:
        """Move to the last video keyframe at or before ``wall_ms``, or the first one after it
        when none is before; False when the file has no keyframe (yet) or ends before ``wall_ms``."""
        best: int | None = None
        end = 0
        start = self.position
        while batch := self.fragments(_BUFFER):
            for fragment in batch:
                video = fragment.video
                if video is None:
                    continue
                end = self.wall_ms(video.end)
                if not video.sync:
                    continue
                if best is not None and self.wall_ms(video.decode_time) > wall_ms:
                    self.position = best
                    return True
                best = fragment.offset
        if best is None or end <= wall_ms:  # no keyframe, or all of it is before the moment
            self.position = start
            return False
        self.position = best
        return True

    def audio_rate(self) -> int | None:
        track = self.tracks.get(AUDIO_TRACK_ID)
        return None if track is None else track.timescale

    def size(self) -> tuple[int, int]:
        video = self.tracks.get(TRACK_ID)
        return (0, 0) if video is None else (video.width, video.height)


def _open(path: Path) -> BinaryIO:
    """The segment, under its final name or its name while being written."""
    other = (
        path.with_name(path.name.removesuffix(PART_SUFFIX))
        if path.name.endswith(PART_SUFFIX)
        else path.with_name(path.name + PART_SUFFIX)
    )
    for candidate in (path, other):
        with contextlib.suppress(FileNotFoundError):
            return candidate.open("rb", buffering=_BUFFER)
    raise UnreadableSegment(f"{path} is gone")


def recorded_end(path: Path, resume: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """``(wall ms, offset)``: where the video of a segment being written ends now, and how far
    the file was read, to ``resume`` from there next time; None if it has no fragment yet."""
    try:
        segment = SegmentFile(path)
    except (UnreadableSegment, OSError):
        return None
    with contextlib.closing(segment):
        end, offset = resume if resume is not None else (None, segment.position)
        segment.position = offset
        while batch := segment.fragments(4 * _BUFFER):
            for fragment in batch:
                video = fragment.video
                if video is not None:
                    end = segment.wall_ms(video.end)
        return None if end is None else (end, segment.position)
