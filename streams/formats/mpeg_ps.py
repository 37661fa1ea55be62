"""MPEG-2 Program Stream (ISO/IEC 13818-1, 2.5) of one camera, as GB/T 28181 carries it over RTP.

Every access unit becomes one *PS unit*: a pack header, then PES packets that
hold the access unit. Before a video keyframe the unit also carries the system
header and the program stream map (PSM), so a receiver can start at any
keyframe; GB/T 28181 platforms expect all three there, and FFmpeg's own ``mpeg``
muxer writes no PSM, which is why this small writer exists.

* The pack header's system clock reference (SCR) is the access unit's decode
  time, so it never runs backwards and never passes a decode time.
* A PES packet holds at most 65,535 bytes after its length field: a larger
  access unit is split over several PES packets, and only the first carries
  the presentation time (and the decode time, when it differs).
* Stream types in the PSM follow GB/T 28181-2016 appendix C and the platforms
  of the field: H.264 0x1B, H.265 0x24, G.711 A-law 0x90 (the standard's only
  G.711 entry), G.711 µ-law 0x91 (the value ZLMediaKit's PS library uses), AAC
  0x0F (ADTS frames; the relay's raw AAC access units get an ADTS header here).
  Video is stream id 0xE0, audio 0xC0.

Times are the media plane's 90 kHz ticks, which is the PS clock too; they are
written modulo 2^33 as the format requires.

The functions are pure; a :class:`PsMuxer` holds one camera's state (its
stream map and the map's version) and is used from one thread (the event
loop) only.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from streams.packets import AudioInfo, Codec, MediaPacket

__all__ = [
    "DEFAULT_MUX_RATE",
    "PES_LENGTH_MAX",
    "STREAM_ID_AUDIO",
    "STREAM_ID_VIDEO",
    "STREAM_TYPES",
    "PsMuxer",
    "adts_header",
    "crc32_mpeg2",
    "pack_header",
    "pes_packets",
    "program_stream_map",
    "system_header",
]

STREAM_ID_VIDEO = 0xE0
STREAM_ID_AUDIO = 0xC0
STREAM_TYPES: dict[Codec, int] = {"h264": 0x1B, "h265": 0x24, "aac": 0x0F, "pcma": 0x90, "pcmu": 0x91}
"""PSM ``stream_type`` of each codec a PS unit may carry (Opus has none in GB/T 28181)."""

DEFAULT_MUX_RATE = 20_000_000
"""Bits per second announced in pack and system headers: above any camera stream
relayed, as the field is an upper bound for the receiver's buffering."""
PES_LENGTH_MAX = 0xFFFF
"""Largest ``PES_packet_length``: the bytes after the field, the 3 bytes of flags
and header length and the timestamps included."""

_TIME_MASK = (1 << 33) - 1
_PTS_ONLY, _PTS_AND_DTS = 0x2, 0x3
_VIDEO_BUFFER = (1, 400)  # P-STD buffer bound: scale 1 (1024-byte units), 400 KiB
_AUDIO_BUFFER = (0, 32)  # scale 0 (128-byte units), 4 KiB
_ADTS_BUFFER_FULLNESS = 0x7FF  # "variable bit rate"


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32_mpeg2(data: bytes) -> int:
    """CRC-32/MPEG-2 (13818-1 Annex A): polynomial 0x04C11DB7, initial value all ones,
    no reflection, no final XOR."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ byte]
    return crc


def _mux_rate_units(bits_per_second: int) -> int:
    """The 22-bit rate fields count units of 50 bytes per second, rounded up."""
    return min(-(-bits_per_second // 400), (1 << 22) - 1)


def pack_header(scr: int, mux_rate: int = DEFAULT_MUX_RATE) -> bytes:
    """An MPEG-2 pack header (14 bytes, no stuffing) with SCR base ``scr`` (90 kHz) and
    extension 0."""
    scr &= _TIME_MASK
    head = (
        0x1 << 46  # '01'
        | (scr >> 30) << 43
        | 1 << 42
        | ((scr >> 15) & 0x7FFF) << 27
        | 1 << 26
        | (scr & 0x7FFF) << 11
        | 1 << 10
        | 1  # 9-bit extension 0, then the marker
    )
    rate = _mux_rate_units(mux_rate) << 2 | 0x3
    return b"\x00\x00\x01\xba" + head.to_bytes(6, "big") + rate.to_bytes(3, "big") + b"\xf8"


def system_header(stream_ids: Sequence[int], mux_rate: int = DEFAULT_MUX_RATE) -> bytes:
    """The system header for the given elementary stream ids (video 0xE0, audio 0xC0)."""
    audio = sum(1 for sid in stream_ids if sid & 0xE0 == 0xC0)
    video = sum(1 for sid in stream_ids if sid & 0xF0 == 0xE0)
    rate = 1 << 23 | _mux_rate_units(mux_rate) << 1 | 1
    fields = rate.to_bytes(3, "big") + bytes(
        (
            audio << 2,  # fixed_flag 0, CSPS_flag 0
            0xC0 | 0x20 | video,  # audio and video locked, marker, video_bound
            0x7F,  # packet_rate_restriction_flag 0, reserved
        )
    )
    for sid in stream_ids:
        scale, size = _VIDEO_BUFFER if sid & 0xF0 == 0xE0 else _AUDIO_BUFFER
        fields += struct.pack(">BH", sid, 0xC000 | scale << 13 | size)
    return struct.pack(">IH", 0x1BB, len(fields)) + fields


def program_stream_map(streams: Sequence[tuple[int, int]], version: int = 0) -> bytes:
    """The PSM of ``(stream_type, stream_id)`` pairs, current, with its CRC."""
    entries = b"".join(struct.pack(">BBH", kind, sid, 0) for kind, sid in streams)
    flags = bytes((0xA0 | (version & 0x1F), 0xFF))  # current, reserved bits and marker set
    body = flags + struct.pack(">HH", 0, len(entries)) + entries
    head = struct.pack(">IH", 0x1BC, len(body) + 4) + body
    return head + crc32_mpeg2(head).to_bytes(4, "big")


def _timestamp(prefix: int, ticks: int) -> bytes:
    ticks &= _TIME_MASK
    value = prefix << 36 | (ticks >> 30) << 33 | 1 << 32 | ((ticks >> 15) & 0x7FFF) << 17 | 1 << 16
    return (value | (ticks & 0x7FFF) << 1 | 1).to_bytes(5, "big")


def pes_packets(
    stream_id: int, payload: bytes, pts: int, dts: int | None = None, length_max: int = PES_LENGTH_MAX
) -> list[bytes]:
    """PES packets carrying ``payload``; the first with its PTS (and DTS when given and
    different), later ones with no timestamp. ``length_max`` bounds each packet's
    ``PES_packet_length`` (at most :data:`PES_LENGTH_MAX`)."""
    if dts is None or dts == pts:
        stamps = _timestamp(_PTS_ONLY, pts)
        flags = _PTS_ONLY << 6
    else:
        stamps = _timestamp(_PTS_AND_DTS, pts) + _timestamp(0x1, dts)
        flags = _PTS_AND_DTS << 6
    packets = []
    header = bytes((0x84, flags, len(stamps))) + stamps  # data_alignment_indicator on the first
    at = 0
    while True:
        room = min(length_max, PES_LENGTH_MAX) - len(header)
        chunk = payload[at : at + room]
        length = len(header) + len(chunk)
        packets.append(struct.pack(">IH", 0x100 | stream_id, length) + header + chunk)
        at += room
        if at >= len(payload):
            return packets
        header = b"\x80\x00\x00"


def adts_header(info: AudioInfo, frame_size: int) -> bytes:
    """The 7-byte ADTS header (no CRC) before a raw AAC frame of ``frame_size`` bytes."""
    config = info.config
    if len(config) < 2:
        raise ValueError("AAC audio needs its AudioSpecificConfig for ADTS headers")
    object_type = config[0] >> 3
    frequency = (config[0] & 0x7) << 1 | config[1] >> 7
    channels = (config[1] >> 3) & 0xF
    length = frame_size + 7
    bits = (
        0xFFF << 44  # syncword, MPEG-4, layer 0, no CRC
        | 1 << 40
        | (object_type - 1) << 38
        | frequency << 34
        | channels << 30
        | length << 13
        | _ADTS_BUFFER_FULLNESS << 2
    )
    return bits.to_bytes(7, "big")


class PsMuxer:
    """PS units of one camera's access units; see the module docstring.

    ``audio`` describes the audio stream whose frames will be muxed alongside
    (it is then listed in the PSM); without it, audio packets are refused.
    """

    def __init__(
        self,
        audio: AudioInfo | None = None,
        *,
        mux_rate: int = DEFAULT_MUX_RATE,
        pes_length_max: int = PES_LENGTH_MAX,
    ) -> None:
        if audio is not None and audio.codec not in STREAM_TYPES:
            raise ValueError(f"{audio.codec} audio cannot be carried in a GB/T 28181 program stream")
        self._audio = audio
        self._mux_rate = mux_rate
        self._pes_max = pes_length_max
        self._video: Codec | None = None
        self._version = -1
        self._headers = b""

    def mux(self, packet: MediaPacket) -> bytes:
        """The PS unit of one access unit (video) or frame (audio)."""
        if packet.is_audio:
            return self._mux_audio(packet)
        unit = pack_header(packet.decode_ts, self._mux_rate)
        if packet.keyframe:
            unit += self._stream_headers(packet.codec)
        pes = pes_packets(STREAM_ID_VIDEO, packet.data, packet.pts, packet.dts, self._pes_max)
        return unit + b"".join(pes)

    def _mux_audio(self, packet: MediaPacket) -> bytes:
        audio = self._audio
        if audio is None or packet.codec != audio.codec:
            raise ValueError(f"this muxer carries no {packet.codec} audio")
        data = adts_header(audio, len(packet.data)) + packet.data if audio.codec == "aac" else packet.data
        pes = pes_packets(STREAM_ID_AUDIO, data, packet.pts, None, self._pes_max)
        return pack_header(packet.pts, self._mux_rate) + b"".join(pes)

    def _stream_headers(self, video: Codec) -> bytes:
        """System header and PSM, rebuilt (with a new PSM version) when the video codec changes."""
        if video != self._video:
            self._video = video
            self._version = (self._version + 1) & 0x1F
            streams = [(STREAM_TYPES[video], STREAM_ID_VIDEO)]
            if self._audio is not None:
                streams.append((STREAM_TYPES[self._audio.codec], STREAM_ID_AUDIO))
            ids = [sid for _, sid in streams]
            self._headers = system_header(ids, self._mux_rate) + program_stream_map(streams, self._version)
        return self._headers
