"""Decoder configuration records of MP4 sample entries: ``avcC`` (H.264), ``hvcC`` (H.265)
and ``esds`` (AAC).

ISO/IEC 14496-15 boxes built from a stream's parameter sets, with 4-byte NAL
unit lengths. Besides the parameter sets themselves they repeat a few SPS
fields (chroma format, bit depths), read by ``sample_format`` of
:mod:`streams.codecs.h264` and :mod:`streams.codecs.h265`. The ``esds`` box (ISO/IEC
14496-1 and 14496-14) wraps an AAC AudioSpecificConfig.

Pure functions on bytes, safe from any thread.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from streams.codecs import h264, h265

__all__ = ["avcc", "box", "esds", "full_box", "hvcc"]

_H264_PROFILES_WITH_CHROMA = {100, 110, 122, 144}
"""Profiles whose ``avcC`` carries chroma format and bit depths (ISO/IEC 14496-15, 5.3.3.1)."""


def box(kind: bytes, *payload: bytes) -> bytes:
    """An ISO BMFF box: 32-bit size, four-character type, payload."""
    return struct.pack(">I4s", 8 + sum(len(p) for p in payload), kind) + b"".join(payload)


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    """An ISO BMFF full box: a box whose payload starts with a version byte and 24 bits of flags."""
    return box(kind, struct.pack(">I", version << 24 | flags), *payload)


def media_information(media_header: bytes, sample_entry: bytes) -> bytes:
    """The ``minf`` box of a fragmented track: its media header (``vmhd``/``smhd``), a
    self-contained data reference, and a sample table that holds only the sample entry
    (the samples themselves come in the fragments)."""
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), sample_entry),
        full_box(b"stts", 0, 0, bytes(4)),
        full_box(b"stsc", 0, 0, bytes(4)),
        full_box(b"stsz", 0, 0, bytes(8)),
        full_box(b"stco", 0, 0, bytes(4)),
    )
    return box(b"minf", media_header, dinf, stbl)


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


_ES_DESCRIPTOR = 0x03
_DECODER_CONFIG_DESCRIPTOR = 0x04
_DECODER_SPECIFIC_INFO = 0x05
_SL_CONFIG_DESCRIPTOR = 0x06
_OBJECT_TYPE_AAC = 0x40
"""objectTypeIndication of ISO/IEC 14496-3 audio (AAC and its kin)."""
_STREAM_TYPE_AUDIO = 0x05


def _descriptor(tag: int, *payload: bytes) -> bytes:
    """An MPEG-4 descriptor: tag, size in 7-bit groups (high bit: more follow), payload."""
    body = b"".join(payload)
    size, groups = len(body), [len(body) & 0x7F]
    while size > 0x7F:
        size >>= 7
        groups.append(0x80 | (size & 0x7F))
    return bytes((tag, *reversed(groups))) + body


def esds(config: bytes, *, track_id: int = 0, bitrate: int = 0) -> bytes:
    """``esds`` box: an ES descriptor for MPEG-4 audio carrying ``config`` (the AudioSpecificConfig)."""
    decoder_config = _descriptor(
        _DECODER_CONFIG_DESCRIPTOR,
        # objectTypeIndication, streamType << 2 | upStream 0 | reserved 1, bufferSizeDB (24 bits),
        # maxBitrate, avgBitrate (0: unknown)
        struct.pack(">BB3sII", _OBJECT_TYPE_AAC, _STREAM_TYPE_AUDIO << 2 | 1, bytes(3), bitrate, bitrate),
        _descriptor(_DECODER_SPECIFIC_INFO, config),
    )
    es = _descriptor(
        _ES_DESCRIPTOR,
        struct.pack(">HB", track_id, 0),  # ES_ID, no dependency, URL or OCR stream
        decoder_config,
        _descriptor(_SL_CONFIG_DESCRIPTOR, b"\x02"),  # predefined: MP4 files
    )
    return full_box(b"esds", 0, 0, es)
