"""Continuous recording: each recorded camera stream written, as it arrives, to fragmented MP4 segments.

The :class:`Recorder` is a stream output (kind ``"recorder"``); :func:`recover`
finishes the segments a crash left open. See :mod:`streams.recording.recorder`.
"""

from streams.recording.events import (
    RecordingFailed,
    RecordingResumed,
    SegmentClosed,
    SegmentInfo,
    SegmentOpened,
)
from streams.recording.recorder import Recorder
from streams.recording.recovery import recover

__all__ = [
    "Recorder",
    "RecordingFailed",
    "RecordingResumed",
    "SegmentClosed",
    "SegmentInfo",
    "SegmentOpened",
    "recover",
]
