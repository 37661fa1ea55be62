"""Decoder configuration records of MP4 sample entries: ``avcC`` (H.264) and ``hvcC`` (H.265).

ISO/IEC 14496-15 boxes built from a stream's parameter sets, with 4-byte NAL
unit lengths. Besides the parameter sets themselves they repeat a few SPS
fields (chroma format, bit depths), read by ``sample_format`` of
:mod:`streams.h264` and :mod:`streams.h265`.

Pure functions on bytes, safe from any thread.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from streams import h264, h265

__all__ = ["avcc", "hvcc"]

_H264_PROFILES_WITH_CHROMA = {100, 110, 122, 144}
"""Profiles whose ``avcC`` carries chroma format and bit depths (ISO/IEC 14496-15, 5.3.3.1)."""


def box(kind: bytes, *payload: bytes) -> bytes:
    """An ISO BMFF box: 32-bit size, four-character type, payload."""
    return struct.pack(">I4s", 8 + sum(len(p) for p in payload), kind) + b"".join(payload)


def _arrays(nals: Iterable[bytes]) -> bytes:
    return b"".join(struct.pack(">H", len(n)) + n for n in nals)


def avcc(sps: Sequence[bytes], pps: Sequence[bytes]) -> bytes:
    """``avcC`` box: profile, compatibility and level of the first SPS, then every SPS and PPS."""
    first = sps[0]
    body = bytes((1, first[1], first[2], first[3], 0xFC | 3, 0xE0 | len(sps))) + _arrays(sps)
    body += bytes((len(pps),)) + _arrays(pps)
    if first[1] in _H264_PROFILES_WITH_CHROMA:
        chroma, depth_luma, depth_chroma = h264.sample_format(first)
        body += bytes((0xFC | chroma, 0xF8 | depth_luma, 0xF8 | depth_chroma, 0))  # no SPS extensions
    return box(b"avcC", body)


def hvcc(vps: Sequence[bytes], sps: Sequence[bytes], pps: Sequence[bytes]) -> bytes:
    """``hvcC`` box: the first SPS's profile/tier/level and format, then arrays of VPS, SPS, PPS."""
    first = sps[0]
    chroma, depth_luma, depth_chroma = h265.sample_format(first)
    sub_layers = (first[2] >> 1) & 0x07  # sps_max_sub_layers_minus1
    nested = first[2] & 0x01  # sps_temporal_id_nesting_flag
    body = bytes((1,)) + h265.general_ptl(first)
    body += struct.pack(
        ">HBBBBHB",
        0xF000,  # reserved, min_spatial_segmentation_idc 0
        0xFC,  # reserved, parallelismType 0 (unknown)
        0xFC | chroma,
        0xF8 | depth_luma,
        0xF8 | depth_chroma,
        0,  # avgFrameRate: unknown
        # constantFrameRate 0 (unknown), numTemporalLayers, temporalIdNested, lengthSizeMinusOne 3
        (sub_layers + 1) << 3 | nested << 2 | 3,
    )
    arrays = [(h265.NAL_VPS, vps), (h265.NAL_SPS, sps), (h265.NAL_PPS, pps)]
    body += bytes((len(arrays),))
    for kind, nals in arrays:
        body += struct.pack(">BH", 0x80 | kind, len(nals)) + _arrays(nals)  # array_completeness 1
    return box(b"hvcC", body)
