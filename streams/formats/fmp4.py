"""Fragmented MP4 (ISO BMFF) of one video track, and optionally an AAC track, for Media Source Extensions.

An init segment (``ftyp`` + ``moov``) describes the track from the keyframe's
in-band parameter sets, which go into its ``avcC``/``hvcC`` box; then every
access unit becomes one fragment (``moof`` + ``mdat``) of a single sample, sent
as soon as the access unit arrives: no frame of look-ahead. The sample holds the
access unit's NAL units with 4-byte length prefixes, without access unit
delimiters and parameter sets (those live in the init segment; when they
change, a new init segment is due). :func:`with_audio` adds an AAC track
(track 2) to an init segment; its fragments come from
:mod:`streams.formats.fmp4_audio`.

Times are in the media plane's 90 kHz clock: the sample's decode time is the
packet's ``decode_ts``, its composition offset ``pts - decode_ts`` (a signed
``trun`` version 1 field), and :data:`TIME_OFFSET` is added to both so that
the slightly negative decode times of B-frame streams stay positive. A
sample's duration is not known when it is sent (that would need the next
packet): :class:`Fmp4Writer` uses the previous decode-time step, or the frame
period in streams that reorder frames.

The functions are pure and safe from any thread; an :class:`Fmp4Writer` holds
one camera's state and is used from the event loop only.
"""

from __future__ import annotations

import collections
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from streams.codecs import h264, h265
from streams.formats.fmp4_audio import AUDIO_TRACK_ID, audio_trak, audio_trex
from streams.formats.fmp4_config import avcc, hvcc, media_information
from streams.formats.fmp4_config import box as _box
from streams.formats.fmp4_config import full_box as _full_box
from streams.packets import CLOCK_RATE, AudioInfo, Codec, MediaPacket
from streams.reorder import frame_period

__all__ = [
    "TIME_OFFSET",
    "Fmp4Writer",
    "Fragment",
    "InitSegment",
    "codec_string",
    "fragment",
    "init_segment",
    "split_access_unit",
    "with_audio",
]

log = logging.getLogger(__name__)

TIMESCALE = CLOCK_RATE
TIME_OFFSET = 10 * CLOCK_RATE
"""Ticks added to every decode and presentation time written (10 s)."""
TRACK_ID = 1
_RECENT = 16
"""Presentation times remembered to tell the frame period of a stream that reorders frames."""

_SYNC_FLAGS = 0x02000000  # sample_depends_on = 2 (depends on no other sample)
_NON_SYNC_FLAGS = 0x01010000  # sample_depends_on = 1, sample_is_non_sync_sample
_TRUN_FLAGS = 0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800  # data offset, duration, size, flags, cto
_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
# A fragment's boxes up to the sample data, in one struct: moof (104 bytes) = header 8 + mfhd 16
# + traf (header 8 + tfhd 16 + tfdt 20 + trun 36), then mdat's 8-byte header.
_FRAGMENT_HEAD = struct.Struct(
    ">I4s" "I4sII" "I4s" "I4sII" "I4sIQ" "I4sIIi" "IIIi" "I4s"
    # moof  mfhd    traf   tfhd    tfdt    trun head, per-sample fields  mdat
)  # fmt: skip
_DATA_OFFSET = _FRAGMENT_HEAD.size
"""From the start of ``moof`` to the sample (trun's data_offset)."""
_HEAD_START = (104, b"moof", 16, b"mfhd", 0)
_HEAD_TRAF = (80, b"traf", 16, b"tfhd", _TFHD_DEFAULT_BASE_IS_MOOF, TRACK_ID, 20, b"tfdt", 1 << 24)
_HEAD_TRUN = (36, b"trun", 1 << 24 | _TRUN_FLAGS, 1, _DATA_OFFSET)
_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_LANGUAGE_UND = 0x55C4
_H264_DROPPED = {h264.NAL_SPS, h264.NAL_PPS, h264.NAL_AUD}
_H265_DROPPED = {h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS, h265.NAL_AUD}
_FAMILY: dict[Codec, str] = {"h264": "avc", "h265": "hvc"}


# -- access units ---------------------------------------------------------


def split_access_unit(data: bytes, codec: Codec) -> tuple[list[bytes], list[bytes]]:
    """``(sample NAL units, parameter sets)`` of an Annex-B access unit.

    The sample keeps every NAL unit but access unit delimiters and parameter
    sets, in order; the parameter sets come back in order, duplicates removed.
    """
    kind, dropped = (h264.nal_type, _H264_DROPPED) if codec == "h264" else (h265.nal_type, _H265_DROPPED)
    sample: list[bytes] = []
    params: list[bytes] = []
    for nal in h264.split_nals(data):
        t = kind(nal)
        if t not in dropped:
            sample.append(nal)
        elif t != (h264.NAL_AUD if codec == "h264" else h265.NAL_AUD) and nal not in params:
            params.append(nal)
    return sample, params


# -- boxes ------------------------------------------------------------------


def codec_string(codec: Codec, sps: bytes) -> str:
    """RFC 6381 codec string of a stream, for example ``avc1.64001f`` or ``hvc1.1.6.L93.B0``."""
    return h264.parse_sps(sps).codec_string if codec == "h264" else h265.codec_string(sps)


def init_segment(
    codec: Codec,
    sps: Sequence[bytes],
    pps: Sequence[bytes],
    vps: Sequence[bytes] = (),
    *,
    width: int,
    height: int,
    audio: AudioInfo | None = None,
) -> bytes:
    """``ftyp`` + ``moov`` of one video track carrying these parameter sets (timescale 90 kHz),
    and of an AAC track after it when ``audio`` is given."""
    if codec == "h264":
        entry_kind, config = b"avc1", avcc(sps, pps)
    else:
        entry_kind, config = b"hvc1", hvcc(vps, sps, pps)
    ftyp = _box(b"ftyp", b"iso5", struct.pack(">I", 512), b"iso5iso6mp41")
    mvhd = _full_box(
        b"mvhd", 0, 0, struct.pack(">IIIIIH10x", 0, 0, 1000, 0, 0x10000, 0x100), _MATRIX, bytes(24),
        struct.pack(">I", (TRACK_ID if audio is None else AUDIO_TRACK_ID) + 1),
    )  # fmt: skip
    tkhd = _full_box(
        b"tkhd", 0, 3, struct.pack(">IIIII8xHHH2x", 0, 0, TRACK_ID, 0, 0, 0, 0, 0), _MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )  # fmt: skip
    mdhd = _full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, TIMESCALE, 0, _LANGUAGE_UND, 0))
    hdlr = _full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, b"vide"), b"VideoHandler\x00")
    vmhd = _full_box(b"vmhd", 0, 1, bytes(8))
    entry = _box(
        entry_kind,
        struct.pack(">6xH16xHHIIIH32xHh", 1, width, height, 0x480000, 0x480000, 0, 1, 0x18, -1),
        config,
    )
    mdia = _box(b"mdia", mdhd, hdlr, media_information(vmhd, entry))
    trex = _full_box(b"trex", 0, 0, struct.pack(">IIIII", TRACK_ID, 1, 0, 0, 0))
    if audio is None:
        moov = _box(b"moov", mvhd, _box(b"trak", tkhd, mdia), _box(b"mvex", trex))
    else:
        moov = _box(
            b"moov", mvhd, _box(b"trak", tkhd, mdia), audio_trak(audio), _box(b"mvex", trex, audio_trex())
        )
    return ftyp + moov


def fragment(
    sequence: int,
    *,
    decode_time: int,
    composition_offset: int,
    duration: int,
    keyframe: bool,
    nals: Sequence[bytes],
) -> bytes:
    """``moof`` + ``mdat`` holding one sample made of ``nals`` (given without start codes)."""
    size = sum(len(n) for n in nals) + 4 * len(nals)
    flags = _SYNC_FLAGS if keyframe else _NON_SYNC_FLAGS
    parts = [_FRAGMENT_HEAD.pack(*_HEAD_START, sequence, *_HEAD_TRAF, decode_time, *_HEAD_TRUN,
                                 duration, size, flags, composition_offset, 8 + size, b"mdat")]  # fmt: skip
    for nal in nals:
        parts += (len(nal).to_bytes(4, "big"), nal)
    return b"".join(parts)


# -- a camera's stream --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InitSegment:
    """What a player needs before the first fragment: the bytes and the MIME type."""

    codec: str
    """RFC 6381 codec string, for example ``avc1.64001f``."""
    width: int
    height: int
    data: bytes
    parameter_sets: tuple[bytes, ...]
    """The parameter sets it was built from, in stream order: a change needs a new init segment."""
    audio: AudioInfo | None = None
    """The AAC track's description, when the init segment has one (see :func:`with_audio`)."""

    @property
    def codecs(self) -> str:
        """The RFC 6381 codec strings of its tracks, video first: ``avc1.64001f, mp4a.40.2``."""
        return self.codec if self.audio is None else f"{self.codec}, {self.audio.codec_string}"

    @property
    def mime(self) -> str:
        return f'video/mp4; codecs="{self.codecs}"'


@dataclass(frozen=True, slots=True)
class Fragment:
    """One access unit as ``moof`` + ``mdat``, and the init segment it needs."""

    data: bytes
    keyframe: bool
    pts: int
    init: InitSegment
    end: int = 0
    """Where the sample ends on the file's timeline: its decode time (with
    :data:`TIME_OFFSET`) plus its duration, in 90 kHz ticks."""


def _describe(codec: Codec, params: Sequence[bytes], audio: AudioInfo | None = None) -> InitSegment | None:
    """The init segment for these parameter sets, or None if some are missing."""
    if codec == "h264":
        sps = [p for p in params if h264.nal_type(p) == h264.NAL_SPS]
        pps = [p for p in params if h264.nal_type(p) == h264.NAL_PPS]
        vps: list[bytes] = []
        if not sps or not pps:
            return None
        info = h264.parse_sps(sps[0])
    else:
        vps = [p for p in params if h265.nal_type(p) == h265.NAL_VPS]
        sps = [p for p in params if h265.nal_type(p) == h265.NAL_SPS]
        pps = [p for p in params if h265.nal_type(p) == h265.NAL_PPS]
        if not vps or not sps or not pps:
            return None
        info = h265.parse_sps(sps[0])
    data = init_segment(codec, sps, pps, vps, width=info.width, height=info.height, audio=audio)
    return InitSegment(info.codec_string, info.width, info.height, data, tuple(params), audio)


def with_audio(init: InitSegment, audio: AudioInfo | None) -> InitSegment:
    """``init`` with an AAC track described by ``audio`` (or without one, for None)."""
    if audio == init.audio:
        return init
    if audio is not None and audio.codec != "aac":
        raise ValueError(f"an MP4 audio track here carries AAC, not {audio.codec}")
    codec: Codec = "h264" if init.codec.startswith("avc") else "h265"
    combined = _describe(codec, init.parameter_sets, audio)
    if combined is None:  # cannot happen: init was described from the same parameter sets
        raise ValueError("the init segment's parameter sets are incomplete")
    return combined


class Fmp4Writer:
    """One camera's fragments, in the order the hub publishes its packets.

    Keeps the current init segment (replaced when a keyframe brings other
    parameter sets), the fragment sequence number, and what stands for the
    duration of each new sample, which cannot be known before the next packet:

    * in a stream that does not reorder frames, the last decode-time step
      (decode and presentation steps are then the same);
    * in one that does (packets with a ``dts``), the frame period: the smallest
      gap between recent presentation times. The decode-time steps of such a
      stream can be irregular (where the hub had to keep them rising), and a
      sample that lasts longer than the gap to the next presentation time would
      make an MSE player drop the frame shown there.
    """

    def __init__(self, frame_ticks: int = CLOCK_RATE // 25) -> None:
        self.init: InitSegment | None = None
        self._sequence = 0
        self._last_decode: int | None = None
        self._step = frame_ticks
        self._recent: collections.deque[int] = collections.deque(maxlen=_RECENT)
        self.written = 0

    def _frame_ticks(self) -> int:
        return frame_period(self._recent, self._step)

    def write(self, packet: MediaPacket, shift: int = 0) -> Fragment | None:
        """The fragment of ``packet`` with ``shift`` ticks added to its timestamps, or None
        while no init segment is known (no keyframe with parameter sets yet, or ones that
        cannot be parsed)."""
        sample, params = split_access_unit(packet.data, packet.codec)
        init = self.init
        if params and (init is None or params != list(init.parameter_sets)):
            try:
                init = _describe(packet.codec, params) or init
            except (ValueError, IndexError) as err:  # BitstreamError is a ValueError
                log.warning("unreadable parameter sets, keeping the previous ones: %s", err)
            self.init = init
        if init is None or not sample or init.codec[:3] != _FAMILY[packet.codec]:
            return None
        decode = packet.decode_ts + shift
        pts = packet.pts + shift
        last = self._last_decode
        if last is not None and 0 < decode - last < CLOCK_RATE:
            self._step = decode - last
        if last is None or decode > last:
            self._last_decode = decode
        self._recent.append(pts)
        self._sequence += 1
        self.written += 1
        decode_time = max(0, decode + TIME_OFFSET)
        duration = self._step if packet.dts is None else self._frame_ticks()
        data = fragment(
            self._sequence,
            decode_time=decode_time,
            composition_offset=pts - decode,
            duration=duration,
            keyframe=packet.keyframe,
            nals=sample,
        )
        return Fragment(data, packet.keyframe, pts, init, decode_time + duration)
