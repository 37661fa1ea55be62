"""MPEG-PS over RTP for GB/T 28181: each PS unit muxed once per camera, stamped per session.

A GB/T 28181 media session receives the camera's program stream (see
:mod:`streams.formats.mpeg_ps`) in RTP packets of payload type 96, PS/90000,
under the SSRC the superior platform chose (the SDP's ``y=`` line). Each
access unit's PS unit is cut into payloads of at most :data:`PAYLOAD_MAX`
bytes; the marker bit is set on the last packet of the unit. The timestamp is
the unit's decode time (the pack header's SCR) modulo 2^32, which RFC 2250
prescribes for system streams (a transmission time) and which never runs
backwards, even with B-frames. Over TCP every packet is preceded by its
length in two bytes, big-endian (RFC 4571).

Sharing: :class:`SharedPsUnits` (one per camera) muxes each access unit once
and keeps, per framing, a template of its RTP packets
(:mod:`streams.formats.rtp_template`), headers filled in but for the sequence
number and the SSRC. :class:`RtpStamper` (one per session) copies that template
and writes its own sequence numbers and SSRC into it: one buffer copy and a few
bytes per packet, which is what another session costs.

Pure computation on bytes; the shared units are used on the event loop only.
"""

from __future__ import annotations

import random

from streams.formats import rtp_template
from streams.formats.mpeg_ps import PsMuxer
from streams.formats.rtp_template import RtpTemplate, UnitCache
from streams.packets import MediaPacket

__all__ = [
    "PAYLOAD_MAX",
    "PAYLOAD_TYPE",
    "PsUnit",
    "RtpStamper",
    "SharedPsUnits",
    "parse_ssrc",
]

PAYLOAD_TYPE = 96
PAYLOAD_MAX = 1400
"""Bytes of PS per RTP packet: with the 12-byte RTP header and 28 bytes of IPv4/UDP
headers (48 for IPv6) a packet stays under a 1500-byte MTU."""
_CACHE_UNITS = 256


def parse_ssrc(y_line: str) -> int:
    """The SSRC of an SDP ``y=`` value: ten decimal digits (``0`` first for live, ``1``
    for playback). Raises ValueError for anything else."""
    text = y_line.strip()
    if len(text) != 10 or not text.isascii() or not text.isdigit():
        raise ValueError(f"an SSRC in y= has 10 decimal digits, not {y_line!r}")
    value = int(text)
    if value >= 1 << 32:
        raise ValueError(f"SSRC {text} does not fit in 32 bits")
    return value


class PsUnit:
    """One access unit's PS bytes and, per framing, its RTP packets' template."""

    __slots__ = ("_templates", "data", "timestamp")

    def __init__(self, data: bytes, timestamp: int) -> None:
        self.data = data
        self.timestamp = timestamp & 0xFFFFFFFF
        self._templates: dict[bool, RtpTemplate] = {}

    def template(self, framed: bool) -> RtpTemplate:
        """Every RTP packet of the unit laid end to end (each after its RFC 4571 length if
        ``framed``), with the unit's timestamp, sequence numbers and SSRC zero."""
        found = self._templates.get(framed)
        if found is None:
            data = self.data
            chunks = [data[at : at + PAYLOAD_MAX] for at in range(0, len(data), PAYLOAD_MAX)]
            found = rtp_template.build_template(
                chunks, PAYLOAD_TYPE, "rfc4571" if framed else "none", self.timestamp
            )
            self._templates[framed] = found
        return found


class SharedPsUnits:
    """PS units of a camera's access units, muxed once, shared by its sessions.

    Keeps the most recent ``capacity`` units (see :class:`~streams.formats.rtp_template.UnitCache`).
    """

    def __init__(self, muxer: PsMuxer | None = None, capacity: int = _CACHE_UNITS) -> None:
        muxer = muxer or PsMuxer()
        self._units = UnitCache(lambda media: PsUnit(muxer.mux(media), media.decode_ts), capacity)

    @property
    def muxed(self) -> int:
        return self._units.built

    def unit(self, media: MediaPacket) -> PsUnit:
        return self._units.unit(media)


class RtpStamper:
    """One session's RTP packets: its SSRC and running sequence number over shared units."""

    def __init__(self, ssrc: int, *, framed: bool, sequence: int | None = None) -> None:
        self.ssrc = ssrc
        self.framed = framed
        self.sequence = random.getrandbits(16) if sequence is None else sequence & 0xFFFF
        """The sequence number of the next packet."""

    def stamp(self, unit: PsUnit) -> tuple[bytearray, tuple[int, ...]]:
        """The unit's packets for this session, and where each starts (the buffer's end last)."""
        template = unit.template(self.framed)
        buffer = rtp_template.stamp(template, self.sequence, unit.timestamp, self.ssrc)
        self.sequence = (self.sequence + template.packet_count) & 0xFFFF
        return buffer, template.starts
