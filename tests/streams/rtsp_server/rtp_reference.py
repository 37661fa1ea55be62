"""RTP packets of the RTSP re-serve built the direct way, packet by packet for each session:
what the shared templates must reproduce byte for byte, and the per-session cost they replace."""

from __future__ import annotations

import struct

_HEADER = struct.Struct(">BBHII")


def packets(
    payloads: list[bytes], payload_type: int, sequence: int, timestamp: int, ssrc: int
) -> list[bytes]:
    """One access unit's RTP packets, sequence numbers from ``sequence`` on, marker on the last."""
    out = []
    last = len(payloads) - 1
    for index, payload in enumerate(payloads):
        second = payload_type | (0x80 if index == last else 0)
        out.append(_HEADER.pack(0x80, second, (sequence + index) & 0xFFFF, timestamp, ssrc) + payload)
    return out


def interleaved(channel: int, rtp: list[bytes]) -> bytes:
    """``rtp`` as ``$`` frames on ``channel`` (RFC 2326, 10.12)."""
    return b"".join(b"$" + bytes((channel,)) + len(p).to_bytes(2, "big") + p for p in rtp)
