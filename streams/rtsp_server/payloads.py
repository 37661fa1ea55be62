"""RTP payloads of what a hub carries, as the RTSP server sends them.

H.264 uses the WebRTC output's packetizer (RFC 6184, mode 1). H.265 goes as
single NAL units, and NAL units too large for one packet as fragmentation
units (RFC 7798, 4.4.3). AAC goes one access unit per packet in the
``AAC-hbr`` mode of RFC 3640 (an AU-headers section of one 16-bit header:
13 bits of size, 3 of index); G.711 and Opus frames go as they are. Every
payload fits :data:`PAYLOAD_MAX`, the same bound as the WebRTC output's.

:class:`SharedTemplates` (one per hub) keeps, for each access unit and each
framing its sessions use (``$`` frames for TCP interleaved, none for UDP), a
template of its RTP packets (:mod:`streams.formats.rtp_template`), packetized
and built once. :class:`RtpTrack` is one client's track: its own SSRC,
sequence numbers and timestamp origin, all random (RFC 3550, 5.1), written
into a copy of the template, and what its sender reports say
(:class:`~streams.formats.rtcp.SenderClock`). The first packet's sequence
number and timestamp are chosen before it is sent, so that ``PLAY`` can
announce them in ``RTP-Info``.

Pure computation on bytes; the shared templates are used on the event loop
only, a track belongs to one session.
"""

from __future__ import annotations

import secrets
import struct
import time
from collections.abc import Callable

from streams.codecs import h264
from streams.formats.rtcp import SenderClock
from streams.formats.rtp_template import Framing, RtpTemplate, UnitCache, build_template, stamp
from streams.packets import CLOCK_RATE, Codec, MediaPacket
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


class TemplatedUnit:
    """One access unit and, per framing, its RTP packets' template, built when first asked
    for: a hub's sessions mostly share one transport, so the unit keeps one copy of its bytes."""

    __slots__ = ("_packetize", "_templates", "data", "payload_type")

    def __init__(self, data: bytes, packetize: Callable[[bytes], list[bytes]], payload_type: int) -> None:
        self.data = data
        self.payload_type = payload_type
        self._packetize = packetize
        self._templates: dict[Framing, RtpTemplate] = {}

    def template(self, framing: Framing) -> RtpTemplate:
        found = self._templates.get(framing)
        if found is None:
            payloads = self._packetize(self.data)
            found = self._templates[framing] = build_template(payloads, self.payload_type, framing)
        return found


class SharedTemplates:
    """A hub's access units as RTP templates, built once, shared by the sessions reading
    the hub (see :class:`~streams.formats.rtp_template.UnitCache`)."""

    def __init__(self, packetize: Callable[[bytes], list[bytes]], payload_type: int) -> None:
        self._units = UnitCache(lambda media: TemplatedUnit(media.data, packetize, payload_type))

    @property
    def units(self) -> int:
        """Access units taken into the cache (each packetized once per framing asked for)."""
        return self._units.built

    def unit(self, media: MediaPacket) -> TemplatedUnit:
        return self._units.unit(media)


class RtpTrack:
    """One client's RTP stream of one track. See the module docstring."""

    def __init__(
        self,
        payload_type: int,
        clock_rate: int,
        *,
        sequence: int | None = None,
        first_timestamp: int | None = None,
    ) -> None:
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.ssrc = secrets.randbits(32)
        self.report = SenderClock(self.ssrc, clock_rate)
        self.next_sequence = secrets.randbits(16) if sequence is None else sequence & 0xFFFF
        """The sequence number of the next packet: before the first, what RTP-Info announces."""
        self.first_timestamp = (
            secrets.randbits(32) if first_timestamp is None else first_timestamp & 0xFFFFFFFF
        )
        """The first packet's timestamp, which RTP-Info announces before it is sent."""
        self._origin: int | None = None

    @property
    def packets_sent(self) -> int:
        return self.report.packets

    @property
    def octets_sent(self) -> int:
        return self.report.octets

    def timestamp(self, pts: int) -> int:
        """The RTP timestamp of a 90 kHz ``pts`` in this track's clock: the first one asked
        for is :attr:`first_timestamp`, the others follow at the clock's rate."""
        ticks = pts if self.clock_rate == CLOCK_RATE else pts * self.clock_rate // CLOCK_RATE
        if self._origin is None:
            self._origin = self.first_timestamp - ticks
        return (ticks + self._origin) & 0xFFFFFFFF

    def stamp(self, template: RtpTemplate, pts: int, channel: int = 0, at: float | None = None) -> bytearray:
        """This track's RTP packets of one access unit: a copy of its ``template`` with the
        track's sequence numbers, timestamp and SSRC (and the interleaved ``channel``).
        ``at`` (``time.monotonic()``, now if not given) is the instant the unit stands for
        in the sender reports: when it arrived."""
        timestamp = self.timestamp(pts)
        buffer = stamp(template, self.next_sequence, timestamp, self.ssrc, channel)
        self.next_sequence = (self.next_sequence + template.packet_count) & 0xFFFF
        self.report.sent(
            timestamp, time.monotonic() if at is None else at, template.packet_count, template.payload_bytes
        )
        return buffer
