"""RTP payloads of what a hub carries, as the RTSP server sends them.

H.264 uses the WebRTC output's packetizer (RFC 6184, mode 1). H.265 goes as
single NAL units, and NAL units too large for one packet as fragmentation
units (RFC 7798, 4.4.3). AAC goes one access unit per packet in the
``AAC-hbr`` mode of RFC 3640 (an AU-headers section of one 16-bit header:
13 bits of size, 3 of index); G.711 and Opus frames go as they are. Every
payload fits :data:`PAYLOAD_MAX`, the same bound as the WebRTC output's.

:class:`RtpTrack` wraps payloads in RTP headers for one client's track: its
own SSRC, sequence numbers and timestamp origin, all random (RFC 3550, 5.1).

Pure computation on bytes; a track belongs to one session on the event loop.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable

from streams.codecs import h264
from streams.packets import CLOCK_RATE, Codec
from streams.webrtc.packetizer import PAYLOAD_MAX, packetize_h264

_FU = 49


def packetize_h265(data: bytes, payload_max: int = PAYLOAD_MAX) -> list[bytes]:
    """RTP payloads (RFC 7798) of one Annex-B access unit: single NAL units and FUs."""
    payloads: list[bytes] = []
    for nal in h264.split_nals(data):
        if len(nal) <= payload_max:
            payloads.append(nal)
            continue
        header = bytes(((nal[0] & 0x81) | (_FU << 1), nal[1]))
        kind = (nal[0] >> 1) & 0x3F
        step = payload_max - 3
        end = len(nal)
        for offset in range(2, end, step):
            flags = (0x80 if offset == 2 else 0) | (0x40 if offset + step >= end else 0)
            payloads.append(header + bytes((flags | kind,)) + nal[offset : offset + step])
    return payloads


def packetize_aac(frame: bytes) -> list[bytes]:
    """One AAC access unit in AAC-hbr mode (RFC 3640, 3.3.6): 16 bits of AU-headers length,
    then the AU header (size << 3, index 0), then the frame."""
    return [struct.pack(">HH", 16, len(frame) << 3) + frame]


def as_is(frame: bytes) -> list[bytes]:
    """G.711 and Opus: the frame is the payload."""
    return [frame]


def packetizer_of(codec: Codec) -> Callable[[bytes], list[bytes]]:
    if codec == "h264":
        return packetize_h264
    if codec == "h265":
        return packetize_h265
    if codec == "aac":
        return packetize_aac
    return as_is


class RtpTrack:
    """One client's RTP stream of one track. See the module docstring."""

    def __init__(self, payload_type: int, clock_rate: int) -> None:
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._origin = secrets.randbits(32)
        self.packets_sent = 0
        self.octets_sent = 0
        self.last_timestamp: int | None = None

    def timestamp(self, pts: int) -> int:
        """The RTP timestamp of a 90 kHz ``pts`` in this track's clock."""
        ticks = pts if self.clock_rate == CLOCK_RATE else pts * self.clock_rate // CLOCK_RATE
        return (ticks + self._origin) & 0xFFFFFFFF

    def wrap(self, payloads: list[bytes], pts: int, *, marker: bool) -> list[bytes]:
        """RTP packets of one access unit's payloads; ``marker`` set on the last one."""
        timestamp = self.timestamp(pts)
        self.last_timestamp = timestamp
        packets = []
        last = len(payloads) - 1
        for index, payload in enumerate(payloads):
            second = self.payload_type | (0x80 if marker and index == last else 0)
            packets.append(struct.pack(">BBHII", 0x80, second, self._seq, timestamp, self.ssrc) + payload)
            self._seq = (self._seq + 1) & 0xFFFF
            self.octets_sent += len(payload)
        self.packets_sent += len(packets)
        return packets
