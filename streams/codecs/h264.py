"""H.264 bitstream helpers: NAL splitting, SPS parsing, parameter-set handling.

Pure functions on bytes, safe from any thread. No decoding happens here: the
SPS is parsed only far enough to learn profile, level and picture size.
"""

from __future__ import annotations

from collections.abc import Iterator

from streams.codecs.bitstream import BitReader, BitstreamError, unescape
from streams.packets import StreamInfo

__all__ = [
    "NAL_AUD",
    "NAL_FU_A",
    "NAL_IDR",
    "NAL_PPS",
    "NAL_SEI",
    "NAL_SLICE",
    "NAL_SPS",
    "NAL_STAP_A",
    "START_CODE",
    "BitstreamError",
    "ParameterSets",
    "is_keyframe",
    "join_nals",
    "nal_type",
    "parse_sps",
    "sample_format",
    "split_nals",
    "stream_info",
    "unescape",
]

START_CODE = b"\x00\x00\x00\x01"

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
NAL_STAP_A = 24
NAL_FU_A = 28

_PROFILE_NAMES = {
    66: "Baseline",
    77: "Main",
    88: "Extended",
    100: "High",
    110: "High 10",
    122: "High 4:2:2",
    244: "High 4:4:4 Predictive",
}
_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def split_nals(data: bytes) -> Iterator[bytes]:
    """Yield the NAL units of an Annex-B buffer (3- or 4-byte start codes)."""
    find = data.find
    i = find(b"\x00\x00\x01")
    while i != -1:
        start = i + 3
        nxt = find(b"\x00\x00\x01", start)
        end = len(data) if nxt == -1 else nxt - 1 if data[nxt - 1] == 0 else nxt
        if end > start:
            yield data[start:end]
        i = nxt


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F


def join_nals(nals: list[bytes]) -> bytes:
    """Annex-B access unit from NAL units."""
    return b"".join(START_CODE + nal for nal in nals)


def is_keyframe(data: bytes) -> bool:
    """True when the access unit holds an IDR slice."""
    return any(nal_type(n) == NAL_IDR for n in split_nals(data))


def _skip_scaling_list(r: BitReader, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt != 0:
            nxt = (last + r.se() + 256) % 256
        last = nxt if nxt != 0 else last


def _sample_format(r: BitReader, profile_idc: int) -> tuple[int, int, int]:
    r.ue()  # seq_parameter_set_id
    if profile_idc not in _HIGH_PROFILES:
        return 1, 0, 0  # 4:2:0, 8 bits: implied by every profile without these fields
    chroma_format_idc = r.ue()
    if chroma_format_idc == 3:
        r.bit()  # separate_colour_plane_flag
    return chroma_format_idc, r.ue(), r.ue()


def sample_format(sps: bytes) -> tuple[int, int, int]:
    """``(chroma_format_idc, bit_depth_luma_minus8, bit_depth_chroma_minus8)`` of an SPS."""
    if len(sps) < 4 or nal_type(sps) != NAL_SPS:
        raise BitstreamError("not an SPS NAL unit")
    return _sample_format(BitReader(unescape(sps[4:])), sps[1])


def parse_sps(sps: bytes) -> StreamInfo:
    """Profile, level and display size from an SPS NAL unit (header byte included)."""
    if len(sps) < 4 or nal_type(sps) != NAL_SPS:
        raise BitstreamError("not an SPS NAL unit")
    profile_idc, constraints, level_idc = sps[1], sps[2], sps[3]
    r = BitReader(unescape(sps[4:]))
    chroma_format_idc, _, _ = _sample_format(r, profile_idc)
    if profile_idc in _HIGH_PROFILES:
        r.bit()  # qpprime_y_zero_transform_bypass_flag
        if r.bit():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.bit():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.bit()
        r.se()
        r.se()
        for _ in range(r.ue()):
            r.se()
    r.ue()  # max_num_ref_frames
    r.bit()  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.bit()
    if not frame_mbs_only:
        r.bit()  # mb_adaptive_frame_field_flag
    r.bit()  # direct_8x8_inference_flag
    crop = (0, 0, 0, 0)
    if r.bit():  # frame_cropping_flag
        crop = (r.ue(), r.ue(), r.ue(), r.ue())
    sub_w, sub_h = (1, 1) if chroma_format_idc == 3 else (2, 2 if chroma_format_idc == 1 else 1)
    if chroma_format_idc == 0:
        sub_w, sub_h = 1, 1
    height_factor = 2 - frame_mbs_only
    width = width_mbs * 16 - sub_w * (crop[0] + crop[1])
    height = height_map_units * 16 * height_factor - sub_h * height_factor * (crop[2] + crop[3])
    name = _PROFILE_NAMES.get(profile_idc, f"profile {profile_idc}")
    if profile_idc == 66 and constraints & 0x40:
        name = "Constrained Baseline"
    plid = f"{profile_idc:02x}{constraints:02x}{level_idc:02x}"
    return StreamInfo(
        codec="h264",
        width=width,
        height=height,
        profile=name,
        profile_level_id=plid,
        codec_string=f"avc1.{plid}",
    )


class ParameterSets:
    """Remembers the latest SPS/PPS of a stream and puts them before keyframes that lack them.

    Cameras often send parameter sets only once, in the SDP or before the first
    keyframe; a subscriber that starts at a later keyframe needs them in-band.
    """

    def __init__(self, sps: bytes | None = None, pps: bytes | None = None) -> None:
        self.sps = sps
        self.pps = pps

    def complete(self, nals: list[bytes]) -> tuple[list[bytes], bool]:
        """Return the access unit's NAL units, with parameter sets added before an IDR
        that lacks them, and whether it is a keyframe."""
        types = [nal_type(n) for n in nals]
        for nal, t in zip(nals, types, strict=True):
            if t == NAL_SPS:
                self.sps = nal
            elif t == NAL_PPS:
                self.pps = nal
        keyframe = NAL_IDR in types
        if keyframe and (NAL_SPS not in types or NAL_PPS not in types):
            if self.sps is None or self.pps is None:
                return nals, keyframe
            prefix = [] if NAL_SPS in types else [self.sps]
            if NAL_PPS not in types:
                prefix.append(self.pps)
            lead = 1 if types and types[0] == NAL_AUD else 0
            nals = nals[:lead] + prefix + nals[lead:]
        return nals, keyframe


def stream_info(packet_data: bytes) -> StreamInfo | None:
    """StreamInfo from the first SPS in an access unit, or None if it has none."""
    for nal in split_nals(packet_data):
        if nal_type(nal) == NAL_SPS:
            return parse_sps(nal)
    return None
