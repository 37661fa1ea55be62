"""Where segments go on disk and what a segment file says about itself.

A segment of a camera stream is ``<directory>/<YYYY-MM-DD>/<HH-MM-SS-mmm>.mp4``,
named in UTC after the wall clock of its first sample; while it is being written
it is ``<same>.mp4.part``. Right after its init segment (``ftyp`` + ``moov``) each
file holds a small ``uuid`` box (:func:`metadata_box`) with the start's wall clock,
the media time it stands for, and the codec strings: what crash recovery needs to
know of a ``.part`` file without anyone's memory of it. Players skip unknown
``uuid`` boxes.

Pure functions, safe from any thread.
"""

from __future__ import annotations

import errno
import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

__all__ = [
    "METADATA_UUID",
    "PART_SUFFIX",
    "SegmentMetadata",
    "failure_reason",
    "metadata_box",
    "parse_metadata",
    "segment_path",
    "to_millis",
]

PART_SUFFIX = ".part"
METADATA_UUID = b"hallwatch-rec-v1"
"""The 16-byte extended type of the segment metadata box."""


@dataclass(frozen=True, slots=True)
class SegmentMetadata:
    """What a segment file records about itself (see the module docstring)."""

    start: datetime
    media_start: int
    """The video track's decode time (90 kHz, as written in the file) of the first sample."""
    codec: str
    audio: str | None


def to_millis(moment: datetime) -> datetime:
    """``moment`` in UTC, truncated to the millisecond."""
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def segment_path(directory: Path, start: datetime) -> Path:
    """The final name of the segment that starts at ``start``."""
    start = to_millis(start)
    name = f"{start:%H-%M-%S}-{start.microsecond // 1000:03d}.mp4"
    return directory / f"{start:%Y-%m-%d}" / name


def metadata_box(meta: SegmentMetadata) -> bytes:
    """The ``uuid`` box holding ``meta`` as JSON."""
    body = json.dumps(
        {
            "start_ms": round(meta.start.timestamp() * 1000),
            "media_start": meta.media_start,
            "codec": meta.codec,
            "audio": meta.audio,
        },
        separators=(",", ":"),
    ).encode()
    return struct.pack(">I4s", 8 + 16 + len(body), b"uuid") + METADATA_UUID + body


def parse_metadata(payload: bytes) -> SegmentMetadata | None:
    """The metadata in a ``uuid`` box's payload (after its 8-byte header), or None if it is another one."""
    if payload[:16] != METADATA_UUID:
        return None
    try:
        fields = json.loads(payload[16:])
        start = datetime.fromtimestamp(0, UTC) + timedelta(milliseconds=int(fields["start_ms"]))
        return SegmentMetadata(start, int(fields["media_start"]), str(fields["codec"]), fields.get("audio"))
    except (ValueError, KeyError, TypeError):
        return None


_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the recordings directory is read-only",
    errno.EACCES: "the recordings directory may not be written",
    errno.EPERM: "the recordings directory may not be written",
    errno.ENOENT: "the recordings directory is missing",
    errno.EIO: "the disk reports input/output errors",
}


def failure_reason(err: OSError) -> str:
    """Why writing failed, in our own words (for an operator, not a programmer)."""
    return _REASONS.get(err.errno or 0, f"writing failed ({err.strerror or err})")
