"""The unit that flows through the relay: one encoded access unit.

A :class:`MediaPacket` is immutable and shared by every subscriber of a hub, so
fan-out costs a reference, not a copy. Timestamps use the RTP video clock
(90 kHz) everywhere in the media plane; outputs convert where they must.

Any thread may create packets; they are handed to the event loop once.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Literal

CLOCK_RATE = 90_000
"""Ticks per second of every ``pts`` in the media plane."""

VideoCodec = Literal["h264", "h265"]
AudioCodec = Literal["aac", "opus", "pcmu", "pcma"]
Codec = Literal["h264", "h265", "aac", "opus", "pcmu", "pcma"]
AUDIO_CODECS: frozenset[str] = frozenset({"aac", "opus", "pcmu", "pcma"})


@dataclass(frozen=True, slots=True)
class MediaPacket:
    """One video access unit in Annex-B form (start codes before each NAL unit),
    or one audio frame.

    Keyframes carry their parameter sets (SPS/PPS, and VPS for H.265) in-band, so
    any subscriber can start decoding at any keyframe.

    Audio (``codec`` in :data:`AUDIO_CODECS`) travels in hubs of its own: ``data``
    is one encoded frame as the codec defines it (AAC: a raw access unit without
    ADTS header; Opus: one packet; G.711: its bytes), ``keyframe`` is always True,
    and ``pts`` is in the same 90 kHz clock as video, so the two line up. The
    stream's :class:`AudioInfo` is known to its hub.
    """

    data: bytes
    pts: int
    keyframe: bool
    codec: Codec = "h264"
    received: float = dataclasses.field(default_factory=time.monotonic)
    """``time.monotonic()`` when the last byte of the access unit arrived."""
    dts: int | None = None
    """Decode timestamp (90 kHz), set by sources that know it and by the hub for
    streams that may reorder frames (B-frames; see :mod:`streams.reorder`); None
    means "decoded at ``pts``". See :attr:`decode_ts`."""

    @property
    def decode_ts(self) -> int:
        """When the access unit is decoded: ``dts`` if known, else ``pts``."""
        return self.pts if self.dts is None else self.dts

    @property
    def is_audio(self) -> bool:
        return self.codec in AUDIO_CODECS

    def shifted(self, offset: int) -> MediaPacket:
        """The same access unit with ``offset`` ticks added to its timestamps."""
        if offset == 0:
            return self
        dts = None if self.dts is None else self.dts + offset
        return dataclasses.replace(self, pts=self.pts + offset, dts=dts)


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What a decoder or a muxer needs to know about an audio stream."""

    codec: AudioCodec
    sample_rate: int
    channels: int
    config: bytes = b""
    """AAC: the AudioSpecificConfig (from the SDP's ``config=``); empty otherwise."""

    @property
    def codec_string(self) -> str:
        """RFC 6381 codec string for MSE (AAC only): ``mp4a.40.<object type>``."""
        object_type = self.config[0] >> 3 if self.config else 2
        return f"mp4a.40.{object_type}"


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a decoder or a signalling answer needs to know about a stream."""

    codec: VideoCodec
    width: int
    height: int
    profile: str
    """Human name, for example ``"High"`` or ``"Constrained Baseline"``."""
    profile_level_id: str
    """H.264: six hex digits (profile_idc, constraint flags, level_idc) as in RFC 6184."""
    codec_string: str
    """RFC 6381 codec string for MSE, for example ``"avc1.64001f"``."""
