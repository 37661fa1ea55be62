"""H.264 RTP payloads, computed once per camera and shared by its WebRTC viewers.

:func:`packetize_h264` splits an Annex-B access unit into RTP payloads (RFC 6184,
packetization mode 1: single NAL units, STAP-A, FU-A). Every FU-A fragment of
a NAL unit but the last carries exactly :data:`PAYLOAD_MAX` bytes, so once
each viewer's sender has added its (constant-size) RTP header and SRTP tag,
the fragments of a NAL unit are datagrams of one size: :func:`gso_runs`
groups them into runs that one UDP GSO send can carry (see
:mod:`streams.webrtc.fanout`). :class:`SharedPacketizer` caches the
result per access unit for a camera's viewers.

Pure computation on bytes; the shared packetizer is used on the event loop only.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from streams.codecs import h264
from streams.packets import MediaPacket

SRTP_MAX_RTP = 1356
"""Largest RTP packet pylibsrtp's ``Session.protect`` accepts (its 1500-byte
buffer less room for the longest SRTP trailer)."""
MAX_EXTENSION = 28
"""Longest header-extension block a sender adds: 4 bytes of header, ``sdes:mid``
(at most 1 + 16 bytes), ``abs-send-time`` (1 + 3), padded to 32 bits."""
PAYLOAD_MAX = SRTP_MAX_RTP - 12 - MAX_EXTENSION
"""Largest RTP payload: 1316 bytes (aiortc uses 1300). The MTU is not the limit:
a full packet (1316 + 12 header + at most 28 extensions + 10 SRTP tag = 1366
bytes, plus 48 bytes of IPv6/UDP headers) stays well under a 1500-byte MTU, and
1400-byte payloads would fit it too, but pylibsrtp refuses RTP packets longer
than :data:`SRTP_MAX_RTP`."""

_CACHE_UNITS = 256
_FU_A, _STAP_A = 28, 24

# Linux UDP GSO limits: segments per send, and bytes per send (under the 65,507
# bytes of one UDP datagram), with a bound on what a sender adds to each payload
# (RTP header 12, extensions 28, SRTP tag 10 for the usual profiles, 16 for GCM).
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 64_000
_GSO_OVERHEAD = 64


def packetize_h264(data: bytes, payload_max: int = PAYLOAD_MAX) -> list[bytes]:
    """RTP payloads (RFC 6184, packetization mode 1) of one Annex-B access unit.

    A NAL unit larger than ``payload_max`` becomes FU-A fragments that all
    carry ``payload_max`` bytes but the last; smaller neighbours share a
    STAP-A packet while they fit, and a lone one goes as a single NAL unit.
    """
    payloads: list[bytes] = []
    group: list[bytes] = []  # small NAL units waiting to share a STAP-A packet
    group_size = 1  # its payload size so far: the STAP-A header, then length + NAL per unit

    def flush() -> None:
        nonlocal group_size
        if len(group) == 1:
            payloads.append(group[0])
        elif group:
            # F is the OR of the units' F bits, NRI their highest NRI (RFC 6184, 5.7).
            header = max(nal[0] & 0x80 for nal in group) | max(nal[0] & 0x60 for nal in group) | _STAP_A
            parts = [bytes((header,))]
            for nal in group:
                parts += (len(nal).to_bytes(2, "big"), nal)
            payloads.append(b"".join(parts))
        group.clear()
        group_size = 1

    for nal in h264.split_nals(data):
        if len(nal) > payload_max:
            flush()
            payloads += _fragment(nal, payload_max)
            continue
        if group and group_size + 2 + len(nal) > payload_max:
            flush()
        group.append(nal)
        group_size += 2 + len(nal)
    flush()
    return payloads


def _fragment(nal: bytes, payload_max: int) -> list[bytes]:
    """FU-A fragments of a NAL unit longer than ``payload_max``: equal sizes, a shorter last."""
    indicator = (nal[0] & 0xE0) | _FU_A
    kind = nal[0] & 0x1F
    step = payload_max - 2
    end = len(nal)
    fragments = []
    for offset in range(1, end, step):
        flags = (0x80 if offset == 1 else 0) | (0x40 if offset + step >= end else 0)
        fragments.append(bytes((indicator, kind | flags)) + nal[offset : offset + step])
    return fragments


def gso_runs(payloads: list[bytes]) -> list[tuple[int, int]]:
    """Split payloads into ``[start, stop)`` runs that one GSO send can carry.

    In a run every payload but the last has the size of the first, and the last
    is no longer: after the same header and SRTP tag are added to each, the
    kernel cuts the run's buffer back into exactly those packets.
    """
    runs = []
    start, count = 0, len(payloads)
    while start < count:
        size = len(payloads[start])
        limit = min(count, start + GSO_MAX_SEGMENTS, start + GSO_MAX_BYTES // (size + _GSO_OVERHEAD))
        stop = start + 1
        while stop < limit:
            following = len(payloads[stop])
            if following > size:
                break
            stop += 1
            if following < size:
                break
        runs.append((start, stop))
        start = stop
    return runs


class RtpUnit:
    """One access unit's RTP payloads and their GSO runs, shared by a camera's viewers."""

    __slots__ = ("payloads", "runs")

    def __init__(self, payloads: list[bytes]) -> None:
        self.payloads = payloads
        self.runs = gso_runs(payloads)


class SharedPacketizer:
    """RTP payloads of a camera's access units, computed once, shared by its viewers.

    Keeps the most recent ``capacity`` access units (keyed by identity: the hub
    hands the same MediaPacket object to every subscriber). ``packetize`` splits
    one access unit into payloads: H.264 by default; the RTSP server passes its
    H.265 and audio payloaders.
    """

    def __init__(
        self, capacity: int = _CACHE_UNITS, packetize: Callable[[bytes], list[bytes]] = packetize_h264
    ) -> None:
        self._capacity = capacity
        self._packetize = packetize
        self._cache: collections.OrderedDict[int, tuple[MediaPacket, RtpUnit]] = collections.OrderedDict()
        self.packetized = 0

    def unit(self, media: MediaPacket) -> RtpUnit:
        entry = self._cache.get(id(media))
        if entry is not None and entry[0] is media:
            return entry[1]
        unit = RtpUnit(self._packetize(media.data))
        self.packetized += 1
        self._cache[id(media)] = (media, unit)
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return unit
