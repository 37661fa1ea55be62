"""Reading one recorded segment file fragment by fragment: its head, its keyframes, its fragments.

A :class:`SegmentFile` opens a segment (the ``.mp4``, or the ``.mp4.part``
still being written: whichever exists now; an open descriptor keeps reading
after the writer renames it) and walks its top-level boxes through a buffered
reader, never holding more than one batch of fragments. The head (``ftyp`` +
``moov``, then the metadata ``uuid`` box) is read on opening. A ``moof`` counts
only with the whole ``mdat`` after it, so a file being written is read up to its
last complete fragment, and more on a later read once the writer has added some.

Finding the keyframe for a moment late in a long segment does not read the
segment up to it: :meth:`SegmentFile.seek_keyframe` first bisects the file by
time, probing a few places for the next ``moof`` header (its type, its ``mfhd``
child, and an ``mdat`` right after it), then reads on from
:data:`SEARCH_BACK` seconds before the moment. Reading from the start made the
first picture of a moment 1.1-1.4 ms later per second into its segment on a cold
cache (``bench/record.py --playback``).

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
_PROBE = 64 * 1024
"""Bytes read at a probed offset to find the next fragment."""
_MAX_MOOF = 64 * 1024
SEARCH_BACK = 12.0
"""Seconds before the moment asked for where the reading for its keyframe starts, when the
file is bisected: longer than any keyframe interval a camera is configured with here."""
_BISECT_ABOVE = 4 * 1024 * 1024
"""Files smaller than this are read from the start."""
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
        start = self.position
        near = self._bisect(wall_ms - round(SEARCH_BACK * 1000))
        if near is not None:
            self.position = near
            if self._scan_keyframe(wall_ms) and self._keyframe_not_after(wall_ms):
                return True
            self.position = start  # no keyframe in the last SEARCH_BACK seconds: read it all
        return self._scan_keyframe(wall_ms)

    def _keyframe_not_after(self, wall_ms: int) -> bool:
        batch = self.fragments(1)
        self.position = batch[0].offset if batch else self.position
        video = batch[0].video if batch else None
        return video is not None and self.wall_ms(video.decode_time) <= wall_ms

    def _bisect(self, wall_ms: int) -> int | None:
        """The offset of a fragment shortly before ``wall_ms`` in a large file, or None (a small
        file, a moment near its start, or no fragment found where one was looked for)."""
        length = self._length()
        low, high = self.position, length
        if length - low < _BISECT_ABOVE:
            return None
        found: int | None = None
        while high - low > 2 * _PROBE:
            probe = self._probe((low + high) // 2, high)
            if probe is None:
                high = (low + high) // 2
                continue
            offset, decode_time = probe
            if self.wall_ms(decode_time) <= wall_ms:
                low, found = offset, offset
            else:
                high = (low + high) // 2
        return found

    def _probe(self, offset: int, limit: int) -> tuple[int, int] | None:
        """``(offset, video decode time)`` of the first video fragment found from ``offset`` on
        (before ``limit``), or None."""
        while offset < limit:
            self.file.seek(offset)
            chunk = self.file.read(_PROBE + 16)
            at = chunk.find(b"moof", 4)
            while at >= 0:
                found = self._fragment_at(offset + at - 4)
                if found is not None:
                    return found
                at = chunk.find(b"moof", at + 1)
            if len(chunk) <= _PROBE:
                return None
            offset += _PROBE
        return None

    def _fragment_at(self, offset: int) -> tuple[int, int] | None:
        """The fragment starting at ``offset`` if one truly does there (a ``moof`` with its
        ``mfhd`` and a whole ``mdat`` after it), as ``(offset, video decode time)``; None for
        a non-video fragment or bytes that only look like one."""
        self.file.seek(offset)
        head = self.file.read(16)
        if len(head) < 16 or head[4:8] != b"moof" or head[12:16] != b"mfhd":
            return None
        size = int.from_bytes(head[:4], "big")
        if not 24 <= size <= _MAX_MOOF:
            return None
        self.file.seek(offset)
        moof = self.file.read(size + 8)
        if len(moof) < size + 8 or moof[size + 4 : size + 8] != b"mdat":
            return None
        if offset + size + int.from_bytes(moof[size : size + 4], "big") > self._length():
            return None
        video = next(
            (r for r in fragment_timing(moof[:size], _DEFAULT_DURATIONS) if r.track_id == TRACK_ID), None
        )
        return None if video is None else (offset, video.decode_time)

    def _scan_keyframe(self, wall_ms: int) -> bool:
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

    def growing(self) -> bool:
        """Whether the file is still being written: opened as ``.part``, and that name still
        names it (the writer renames it when it closes the segment)."""
        name = str(self.file.name)
        if not name.endswith(PART_SUFFIX):
            return False
        try:
            return os.stat(name).st_ino == os.fstat(self.file.fileno()).st_ino
        except FileNotFoundError:
            return False

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
