"""Reading the top-level boxes of a fragmented MP4 file, and the timing of a ``moof``.

Used by crash recovery to find where the last complete fragment of a segment
ends, by the segmenter to know when each fragment it writes ends, and by
playback to find keyframes and rewrite decode times. Only what those need is
read: box sizes and types at the top level, ``mfhd``, ``tfhd``, ``tfdt`` and
``trun`` inside a ``moof``, and each track's ``tkhd`` and ``mdhd`` inside a ``moov``.

Pure functions, safe from any thread.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["Box", "FragmentTiming", "Track", "fragment_timing", "sequence_field", "top_level_boxes", "tracks"]

_HEADER = struct.Struct(">I4s")
_TRUN_DATA_OFFSET = 0x000001
_TRUN_FIRST_FLAGS = 0x000004
_TRUN_DURATION = 0x000100
_TRUN_SIZE = 0x000200
_TRUN_FLAGS = 0x000400
_TRUN_CTO = 0x000800
_TFHD_BASE_OFFSET = 0x000001
_TFHD_DESCRIPTION = 0x000002
_TFHD_DURATION = 0x000008
_TFHD_SIZE = 0x000010
_TFHD_FLAGS = 0x000020
_NON_SYNC = 0x00010000


@dataclass(frozen=True, slots=True)
class Box:
    kind: bytes
    offset: int
    size: int
    """Whole box, header included."""
    header: int
    """8, or 16 for a box with a 64-bit size."""

    @property
    def end(self) -> int:
        return self.offset + self.size


def top_level_boxes(file: BinaryIO, length: int, start: int = 0) -> Iterator[Box]:
    """The complete top-level boxes of a file of ``length`` bytes from offset ``start`` on,
    in order; stops at the first box that is cut short or unreadable (the tail of an
    interrupted write)."""
    offset = start
    while offset + 8 <= length:
        file.seek(offset)
        head = file.read(16)
        size, kind = _HEADER.unpack_from(head)
        header = 8
        if size == 1 and len(head) == 16:
            size, header = struct.unpack_from(">Q", head, 8)[0], 16
        if size < header or offset + size > length:
            return
        yield Box(kind, offset, size, header)
        offset += size


@dataclass(frozen=True, slots=True)
class FragmentTiming:
    """One track run of a ``moof``: the track, its first decode time, and its total duration
    (in the track's timescale)."""

    track_id: int
    decode_time: int
    duration: int
    sync: bool = True
    """Whether the run's first sample is a sync sample (its flags lack ``sample_is_non_sync_sample``)."""
    time_field: int = 0
    """Where the ``tfdt`` decode time lies in the ``moof`` (0: the run has none)."""
    wide_time: bool = True
    """The ``tfdt`` decode time is 64 bits (version 1), else 32."""

    @property
    def end(self) -> int:
        return self.decode_time + self.duration


def _children(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    while start + 8 <= end:
        size, kind = _HEADER.unpack_from(data, start)
        if size < 8 or start + size > end:
            return
        yield kind, start + 8, start + size
        start += size


def fragment_timing(moof: bytes, default_durations: dict[int, int] | None = None) -> list[FragmentTiming]:
    """The timing of each ``traf`` of a ``moof`` box (given whole, header included).

    ``default_durations``: per track, the ``trex`` default sample duration, for runs that
    carry neither a per-sample nor a ``tfhd`` default duration (our audio track).
    """
    out: list[FragmentTiming] = []
    for kind, start, end in _children(moof, 8, len(moof)):
        if kind != b"traf":
            continue
        track_id = decode_time = duration = time_field = 0
        wide = sync = True
        default: int | None = None
        default_flags: int | None = None
        first_flags: int | None = None
        for child, body, child_end in _children(moof, start, end):
            flags = int.from_bytes(moof[body + 1 : body + 4], "big")
            if child == b"tfhd":
                track_id = struct.unpack_from(">I", moof, body + 4)[0]
                at = body + 8 + 8 * bool(flags & _TFHD_BASE_OFFSET) + 4 * bool(flags & _TFHD_DESCRIPTION)
                if flags & _TFHD_DURATION:
                    default = struct.unpack_from(">I", moof, at)[0]
                at += 4 * bool(flags & _TFHD_DURATION) + 4 * bool(flags & _TFHD_SIZE)
                if flags & _TFHD_FLAGS:
                    default_flags = struct.unpack_from(">I", moof, at)[0]
            elif child == b"tfdt":
                wide, time_field = moof[body] == 1, body + 4
                decode_time = struct.unpack_from(">Q" if wide else ">I", moof, time_field)[0]
            elif child == b"trun":
                if first_flags is None:
                    first_flags = _first_sample_flags(moof, body, child_end, flags)
                duration += _run_duration(moof, body, child_end, flags, default, track_id, default_durations)
        sample_flags = first_flags if first_flags is not None else default_flags
        if sample_flags is not None:
            sync = not sample_flags & _NON_SYNC
        out.append(FragmentTiming(track_id, decode_time, duration, sync, time_field, wide))
    return out


def sequence_field(moof: bytes) -> int | None:
    """Where the ``mfhd`` sequence number lies in a ``moof`` (given whole), or None."""
    for kind, start, _ in _children(moof, 8, len(moof)):
        if kind == b"mfhd":
            return start + 4
    return None


def _first_sample_flags(data: bytes, body: int, end: int, flags: int) -> int | None:
    """The flags of a run's first sample, when the ``trun`` gives them."""
    at = body + 8 + 4 * bool(flags & _TRUN_DATA_OFFSET)
    if flags & _TRUN_FIRST_FLAGS:
        return int.from_bytes(data[at : at + 4], "big")
    if flags & _TRUN_FLAGS and int.from_bytes(data[body + 4 : body + 8], "big"):
        at += 4 * bool(flags & _TRUN_DURATION) + 4 * bool(flags & _TRUN_SIZE)
        return int.from_bytes(data[at : at + 4], "big") if at + 4 <= end else None
    return None


@dataclass(frozen=True, slots=True)
class Track:
    """One track of a ``moov``: its timescale and, for a video track, its picture size."""

    track_id: int
    timescale: int
    width: int
    height: int


def tracks(moov: bytes) -> list[Track]:
    """The tracks of a ``moov`` box (given whole, header included), in order."""
    out: list[Track] = []
    for kind, start, end in _children(moov, 8, len(moov)):
        if kind != b"trak":
            continue
        track_id = timescale = width = height = 0
        for child, body, child_end in _children(moov, start, end):
            if child == b"tkhd":
                wide = moov[body] == 1
                track_id = struct.unpack_from(">I", moov, body + (20 if wide else 12))[0]
                width, height = (v >> 16 for v in struct.unpack_from(">II", moov, child_end - 8))
            elif child == b"mdia":
                for grandchild, inner, _ in _children(moov, body, child_end):
                    if grandchild == b"mdhd":
                        timescale = struct.unpack_from(">I", moov, inner + (20 if moov[inner] == 1 else 12))[
                            0
                        ]
        out.append(Track(track_id, timescale, width, height))
    return out


def _run_duration(
    data: bytes,
    body: int,
    end: int,
    flags: int,
    default: int | None,
    track_id: int,
    defaults: dict[int, int] | None,
) -> int:
    count = int.from_bytes(data[body + 4 : body + 8], "big")
    at = body + 8 + 4 * bool(flags & _TRUN_DATA_OFFSET) + 4 * bool(flags & _TRUN_FIRST_FLAGS)
    if not flags & _TRUN_DURATION:
        per_sample = default if default is not None else (defaults or {}).get(track_id, 0)
        return count * per_sample
    stride = 4 * sum(bool(flags & f) for f in (_TRUN_DURATION, _TRUN_SIZE, _TRUN_FLAGS, _TRUN_CTO))
    total = 0
    for _ in range(count):
        if at + 4 > end:
            break
        total += int.from_bytes(data[at : at + 4], "big")
        at += stride
    return total
