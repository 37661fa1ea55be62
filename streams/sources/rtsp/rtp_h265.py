"""RTP for H.265 video: :class:`H265Depacketizer` (RFC 7798).

Reads single NAL unit packets, aggregation packets (type 48) and fragmentation
units (type 49) into Annex-B access units, with the behaviour of every
:class:`~streams.sources.rtsp.rtp.Depacketizer`: completion on the marker bit or a
timestamp change, loss discards up to the next keyframe, a size cap, a 90 kHz
timeline. Each IRAP access unit goes out with its VPS, SPS and PPS (from the SDP's
``sprop-vps``/``sprop-sps``/``sprop-pps`` or the latest in-band ones), so any
subscriber can start decoding at any keyframe.

Only streams without decoding-order numbers are read (``sprop-max-don-diff`` 0,
which :func:`~streams.sources.rtsp.sdp.parse_sdp` enforces), so no DONL/DOND fields.

Pure code on bytes; one depacketizer belongs to one reader (the event loop task
iterating an RTSP source).
"""

from __future__ import annotations

import logging

from streams.codecs import h265
from streams.packets import CLOCK_RATE, Codec
from streams.sources.rtsp.rtp import Depacketizer, PendingUnit

log = logging.getLogger(__name__)

_PAYLOAD_HEADER = 2
"""Bytes of the payload header, which has the layout of an H.265 NAL unit header."""


class H265Depacketizer(Depacketizer):
    """H.265 RTP payloads (RFC 7798: single NAL unit, AP, FU) to access units."""

    codec: Codec = "h265"

    def __init__(
        self,
        parameter_sets: h265.ParameterSets | None = None,
        *,
        payload_type: int | None = None,
        clock_rate: int = CLOCK_RATE,
    ) -> None:
        super().__init__(payload_type=payload_type, clock_rate=clock_rate)
        self.parameter_sets = parameter_sets or h265.ParameterSets()

    @property
    def sps(self) -> bytes | None:
        return self.parameter_sets.sps

    def _payload(self, unit: PendingUnit, payload: bytes) -> None:
        if len(payload) <= _PAYLOAD_HEADER:
            self._broken = True
            return
        kind = h265.nal_type(payload)
        if kind < h265.NAL_AP:
            self._add(unit, payload)
        elif kind == h265.NAL_AP:
            self._aggregate(unit, payload, _PAYLOAD_HEADER)
        elif kind == h265.NAL_FU:
            fu_header = payload[2]
            # The NAL header is the payload header with the type taken from the FU header.
            nal_header = bytes([(payload[0] & 0x81) | ((fu_header & 0x3F) << 1), payload[1]])
            start, end = bool(fu_header & 0x80), bool(fu_header & 0x40)
            self._fragment(unit, nal_header, start, end, payload[_PAYLOAD_HEADER + 1 :])
        else:
            log.debug("ignoring RTP H.265 payload of type %d", kind)  # PACI (50) or reserved

    def _complete(self, nals: list[bytes]) -> tuple[list[bytes], bool]:
        return self.parameter_sets.complete(nals)


__all__ = ["H265Depacketizer"]
