"""The AAC track of a fragmented MP4: its ``trak`` and ``trex`` boxes, its fragments, its timeline.

:mod:`streams.formats.fmp4` builds an init segment with this second track
(track 2, ``soun``, an ``mp4a`` sample entry whose ``esds`` carries the
stream's AudioSpecificConfig, timescale = sample rate) when a stream has AAC
audio. The audio fragments are ``moof`` + ``mdat`` of their own, with one
``traf`` for track 2, interleaved with the video fragments by whoever sends
them.

One AAC frame per fragment, sent as it arrives: in a muxed MSE SourceBuffer the
playable range ends where the shorter track ends, so audio held back to fill a
bigger fragment would hold the picture back too. The cost is a ``moof`` (about
100 bytes) per frame: at 48 kHz, 47 frames a second, under 40 kbit/s, small next
to the video; IP cameras mostly send 8 or 16 kHz, a third of that or less.

Timing: a frame's decode time is its ``pts`` (the media plane's 90 kHz clock,
the same origin as video) plus :data:`~streams.formats.fmp4.TIME_OFFSET`,
converted to the sample rate, so audio and video line up. Packet timestamps
jitter (rounding to 90 kHz, sources that stamp arrival times), and an audio
track must not have gaps or overlaps between frames, so :class:`AacWriter`
writes each frame exactly one frame duration (1024 samples) after the previous
one and only follows the packets' clock again when the two drift more than half
a frame apart, on average over the last frames (one early or late packet is
jitter, not drift): ahead (a slow sample clock) it leaves a gap, behind (a fast
one) it drops a frame. A jump ahead of more than two frames (frames lost)
restarts the timeline there at once, and so does a jump back of more than a
second; a jump back of more than two frames leaves out the frames it would
overlap.

The functions are pure and safe from any thread; an :class:`AacWriter` holds
one audio stream's state and is used from the event loop only.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from streams.formats.fmp4_config import box, esds, full_box, media_information
from streams.packets import CLOCK_RATE, AudioInfo, MediaPacket

__all__ = [
    "AUDIO_TRACK_ID",
    "FRAME_SAMPLES",
    "AacWriter",
    "AudioFragment",
    "audio_fragment",
    "audio_trak",
    "audio_trex",
]

log = logging.getLogger(__name__)

AUDIO_TRACK_ID = 2
FRAME_SAMPLES = 1024
"""Samples in one AAC-LC frame (per channel)."""
RESTART_TICKS = CLOCK_RATE
"""How far (90 kHz) a frame may be behind the written timeline before it restarts there
rather than being dropped."""
JUMP_FRAMES = 2
"""A packet further ahead of the written timeline than this (in frames) restarts it at once."""
_SMOOTHING = 8
"""Packets over which the drift is averaged (exponential moving average)."""

_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_LANGUAGE_UND = 0x55C4
_SYNC_FLAGS = 0x02000000  # sample_depends_on = 2: every AAC frame decodes on its own
_TRUN_FLAGS = 0x000001 | 0x000100 | 0x000200  # data offset, per-sample duration and size
_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000


def audio_trak(info: AudioInfo) -> bytes:
    """The ``trak`` box of an AAC track (track 2, timescale = sample rate)."""
    tkhd = full_box(
        b"tkhd", 0, 3, struct.pack(">IIIII8xHHH2x", 0, 0, AUDIO_TRACK_ID, 0, 0, 0, 0, 0x100), _MATRIX,
        bytes(8),  # width and height 0
    )  # fmt: skip
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, info.sample_rate, 0, _LANGUAGE_UND, 0))
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, b"soun"), b"SoundHandler\x00")
    smhd = full_box(b"smhd", 0, 0, bytes(4))  # balance 0
    rate = info.sample_rate << 16 if info.sample_rate < 0x10000 else 0  # 16.16; the esds has the real one
    entry = box(
        b"mp4a",
        # data_reference_index; channelcount, samplesize, pre_defined, reserved, samplerate
        struct.pack(">6xH8xHHHHI", 1, info.channels, 16, 0, 0, rate),
        esds(info.config, track_id=AUDIO_TRACK_ID),
    )
    mdia = box(b"mdia", mdhd, hdlr, media_information(smhd, entry))
    return box(b"trak", tkhd, mdia)


def audio_trex() -> bytes:
    """The ``trex`` box of the AAC track: frames of 1024 samples, each a sync sample."""
    return full_box(b"trex", 0, 0, struct.pack(">IIIII", AUDIO_TRACK_ID, 1, FRAME_SAMPLES, 0, _SYNC_FLAGS))


def audio_fragment(sequence: int, *, decode_time: int, frames: Sequence[bytes]) -> bytes:
    """``moof`` + ``mdat`` of AAC ``frames`` (raw, without ADTS), 1024 samples each,
    the first decoded at ``decode_time`` (in samples)."""
    count = len(frames)
    trun_size = 20 + 8 * count
    traf_size = 8 + 16 + 20 + trun_size
    moof_size = 8 + 16 + traf_size
    size = sum(len(f) for f in frames)
    head = struct.pack(
        ">I4s" "I4sII" "I4s" "I4sII" "I4sIQ" "I4sIIi",
        moof_size, b"moof", 16, b"mfhd", 0, sequence,
        traf_size, b"traf", 16, b"tfhd", _TFHD_DEFAULT_BASE_IS_MOOF, AUDIO_TRACK_ID,
        20, b"tfdt", 1 << 24, decode_time,
        trun_size, b"trun", _TRUN_FLAGS, count, moof_size + 8,
    )  # fmt: skip
    samples = b"".join(struct.pack(">II", FRAME_SAMPLES, len(f)) for f in frames)
    return b"".join((head, samples, struct.pack(">I4s", 8 + size, b"mdat"), *frames))


@dataclass(frozen=True, slots=True)
class AudioFragment:
    """One AAC frame as ``moof`` + ``mdat``."""

    data: bytes
    pts: int
    """The packet's presentation time (90 kHz, without the file's offset)."""
    decode_time: int
    """Where the frame was written, in samples (with the file's offset)."""


class AacWriter:
    """One AAC stream's fragments, in the order its hub publishes them. See the module docstring."""

    def __init__(self, info: AudioInfo, time_offset: int) -> None:
        """``time_offset``: 90 kHz ticks added to every time, as the video track does."""
        self.info = info
        self._offset = time_offset
        self._sequence = 0
        self._next: int | None = None
        """Where the next frame goes on the written timeline (samples), once started."""
        self._drift = 0.0
        """Packets' clock minus the written timeline (samples), averaged."""
        self._catching_up = False
        """Leaving out frames after the clock stepped back, until it is level again."""
        self.written = 0
        self.dropped = 0
        """Frames left out because the timeline ran ahead of the packets' clock."""
        self.resyncs = 0
        """Times the timeline jumped to follow the packets' clock."""

    def _samples(self, pts: int) -> int:
        """``pts`` (90 kHz) on the audio timescale, offset included, rounded to the nearest sample."""
        return ((pts + self._offset) * self.info.sample_rate * 2 + CLOCK_RATE) // (2 * CLOCK_RATE)

    def write(self, packet: MediaPacket) -> AudioFragment | None:
        """The fragment of one AAC frame, or None when the frame is left out (see the module docstring)."""
        actual = max(0, self._samples(packet.pts))
        expected = self._next
        drift = 0 if expected is None else actual - expected
        jump = JUMP_FRAMES * FRAME_SAMPLES
        if expected is None or drift > jump or -drift * CLOCK_RATE > RESTART_TICKS * self.info.sample_rate:
            if expected is not None:
                log.debug("audio timeline jumps by %d samples", drift)
                self.resyncs += 1
            at, self._drift = actual, 0.0
        elif drift < -jump or (self._catching_up and drift < -FRAME_SAMPLES / 2):
            # The clock stepped back: leave out the frames it would overlap.
            self._catching_up = True
            self.dropped += 1
            return None
        else:
            self._catching_up = False
            self._drift += (drift - self._drift) / _SMOOTHING
            at = expected
            if self._drift > FRAME_SAMPLES / 2:  # the packets' clock runs ahead: leave a gap
                self.resyncs += 1
                at += round(self._drift)
                self._drift -= round(self._drift)
            elif self._drift < -FRAME_SAMPLES / 2:  # it lags: leave this frame out
                self.dropped += 1
                self._drift += FRAME_SAMPLES  # the next packet is a frame further on, the timeline is not
                return None
        self._next = at + FRAME_SAMPLES
        self._sequence += 1
        self.written += 1
        data = audio_fragment(self._sequence, decode_time=at, frames=(packet.data,))
        return AudioFragment(data, packet.pts, at)
