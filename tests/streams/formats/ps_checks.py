"""Reading back what the PS muxer and the PS/RTP packetizer write, independently of them:
PS units split at their start codes, RTP headers parsed, RFC 4571 frames cut, the program
stream demuxed and decoded by PyAV and probed by FFmpeg's ffprobe."""

from __future__ import annotations

import io
import itertools
import json
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

PACK, SYSTEM, PSM, VIDEO, AUDIO = 0xBA, 0xBB, 0xBC, 0xE0, 0xC0


def crc32_mpeg2(data: bytes) -> int:
    """Bit by bit, straight from the polynomial (x^32 + x^26 + ... + 1, MSB first)."""
    crc = 0xFFFFFFFF
    for byte in data:
        for bit in range(7, -1, -1):
            top = (crc >> 31) ^ ((byte >> bit) & 1)
            crc = (crc << 1) & 0xFFFFFFFF
            if top:
                crc ^= 0x04C11DB7
    return crc


def ps_packets(data: bytes) -> list[tuple[int, bytes]]:
    """``(stream id, whole packet)`` of every pack header, system header, PSM and PES packet."""
    out, at = [], 0
    while at < len(data):
        assert data[at : at + 3] == b"\x00\x00\x01", f"no start code at {at}"
        sid = data[at + 3]
        size = 14 + (data[at + 13] & 7) if sid == PACK else 6 + struct.unpack_from(">H", data, at + 4)[0]
        out.append((sid, data[at : at + size]))
        at += size
    assert at == len(data)
    return out


def scr(pack: bytes) -> int:
    """The SCR base of an MPEG-2 pack header."""
    bits = int.from_bytes(pack[4:10], "big")
    assert bits >> 46 == 0x1 and bits & (1 << 42) and bits & (1 << 26) and bits & (1 << 10) and bits & 1
    return (bits >> 43 & 0x7) << 30 | (bits >> 27 & 0x7FFF) << 15 | (bits >> 11 & 0x7FFF)


def timestamp(field: bytes) -> int:
    value = int.from_bytes(field, "big")
    return (value >> 33 & 0x7) << 30 | (value >> 17 & 0x7FFF) << 15 | (value >> 1 & 0x7FFF)


def pes_times(pes: bytes) -> tuple[int | None, int | None]:
    """``(pts, dts)`` of a PES packet, None where absent."""
    flags, length = pes[7] >> 6, pes[8]
    pts = timestamp(pes[9:14]) if flags & 0x2 else None
    dts = timestamp(pes[14:19]) if flags == 0x3 else None
    assert length == {0: 0, 2: 5, 3: 10}[flags]
    return pts, dts


def psm_streams(psm: bytes) -> list[tuple[int, int]]:
    """``(stream_type, stream id)`` of a PSM whose CRC is right."""
    assert crc32_mpeg2(psm[:-4]).to_bytes(4, "big") == psm[-4:]
    info = struct.unpack_from(">H", psm, 8)[0]
    start = 10 + info
    size = struct.unpack_from(">H", psm, start)[0]
    entries = psm[start + 2 : start + 2 + size]
    return [(entries[i], entries[i + 1]) for i in range(0, len(entries), 4)]


@dataclass(frozen=True)
class Rtp:
    sequence: int
    marker: bool
    timestamp: int
    ssrc: int
    payload: bytes


def parse_rtp(packet: bytes) -> Rtp:
    first, second, sequence, ts, ssrc = struct.unpack_from(">BBHII", packet)
    assert first == 0x80, "RTP version 2, no padding, extension or CSRC"
    assert second & 0x7F == 96
    return Rtp(sequence, bool(second & 0x80), ts, ssrc, packet[12:])


def rfc4571_frames(data: bytes) -> list[bytes]:
    """The packets of a byte stream framed by 2-byte big-endian lengths; all of it."""
    out, at = [], 0
    while at + 2 <= len(data):
        size = struct.unpack_from(">H", data, at)[0]
        if at + 2 + size > len(data):
            break
        out.append(data[at + 2 : at + 2 + size])
        at += 2 + size
    return out


def reassemble(packets: list[Rtp], ssrc: int) -> tuple[bytes, list[int]]:
    """The PS stream the RTP packets carry, checked for sequence and markers; and the
    timestamp of each access unit (one per marker)."""
    stream, stamps = bytearray(), []
    for before, after in itertools.pairwise(packets):
        assert after.sequence == (before.sequence + 1) & 0xFFFF
        if not before.marker:
            assert after.timestamp == before.timestamp, "one timestamp per access unit"
    for packet in packets:
        assert packet.ssrc == ssrc
        assert len(packet.payload) <= 1400
        stream += packet.payload
        if packet.marker:
            stamps.append(packet.timestamp)
    assert packets[-1].marker
    return bytes(stream), stamps


def demux(data: bytes) -> list[tuple[int | None, int | None, bool]]:
    """``(pts, dts, keyframe)`` of each video packet PyAV's ``mpeg`` demuxer finds."""
    with av.open(io.BytesIO(data), format="mpeg") as container:
        return [(p.pts, p.dts, p.is_keyframe) for p in container.demux(video=0) if p.size]


def decode(data: bytes) -> list[tuple[int | None, int, int]]:
    """``(pts, width, height)`` of every picture PyAV decodes from the program stream."""
    with av.open(io.BytesIO(data), format="mpeg") as container:
        return [(f.pts, f.width, f.height) for f in container.decode(video=0)]


def ffprobe_video(path: Path) -> dict[str, str]:
    """ffprobe's codec name, dimensions, and packet and decoded frame counts of the first video
    stream; fails on any error."""
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-f",
            "mpeg",
            "-count_packets",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,nb_read_packets,nb_read_frames,width,height",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stderr == ""
    stream: dict[str, str] = json.loads(result.stdout)["streams"][0]
    return stream


ENTRIES = ("stream=codec_type,codec_name",)


def probe_streams(path: Path) -> list[tuple[str, str]]:
    """``(codec_type, codec_name)`` of every stream ffprobe finds in the program stream."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-f", "mpeg", "-of", "csv=p=0", "-show_entries", *ENTRIES, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    rows = [tuple(line.split(",")) for line in result.stdout.split()]
    return sorted((kind, name) for name, kind in rows)


def stream_times(data: bytes) -> tuple[list[int], list[int], list[bytes], list[bytes]]:
    """PTS of the video and the audio PES, and every system header and PSM."""
    video, audio, systems, maps = [], [], [], []
    for sid, packet in ps_packets(data):
        if sid == SYSTEM:
            systems.append(packet)
        elif sid == PSM:
            maps.append(packet)
        elif sid in (VIDEO, AUDIO) and (pts := pes_times(packet)[0]):
            (video if sid == VIDEO else audio).append(pts)
    return video, audio, systems, maps


def sound_of(data: bytes, decoder: str) -> tuple[np.ndarray, int]:
    """The audio PES payloads decoded by ``decoder``: mono samples and their rate."""
    context = av.CodecContext.create(decoder, "r")
    assert isinstance(context, av.AudioCodecContext)
    if decoder != "aac":
        context.sample_rate, context.layout = 8000, "mono"
    payload = b"".join(p[9 + p[8] :] for sid, p in ps_packets(data) if sid == AUDIO)
    packets = context.parse(payload) if decoder == "aac" else [av.Packet(payload)]  # ADTS: parsed
    frames = [f for packet in packets for f in context.decode(packet)]
    samples = np.concatenate([f.to_ndarray()[0].astype(np.float64) for f in frames])
    return samples, frames[0].sample_rate


def tone(samples: np.ndarray, rate: int) -> float:
    """The frequency of a sine, from its zero crossings."""
    crossings = np.count_nonzero(np.diff(np.signbit(samples)))
    return crossings / 2 / (len(samples) / rate)
