"""H.265 (HEVC) bitstream helpers: NAL types, SPS parsing, codec strings, parameter sets.

The counterpart of :mod:`streams.codecs.h264` for H.265. Annex-B splitting and joining
are the same for both codecs and are reused from there, as is
:class:`~streams.codecs.bitstream.BitstreamError`. The SPS is parsed only far enough to learn
profile, tier, level and picture size; :func:`general_ptl` gives the raw
profile/tier/level bytes that an ``hvcC`` box and a codec string are made of.

Pure functions on bytes, safe from any thread.
"""

from __future__ import annotations

from streams.codecs.bitstream import BitReader, BitstreamError, unescape
from streams.codecs.h264 import START_CODE, join_nals, split_nals
from streams.packets import StreamInfo

__all__ = [
    "NAL_AUD",
    "NAL_PPS",
    "NAL_SEI_PREFIX",
    "NAL_SEI_SUFFIX",
    "NAL_SPS",
    "NAL_VPS",
    "START_CODE",
    "BitstreamError",
    "ParameterSets",
    "codec_string",
    "general_ptl",
    "is_irap",
    "is_keyframe",
    "join_nals",
    "nal_type",
    "parse_sps",
    "sample_format",
    "split_nals",
    "stream_info",
    "unescape",
]

NAL_IDR_W_RADL = 19
NAL_IDR_N_LP = 20
NAL_CRA = 21
NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34
NAL_AUD = 35
NAL_SEI_PREFIX = 39
NAL_SEI_SUFFIX = 40
NAL_AP = 48
"""RTP aggregation packet (RFC 7798), never in a bitstream."""
NAL_FU = 49
"""RTP fragmentation unit (RFC 7798), never in a bitstream."""

_PARAMETER_SETS = (NAL_VPS, NAL_SPS, NAL_PPS)

_PROFILE_NAMES = {
    1: "Main",
    2: "Main 10",
    3: "Main Still Picture",
    4: "Range Extensions",
    5: "High Throughput",
    9: "Screen Content Coding",
}
_PROFILE_SPACES = ("", "A", "B", "C")

_PTL_BYTES = 12
"""general profile_tier_level: space/tier/idc (1), compatibility flags (4), constraints (6), level (1)."""


def nal_type(nal: bytes) -> int:
    """The type of an H.265 NAL unit, from the first byte of its two-byte header."""
    return (nal[0] >> 1) & 0x3F


def is_irap(kind: int) -> bool:
    """True for the NAL types of intra random access points (BLA, IDR, CRA): keyframes."""
    return 16 <= kind <= 23


def is_keyframe(data: bytes) -> bool:
    """True when the Annex-B access unit holds an IRAP slice."""
    return any(is_irap(nal_type(n)) for n in split_nals(data))


def _check_sps(sps: bytes) -> None:
    if len(sps) < 3 + _PTL_BYTES or nal_type(sps) != NAL_SPS:
        raise BitstreamError("not an H.265 SPS NAL unit")


def general_ptl(sps: bytes) -> bytes:
    """The 12 bytes of the SPS's general profile_tier_level, as an ``hvcC`` box stores them.

    ``sps`` is the whole NAL unit (two-byte header included). The bytes are:
    profile space (2 bits), tier (1), profile idc (5); 32 profile compatibility
    flags; 48 bits of constraint flags; level idc.
    """
    _check_sps(sps)
    ptl = unescape(sps[2:])[1 : 1 + _PTL_BYTES]
    if len(ptl) < _PTL_BYTES:
        raise BitstreamError("SPS ends early")
    return ptl


def _reverse32(value: int) -> int:
    return int(f"{value:032b}"[::-1], 2)


def _codec_string(ptl: bytes) -> str:
    space, tier, idc = ptl[0] >> 6, (ptl[0] >> 5) & 1, ptl[0] & 0x1F
    compatibility = _reverse32(int.from_bytes(ptl[1:5], "big"))
    constraints = ptl[5:11].rstrip(b"\x00")
    text = f"hvc1.{_PROFILE_SPACES[space]}{idc}.{compatibility:X}.{'H' if tier else 'L'}{ptl[11]}"
    return text + "".join(f".{b:X}" for b in constraints)


def codec_string(sps: bytes) -> str:
    """RFC 6381 codec string for MSE, per ISO/IEC 14496-15 Annex E: ``hvc1.1.6.L93.B0``.

    Profile space letter and profile idc; the compatibility flags in reverse bit
    order, in hex; ``L`` or ``H`` tier and the level idc; the constraint bytes in
    hex, trailing zero bytes left out.
    """
    return _codec_string(general_ptl(sps))


def _profile_name(ptl: bytes) -> str:
    idc = ptl[0] & 0x1F
    if idc == 0:  # some encoders signal the profile only by its compatibility flag
        flags = int.from_bytes(ptl[1:5], "big")
        idc = next((j for j in range(1, 32) if flags & (1 << (31 - j))), 0)
    return _PROFILE_NAMES.get(idc, f"profile {idc}")


def _skip_sub_layers(r: BitReader, max_sub_layers_minus1: int) -> None:
    present = [(r.bit(), r.bit()) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for profile_present, level_present in present:
        r.skip(88 * profile_present + 8 * level_present)


def _read_picture(r: BitReader) -> tuple[int, int, int]:
    """Read an SPS up to the end of its conformance window: chroma format, width, height."""
    r.skip(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.bits(3)
    r.skip(1 + 8 * _PTL_BYTES)  # temporal_id_nesting_flag, general profile_tier_level
    _skip_sub_layers(r, max_sub_layers_minus1)
    r.ue()  # sps_seq_parameter_set_id
    chroma_format_idc = r.ue()
    separate_planes = r.bit() if chroma_format_idc == 3 else 0
    width, height = r.ue(), r.ue()
    if r.bit():  # conformance_window_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        sub_w = 2 if chroma_format_idc in (1, 2) and not separate_planes else 1
        sub_h = 2 if chroma_format_idc == 1 and not separate_planes else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    return chroma_format_idc, width, height


def sample_format(sps: bytes) -> tuple[int, int, int]:
    """``(chroma_format_idc, bit_depth_luma_minus8, bit_depth_chroma_minus8)`` of an SPS."""
    _check_sps(sps)
    r = BitReader(unescape(sps[2:]))
    chroma_format_idc, _, _ = _read_picture(r)
    return chroma_format_idc, r.ue(), r.ue()


def parse_sps(sps: bytes) -> StreamInfo:
    """Profile, level and display size (after the conformance window) from an SPS NAL unit.

    ``profile_level_id`` holds the codec string without its ``hvc1.`` prefix
    (profile, compatibility, tier and level, constraints).
    """
    ptl = general_ptl(sps)
    _, width, height = _read_picture(BitReader(unescape(sps[2:])))
    if width <= 0 or height <= 0:
        raise BitstreamError(f"implausible picture size {width}x{height} in SPS")
    text = _codec_string(ptl)
    return StreamInfo(
        codec="h265",
        width=width,
        height=height,
        profile=_profile_name(ptl),
        profile_level_id=text.removeprefix("hvc1."),
        codec_string=text,
    )


class ParameterSets:
    """Remembers the latest VPS/SPS/PPS of a stream and puts them before keyframes that lack them.

    Cameras often send parameter sets only once, in the SDP or before the first
    keyframe; a subscriber that starts at a later keyframe needs them in-band.
    """

    def __init__(self, vps: bytes | None = None, sps: bytes | None = None, pps: bytes | None = None) -> None:
        self.vps = vps
        self.sps = sps
        self.pps = pps

    def complete(self, nals: list[bytes]) -> tuple[list[bytes], bool]:
        """Return the access unit's NAL units, with parameter sets added before an IRAP
        picture that lacks some, and whether it is a keyframe.

        When sets are added, all parameter sets go right after a leading access unit
        delimiter in the order VPS, SPS, PPS (a decoder reads a PPS against its SPS).
        """
        types = [nal_type(n) for n in nals]
        for nal, t in zip(nals, types, strict=True):
            if t == NAL_VPS:
                self.vps = nal
            elif t == NAL_SPS:
                self.sps = nal
            elif t == NAL_PPS:
                self.pps = nal
        keyframe = any(is_irap(t) for t in types)
        if not keyframe or all(t in types for t in _PARAMETER_SETS):
            return nals, keyframe
        remembered = {NAL_VPS: self.vps, NAL_SPS: self.sps, NAL_PPS: self.pps}
        prefix: list[bytes] = []
        for kind in _PARAMETER_SETS:
            own = [n for n, t in zip(nals, types, strict=True) if t == kind]
            stored = remembered[kind]
            if own:
                prefix += own
            elif stored is not None:
                prefix.append(stored)
            else:
                return nals, keyframe  # nothing known yet: leave the access unit as it is
        lead = 1 if types and types[0] == NAL_AUD else 0
        rest = [n for n, t in zip(nals[lead:], types[lead:], strict=True) if t not in _PARAMETER_SETS]
        return nals[:lead] + prefix + rest, keyframe


def stream_info(packet_data: bytes) -> StreamInfo | None:
    """StreamInfo from the first SPS in an Annex-B access unit, or None if it has none."""
    for nal in split_nals(packet_data):
        if nal_type(nal) == NAL_SPS:
            return parse_sps(nal)
    return None
