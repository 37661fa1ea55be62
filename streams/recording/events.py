"""What the recorder tells the control plane: a segment opened or closed, recording failed or resumed.

These are emitted through :attr:`~streams.outputs.base.StreamContext.emit` and so reach the
manager's output listeners on the event loop. Plain frozen data, safe from any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from streams.specs import StreamName

__all__ = ["RecordingFailed", "RecordingResumed", "SegmentClosed", "SegmentInfo", "SegmentOpened"]


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """One finished segment file: where it is, which span of time it covers, what it holds."""

    camera_id: str
    stream: StreamName
    path: Path
    start: datetime
    """Wall clock (aware UTC, millisecond precision) of the first sample."""
    end: datetime
    """Wall clock of the end of the last video sample."""
    bytes: int
    codec: str
    """RFC 6381 codec string of the video track, for example ``avc1.64001f``."""
    audio: str | None
    """RFC 6381 codec string of the sound track (``mp4a.40.2``), or None."""
    sha256: str
    """Hex digest of the whole file."""
    recovered: bool = False
    """Closed by :func:`~streams.recording.recovery.recover` after a crash, not by the recorder."""

    @property
    def duration(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True, slots=True)
class SegmentOpened:
    """A segment file was started: it is ``path`` plus ``.part`` until its :class:`SegmentClosed`,
    and can be played up to its last complete fragment meanwhile."""

    camera_id: str
    stream: StreamName
    path: Path
    """The final name."""
    start: datetime
    codec: str
    audio: str | None


@dataclass(frozen=True, slots=True)
class SegmentClosed:
    """A segment was finished and renamed to its final name."""

    info: SegmentInfo


@dataclass(frozen=True, slots=True)
class RecordingFailed:
    """Recording of a stream stopped because writing fails (once per episode, not per write)."""

    camera_id: str
    stream: StreamName
    reason: str
    """In our own words: "the disk is full", "the recordings directory is read-only", ..."""


@dataclass(frozen=True, slots=True)
class RecordingResumed:
    """Writing works again after a :class:`RecordingFailed`; segments follow."""

    camera_id: str
    stream: StreamName
