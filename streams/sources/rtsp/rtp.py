"""RTP video: packet parsing and H.264 depacketization (the SDP is read in
:mod:`streams.sources.rtsp.sdp`).

:class:`Depacketizer` is the codec-neutral part of turning RTP packets into
Annex-B access units: it completes each one on the RTP marker bit (or when the
timestamp changes, for senders that forget the marker), reassembles fragmented
NAL units, and on a sequence gap discards the access unit in progress and
everything up to the next keyframe, so subscribers never see a picture that
references lost data. Timestamps are unwrapped to a monotonic 90 kHz count
starting at 0. :class:`H264Depacketizer` reads RFC 6184 payloads (single NAL
unit, STAP-A, FU-A); the H.265 one (RFC 7798) is in
:mod:`streams.sources.rtsp.rtp_h265`.

Pure code on bytes; one depacketizer belongs to one reader (the event loop task
iterating an RTSP source).
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field

from streams.codecs import h264
from streams.packets import CLOCK_RATE, Codec, MediaPacket

log = logging.getLogger(__name__)

_MAX_AU_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket | None:
    """The RTP packet in ``data``, or None if it is not a well-formed RTP version 2 packet."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    first, second, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:  # header extension
        if len(data) < offset + 4:
            return None
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
    end = len(data)
    if first & 0x20:  # padding
        end -= data[-1]
    if end < offset:
        return None
    return RtpPacket(second & 0x7F, seq, ts, ssrc, bool(second & 0x80), data[offset:end])


@dataclass(slots=True)
class RtpTimeline:
    """Unwraps 32-bit RTP timestamps into a 90 kHz count starting at 0."""

    clock_rate: int = CLOCK_RATE
    _last: int | None = None
    _ticks: int = 0
    origin: int | None = None
    """The RTP timestamp that became 0 (the first one given), None before."""

    def pts(self, timestamp: int) -> int:
        if self._last is None:
            self.origin = timestamp
        else:
            delta = (timestamp - self._last) & 0xFFFFFFFF
            if delta >= 0x80000000:
                delta -= 0x100000000
            self._ticks += delta
        self._last = timestamp
        if self.clock_rate == CLOCK_RATE:
            return self._ticks
        return self._ticks * CLOCK_RATE // self.clock_rate


@dataclass(slots=True)
class PendingUnit:
    """The access unit being reassembled by a :class:`Depacketizer`."""

    timestamp: int
    nals: list[bytes] = field(default_factory=list)
    fragment: bytearray | None = None
    size: int = 0


class Depacketizer:
    """RTP packets in, complete Annex-B access units out: the codec-neutral part.

    See the module docstring. Subclasses read their codec's payload formats
    (:meth:`_payload`) and complete keyframes with parameter sets (:meth:`_complete`).
    """

    codec: Codec
    """The codec of the access units made: set by each subclass."""

    def __init__(self, *, payload_type: int | None = None, clock_rate: int = CLOCK_RATE) -> None:
        self.payload_type = payload_type
        self._timeline = RtpTimeline(clock_rate)
        self._unit: PendingUnit | None = None
        self._next_seq: int | None = None
        self._ssrc: int | None = None
        self._broken = False
        self._need_keyframe = True
        self.lost = 0
        """RTP packets missing from the sequence."""
        self.discarded = 0
        """Access units thrown away because of loss or while waiting for a keyframe."""

    @property
    def sps(self) -> bytes | None:
        """The latest sequence parameter set seen (SDP or in-band), None until one is known."""
        raise NotImplementedError

    @property
    def waiting_for_keyframe(self) -> bool:
        """True from the start and after a loss until a keyframe completes: the moment to ask for one."""
        return self._need_keyframe

    @property
    def origin(self) -> int | None:
        """The RTP timestamp of the first access unit made (its pts is 0), None before."""
        return self._timeline.origin

    def push(self, packet: RtpPacket, received: float) -> list[MediaPacket]:
        """Feed one RTP packet; return the access units it completes (usually none or one)."""
        if self.payload_type is not None and packet.payload_type != self.payload_type:
            return []
        out: list[MediaPacket] = []
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None:
                log.info("RTP SSRC changed; waiting for a keyframe")
                self._drop_unit()
                self._need_keyframe = True
            self._ssrc = packet.ssrc
            self._next_seq = None
        if self._next_seq is not None and packet.sequence != self._next_seq:
            behind = (self._next_seq - packet.sequence) & 0xFFFF
            if behind < 0x8000:  # duplicate or late packet: already counted as lost
                return []
            self.lost += (packet.sequence - self._next_seq) & 0xFFFF
            self._broken = self._unit is not None  # the access unit in progress misses a part
            self._need_keyframe = True
        self._next_seq = (packet.sequence + 1) & 0xFFFF
        if self._unit is not None and self._unit.timestamp != packet.timestamp:
            self._finish(out, received)  # the previous access unit lacked its marker
        if self._unit is None:
            self._unit = PendingUnit(packet.timestamp)
            self._broken = False
        if not self._broken and packet.payload:
            self._payload(self._unit, packet.payload)
        if packet.marker:
            self._finish(out, received)
        return out

    def _payload(self, unit: PendingUnit, payload: bytes) -> None:
        """Add the NAL units (or the fragment) that one non-empty RTP payload carries."""
        raise NotImplementedError

    def _complete(self, nals: list[bytes]) -> tuple[list[bytes], bool]:
        """The access unit's NAL units with parameter sets before a keyframe, and whether it is one."""
        raise NotImplementedError

    def _drop_unit(self) -> None:
        if self._unit is not None:
            self.discarded += 1
        self._unit = None
        self._broken = False

    def _aggregate(self, unit: PendingUnit, payload: bytes, pos: int) -> None:
        """Add the NAL units of an aggregation packet: 16-bit size, NAL unit, repeated from ``pos``."""
        while pos + 2 <= len(payload):
            (size,) = struct.unpack_from("!H", payload, pos)
            pos += 2
            if size == 0 or pos + size > len(payload):
                self._broken = True
                return
            self._add(unit, payload[pos : pos + size])
            pos += size

    def _fragment(self, unit: PendingUnit, header: bytes, start: bool, end: bool, body: bytes) -> None:
        """One fragment of a NAL unit; ``header`` is the NAL header to rebuild it with."""
        if start:
            if unit.fragment is not None:  # previous fragment never ended
                self._broken = True
                return
            unit.fragment = bytearray(header)
        elif unit.fragment is None:  # continuation without a start: its start was lost
            self._broken = True
            return
        unit.fragment += body
        unit.size += len(body)
        if unit.size > _MAX_AU_BYTES:
            self._broken = True
            return
        if end:
            unit.nals.append(bytes(unit.fragment))
            unit.fragment = None

    def _add(self, unit: PendingUnit, nal: bytes) -> None:
        if unit.fragment is not None:  # a fragmented NAL unit was cut short
            self._broken = True
            return
        unit.size += len(nal)
        if unit.size > _MAX_AU_BYTES:
            self._broken = True
            return
        unit.nals.append(nal)

    def _finish(self, out: list[MediaPacket], received: float) -> None:
        unit, self._unit = self._unit, None
        if unit is None:
            return
        if self._broken or unit.fragment is not None or not unit.nals:
            self._broken = False
            self._need_keyframe = True
            self.discarded += 1
            return
        nals, keyframe = self._complete(unit.nals)
        if self._need_keyframe and not keyframe:
            self.discarded += 1
            return
        self._need_keyframe = False
        out.append(
            MediaPacket(
                data=h264.join_nals(nals),
                pts=self._timeline.pts(unit.timestamp),
                keyframe=keyframe,
                codec=self.codec,
                received=received,
            )
        )


class H264Depacketizer(Depacketizer):
    """H.264 RTP payloads (RFC 6184: single NAL unit, STAP-A, FU-A) to access units."""

    codec: Codec = "h264"

    def __init__(
        self,
        parameter_sets: h264.ParameterSets | None = None,
        *,
        payload_type: int | None = None,
        clock_rate: int = CLOCK_RATE,
    ) -> None:
        super().__init__(payload_type=payload_type, clock_rate=clock_rate)
        self.parameter_sets = parameter_sets or h264.ParameterSets()

    @property
    def sps(self) -> bytes | None:
        return self.parameter_sets.sps

    def _payload(self, unit: PendingUnit, payload: bytes) -> None:
        kind = payload[0] & 0x1F
        if 1 <= kind <= 23:
            self._add(unit, payload)
        elif kind == h264.NAL_STAP_A:
            self._aggregate(unit, payload, 1)
        elif kind == h264.NAL_FU_A:
            if len(payload) < 2:
                self._broken = True
                return
            indicator, header = payload[0], payload[1]
            nal_header = bytes([(indicator & 0xE0) | (header & 0x1F)])
            self._fragment(unit, nal_header, bool(header & 0x80), bool(header & 0x40), payload[2:])
        else:
            log.debug("ignoring RTP H.264 payload of NAL type %d", kind)

    def _complete(self, nals: list[bytes]) -> tuple[list[bytes], bool]:
        return self.parameter_sets.complete(nals)
