"""Cutting one camera stream into segments: which packet starts a segment, what goes in it, when.

A :class:`Segmenter` turns the hub's packets into steps for the writer thread:
:class:`Open` (a new file: init segment and metadata), :class:`Data` (one
fragment, as :mod:`streams.formats.fmp4` writes it: one access unit or one AAC
frame) and :class:`Close`. The packets are written as they arrive, never
decoded.

A segment starts at a keyframe and is closed at the first keyframe
``segment_seconds`` after its start, or when the keyframe brings other
parameter sets, or when the sound's description changes. It is closed at once
on an interruption: no packet for a while (:meth:`Segmenter.cut`, called by the
recorder) or a packet that arrives much later than its timestamp says (the hub
keeps timestamps continuous across a reconnect, so the arrival time tells the
gap); the next segment starts at the next keyframe.

Times: each file's timeline starts at its first video sample (decode time
:data:`~streams.formats.fmp4.TIME_OFFSET`); the sound is shifted alike and
frames from before the first video sample are left out. The wall clock of the
first sample comes from the packet's arrival (``received``, monotonic), turned
into wall time once per segment; the end is the start advanced by the media
timestamps. A segment that follows another without interruption starts exactly
where that one ended, unless the two clocks drifted more than
:data:`CHAIN_TOLERANCE` apart, so consecutive segments neither overlap nor leave
a hole. Times are kept in integer milliseconds.

Event loop only (any single thread would do: it holds no locks and does no I/O).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from streams.formats.fmp4 import TIME_OFFSET, Fmp4Writer, Fragment, InitSegment, with_audio
from streams.formats.fmp4_audio import AacWriter
from streams.packets import CLOCK_RATE, AudioInfo, MediaPacket
from streams.recording.layout import SegmentMetadata, metadata_box, segment_path

__all__ = ["CHAIN_TOLERANCE", "GAP_SECONDS", "Close", "Data", "Open", "Segmenter", "Step"]

GAP_SECONDS = 1.0
"""A video packet arriving this much later than its timestamp says, after the previous one: a gap."""
CHAIN_TOLERANCE = 0.2
"""Seconds the wall clock and the media clock may drift apart before a following segment's start
is taken from the wall clock again rather than from the previous segment's end."""


@dataclass(frozen=True, slots=True)
class Open:
    """Start the file ``path`` (its final name; the writer adds ``.part`` while it is open)."""

    path: Path
    head: bytes
    """Init segment and metadata box: the file's first bytes."""
    meta: SegmentMetadata


@dataclass(frozen=True, slots=True)
class Data:
    """Append one fragment; ``end`` is where the video track then ends (90 kHz, as in the file)."""

    data: bytes
    end: int | None
    keyframe: bool


@dataclass(frozen=True, slots=True)
class Close:
    """Finish the open file."""


Step = Open | Data | Close


@dataclass(slots=True)
class _Segment:
    video: Fmp4Writer
    init: InitSegment
    audio: AacWriter | None
    shift: int
    """Ticks added to every packet's timestamps: the first sample decodes at 0 (+ TIME_OFFSET)."""
    first_pts: int
    start_ms: int
    end_ticks: int
    last_decode: int
    last_received: float


class Segmenter:
    """One stream's segments. See the module docstring."""

    def __init__(self, directory: Path, segment_seconds: float) -> None:
        self.directory = directory
        self.segment_ticks = round(segment_seconds * CLOCK_RATE)
        self._segment: _Segment | None = None
        self._chain_ms: int | None = None
        """Where the previous segment ended, when the next one follows it without a gap."""
        self.gaps = 0

    @property
    def open(self) -> bool:
        return self._segment is not None

    @property
    def start(self) -> datetime | None:
        seg = self._segment
        return None if seg is None else _datetime(seg.start_ms)

    def cut(self) -> list[Step]:
        """End the open segment at an interruption; the next starts at the next keyframe."""
        self._chain_ms = None
        return self._close(chain=False)

    def video(self, packet: MediaPacket, audio: AudioInfo | None) -> list[Step]:
        """The steps for one video packet; ``audio`` describes the sound to record with it, if any."""
        steps: list[Step] = []
        seg = self._segment
        if seg is not None:
            late = (packet.received - seg.last_received) - (packet.decode_ts - seg.last_decode) / CLOCK_RATE
            if late > GAP_SECONDS:
                self.gaps += 1
                steps += self.cut()
            elif packet.keyframe and self._split(seg, packet, audio):
                steps += self._close(chain=True)
        seg = self._segment
        if seg is None:
            if packet.keyframe:
                steps += self._begin(packet, audio)
            return steps
        fragment = seg.video.write(packet, seg.shift)
        if fragment is not None:
            steps.append(self._data(seg, packet, fragment))
        return steps

    def audio(self, packet: MediaPacket) -> Data | None:
        """The step for one AAC frame, or None when the open segment has no sound track or
        the frame is from before its first video sample."""
        seg = self._segment
        if seg is None or seg.audio is None or packet.pts < seg.first_pts:
            return None
        fragment = seg.audio.write(packet.shifted(seg.shift))
        return None if fragment is None else Data(fragment.data, None, False)

    def _split(self, seg: _Segment, packet: MediaPacket, audio: AudioInfo | None) -> bool:
        if packet.decode_ts + seg.shift >= self.segment_ticks:
            return True
        if (audio if audio is not None and audio.codec == "aac" else None) != seg.init.audio:
            return True
        probe = Fmp4Writer().write(packet)
        return probe is not None and probe.init.parameter_sets != seg.init.parameter_sets

    def _begin(self, packet: MediaPacket, audio: AudioInfo | None) -> list[Step]:
        shift = -packet.decode_ts
        video = Fmp4Writer()
        fragment = video.write(packet, shift)
        if fragment is None:  # no parameter sets yet: wait for a keyframe that has them
            return []
        sound = audio if audio is not None and audio.codec == "aac" else None
        init = with_audio(fragment.init, sound)
        wall_ms = round((packet.received + time.time() - time.monotonic()) * 1000)
        chain = self._chain_ms
        start_ms = chain if chain is not None and abs(wall_ms - chain) <= CHAIN_TOLERANCE * 1000 else wall_ms
        seg = _Segment(
            video=video,
            init=init,
            audio=None if sound is None else AacWriter(sound, TIME_OFFSET),
            shift=shift,
            first_pts=packet.pts,
            start_ms=start_ms,
            end_ticks=TIME_OFFSET,
            last_decode=packet.decode_ts,
            last_received=packet.received,
        )
        self._segment = seg
        meta = SegmentMetadata(_datetime(start_ms), TIME_OFFSET, init.codec, _audio_codec(init))
        head = init.data + metadata_box(meta)
        return [
            Open(segment_path(self.directory, meta.start), head, meta),
            self._data(seg, packet, fragment),
        ]

    def _data(self, seg: _Segment, packet: MediaPacket, fragment: Fragment) -> Data:
        seg.end_ticks = max(seg.end_ticks, fragment.end)
        seg.last_decode = packet.decode_ts
        seg.last_received = packet.received
        return Data(fragment.data, seg.end_ticks, packet.keyframe)

    def _close(self, *, chain: bool) -> list[Step]:
        seg, self._segment = self._segment, None
        if seg is None:
            return []
        if chain:
            self._chain_ms = seg.start_ms + (seg.end_ticks - TIME_OFFSET) * 1000 // CLOCK_RATE
        return [Close()]


def _datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(0, UTC) + timedelta(milliseconds=ms)


def _audio_codec(init: InitSegment) -> str | None:
    return None if init.audio is None else init.audio.codec_string
