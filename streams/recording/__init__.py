"""Continuous recording: each recorded camera stream written, as it arrives, to fragmented MP4 segments.

The :class:`Recorder` is a stream output (kind ``"recorder"``); :func:`recover`
finishes the segments a crash left open; :func:`export_range` cuts a range
out of segments into one MP4 file. See :mod:`streams.recording.recorder`.
"""

from streams.recording.events import (
    RecordingFailed,
    RecordingResumed,
    SegmentClosed,
    SegmentInfo,
    SegmentOpened,
)
from streams.recording.export import ExportError, ExportResult, export_range
from streams.recording.recorder import Recorder
from streams.recording.recovery import recover

__all__ = [
    "ExportError",
    "ExportResult",
    "Recorder",
    "RecordingFailed",
    "RecordingResumed",
    "SegmentClosed",
    "SegmentInfo",
    "SegmentOpened",
    "export_range",
    "recover",
]
