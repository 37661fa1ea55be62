"""Reading the top-level boxes of a fragmented MP4 file, and the timing of a ``moof``.

Used by crash recovery to find where the last complete fragment of a segment
ends, and by the segmenter to know when each fragment it writes ends. Only what
those need is read: box sizes and types at the top level, ``tfhd``, ``tfdt``
and ``trun`` inside a ``moof``.

Pure functions, safe from any thread.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["Box", "FragmentTiming", "fragment_timing", "top_level_boxes"]

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


def top_level_boxes(file: BinaryIO, length: int) -> Iterator[Box]:
    """The complete top-level boxes of a file of ``length`` bytes, in order; stops at the
    first box that is cut short or unreadable (the tail of an interrupted write)."""
    offset = 0
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
        track_id = decode_time = duration = 0
        default = None
        for child, body, child_end in _children(moof, start, end):
            flags = int.from_bytes(moof[body + 1 : body + 4], "big")
            if child == b"tfhd":
                track_id = struct.unpack_from(">I", moof, body + 4)[0]
                at = body + 8 + 8 * bool(flags & _TFHD_BASE_OFFSET) + 4 * bool(flags & _TFHD_DESCRIPTION)
                if flags & _TFHD_DURATION:
                    default = struct.unpack_from(">I", moof, at)[0]
            elif child == b"tfdt":
                fmt = ">Q" if moof[body] == 1 else ">I"
                decode_time = struct.unpack_from(fmt, moof, body + 4)[0]
            elif child == b"trun":
                duration += _run_duration(moof, body, child_end, flags, default, track_id, default_durations)
        out.append(FragmentTiming(track_id, decode_time, duration))
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
