"""RTP packets of one access unit, built once per camera and stamped per session.

Every session of a camera sends the same access units in the same payloads;
their RTP packets differ only in the sequence number, the timestamp, the SSRC
and, for RTSP interleaved over TCP, the channel. :func:`build_template` lays
one access unit's packets end to end once, each after its framing (nothing for
UDP, the RFC 4571 length for a GB/T 28181 TCP link, the ``$`` frame head of RFC
2326, 10.12 for RTSP interleaved), the marker bit set on the last, what differs
per session left zero. :func:`stamp` copies a template once and writes one
session's fields into the copy with ``struct.pack_into``: one buffer copy and a
few bytes per packet, which is what another session costs, and a buffer that
one socket write (or one ``sendto`` per packet slice) sends.

:class:`UnitCache` keeps what a camera's access units became, keyed by the
identity of the hub's packet, for the sessions reading that hub.

Pure computation on bytes; caches are used on the event loop only.
"""

from __future__ import annotations

import collections
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from streams.packets import MediaPacket

__all__ = ["HEADER", "Framing", "RtpTemplate", "UnitCache", "build_template", "stamp"]

Framing = Literal["none", "rfc4571", "interleaved"]
"""What precedes each RTP packet: nothing (a datagram each), its 16-bit length (RFC 4571),
or ``$``, a channel byte and its 16-bit length (RTSP interleaved)."""

HEADER = struct.Struct(">BBHII")
_SEQ_TIME_SSRC = struct.Struct(">HII")
_LENGTH = struct.Struct(">H")
_PREFIX = {"none": 0, "rfc4571": _LENGTH.size, "interleaved": 2 + _LENGTH.size}
_CHANNEL_BEFORE_SEQUENCE = 5
"""From a ``$`` frame's channel byte to its packet's sequence number: the frame's 16-bit
length and the RTP header's first two bytes lie between."""
_CACHE_UNITS = 256

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RtpTemplate:
    """An access unit's RTP packets laid end to end, each after its framing."""

    data: bytes
    starts: tuple[int, ...]
    """Where each packet's framing starts, then the end of ``data``."""
    sequences: tuple[int, ...]
    """Where each packet's sequence number is (the timestamp and SSRC follow)."""
    framing: Framing
    payload_bytes: int

    @property
    def packet_count(self) -> int:
        return len(self.starts) - 1


def build_template(
    payloads: Sequence[bytes], payload_type: int, framing: Framing, timestamp: int = 0
) -> RtpTemplate:
    """The packets of one access unit's ``payloads``: sequence numbers and SSRC zero, the
    interleaved channel zero, ``timestamp`` (zero when each session has its own), the
    marker bit on the last packet."""
    prefix = _PREFIX[framing]
    parts: list[bytes] = []
    starts: list[int] = []
    at = 0
    last = len(payloads) - 1
    for index, payload in enumerate(payloads):
        starts.append(at)
        if framing == "interleaved":
            parts.append(b"$\x00")
        if prefix:
            parts.append(_LENGTH.pack(HEADER.size + len(payload)))
        marker = 0x80 if index == last else 0
        parts += (HEADER.pack(0x80, marker | payload_type, 0, timestamp, 0), payload)
        at += prefix + HEADER.size + len(payload)
    sequences = tuple(start + prefix + 2 for start in starts)
    starts.append(at)
    return RtpTemplate(b"".join(parts), tuple(starts), sequences, framing, sum(map(len, payloads)))


def stamp(template: RtpTemplate, sequence: int, timestamp: int, ssrc: int, channel: int = 0) -> bytearray:
    """A copy of ``template`` with one session's fields: sequence numbers from ``sequence``
    on (modulo 2^16), ``timestamp``, ``ssrc``, and ``channel`` when interleaved."""
    buffer = bytearray(template.data)
    pack = _SEQ_TIME_SSRC.pack_into
    if template.framing == "interleaved" and channel:
        for at in template.sequences:
            pack(buffer, at, sequence, timestamp, ssrc)
            buffer[at - _CHANNEL_BEFORE_SEQUENCE] = channel
            sequence = (sequence + 1) & 0xFFFF
    else:
        for at in template.sequences:
            pack(buffer, at, sequence, timestamp, ssrc)
            sequence = (sequence + 1) & 0xFFFF
    return buffer


class UnitCache(Generic[T]):
    """What ``build`` made of a hub's most recent ``capacity`` access units, keyed by
    identity: the hub hands the same MediaPacket object to every subscriber."""

    def __init__(self, build: Callable[[MediaPacket], T], capacity: int = _CACHE_UNITS) -> None:
        self._build = build
        self._capacity = capacity
        self._cache: collections.OrderedDict[int, tuple[MediaPacket, T]] = collections.OrderedDict()
        self.built = 0

    def unit(self, media: MediaPacket) -> T:
        entry = self._cache.get(id(media))
        if entry is not None and entry[0] is media:
            return entry[1]
        unit = self._build(media)
        self.built += 1
        self._cache[id(media)] = (media, unit)
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return unit
