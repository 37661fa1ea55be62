"""RTCP as a media sender needs it (RFC 3550, 6): sender reports out, receivers' reports in.

A sender of RTP sends a compound packet every few seconds: a sender report
(6.4.1) that ties its RTP clock to the wall clock and counts what it sent,
then an SDES item naming it (6.5; RFC 3550 requires a CNAME in every compound
packet). :class:`SenderClock` keeps one RTP stream's counts and its latest
timestamp, and writes that report on demand.

From a receiver we only need to know that it is still there and whether it
has left: :func:`parse` reads a compound packet into :class:`Report` items (a
receiver or sender report, with the SSRCs its report blocks are about) and
:class:`Bye` items, skipping the other types, and raises :class:`BadRtcp` for
anything that is not RTCP.

Pure computation on bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "NTP_EPOCH_OFFSET",
    "REPORT_INTERVAL",
    "BadRtcp",
    "Bye",
    "Report",
    "SenderClock",
    "ntp_timestamp",
    "parse",
]

NTP_EPOCH_OFFSET = 2_208_988_800
"""Seconds from the NTP epoch (1900) to the Unix epoch (1970)."""
REPORT_INTERVAL = 5.0
"""Seconds between two sender reports of one stream (RFC 3550, 6.2's minimum)."""

SR, RR, SDES, BYE = 200, 201, 202, 203
_HEADER = struct.Struct(">BBH")
_SENDER_INFO = struct.Struct(">QIII")
_REPORT_BLOCK = 24
_CNAME = 1


class BadRtcp(ValueError):
    """Bytes that are not a well-formed RTCP compound packet."""


@dataclass(frozen=True, slots=True)
class Report:
    """A sender or receiver report."""

    ssrc: int
    """Who reports."""
    about: tuple[int, ...]
    """The SSRCs its report blocks are about."""


@dataclass(frozen=True, slots=True)
class Bye:
    ssrcs: tuple[int, ...]
    """The sources that leave."""


def ntp_timestamp(wall: float) -> int:
    """The 64-bit NTP timestamp (32.32 fixed point, since 1900) of a Unix time."""
    return round((wall + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


class SenderClock:
    """One RTP stream as its sender reports describe it. See the module docstring."""

    def __init__(self, ssrc: int, clock_rate: int, cname: str = "hallwatch") -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self._cname = cname.encode()[:255]
        self.packets = 0
        self.octets = 0
        """Payload octets (RFC 3550, 6.4.1: headers and padding not counted)."""
        self._timestamp: int | None = None
        self._at = 0.0

    def sent(self, timestamp: int, at: float, packets: int, octets: int) -> None:
        """``packets`` carrying ``octets`` bytes of payload went out; the latest has RTP
        ``timestamp``, which stands for the instant ``at`` (``time.monotonic()``)."""
        self._timestamp = timestamp
        self._at = at
        self.packets += packets
        self.octets += octets

    def report(self, wall: float, now: float) -> bytes | None:
        """The compound packet (SR and SDES CNAME) for the instant ``wall`` (Unix time) =
        ``now`` (monotonic); None before the first packet."""
        if self._timestamp is None:
            return None
        timestamp = (self._timestamp + round((now - self._at) * self.clock_rate)) & 0xFFFFFFFF
        body = struct.pack(">I", self.ssrc) + _SENDER_INFO.pack(
            ntp_timestamp(wall), timestamp, self.packets & 0xFFFFFFFF, self.octets & 0xFFFFFFFF
        )
        return _HEADER.pack(0x80, SR, len(body) // 4) + body + self._sdes()

    def _sdes(self) -> bytes:
        item = bytes((_CNAME, len(self._cname))) + self._cname
        chunk = struct.pack(">I", self.ssrc) + item
        chunk += b"\x00" * (4 - len(chunk) % 4)  # at least one null octet ends the item list
        return _HEADER.pack(0x81, SDES, len(chunk) // 4) + chunk


def parse(data: bytes) -> list[Report | Bye]:
    """The reports and BYEs of a compound RTCP packet. Raises :class:`BadRtcp`."""
    found: list[Report | Bye] = []
    at = 0
    if len(data) < _HEADER.size:
        raise BadRtcp("shorter than an RTCP header")
    while at < len(data):
        if len(data) - at < _HEADER.size:
            raise BadRtcp("trailing bytes after the last RTCP packet")
        first, kind, words = _HEADER.unpack_from(data, at)
        end = at + 4 * (words + 1)
        if first >> 6 != 2 or end > len(data):
            raise BadRtcp("not RTCP version 2, or a length past the end")
        count = first & 0x1F
        body = data[at + 4 : end]
        if kind in (SR, RR):
            found.append(_report(body, count, with_sender_info=kind == SR))
        elif kind == BYE:
            if len(body) < 4 * count:
                raise BadRtcp("BYE shorter than its sources")
            found.append(Bye(struct.unpack_from(f">{count}I", body)))
        at = end
    return found


def _report(body: bytes, count: int, *, with_sender_info: bool) -> Report:
    blocks = 4 + (_SENDER_INFO.size if with_sender_info else 0)
    if len(body) < blocks + count * _REPORT_BLOCK:
        raise BadRtcp("report shorter than its report blocks")
    about = tuple(struct.unpack_from(">I", body, blocks + index * _REPORT_BLOCK)[0] for index in range(count))
    return Report(struct.unpack_from(">I", body)[0], about)
