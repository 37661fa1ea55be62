"""H.265 bitstream helpers on real libx265 output (PyAV), and the hub learning an H.265 stream's info."""

from __future__ import annotations

import av
import pytest

from streams.codecs import h264, h265
from streams.hub import Hub
from streams.packets import MediaPacket
from tests.media import encode_h265


@pytest.fixture(scope="module")
def main8() -> list[MediaPacket]:
    return encode_h265(12, width=318, height=238, gop=6)


def nals_by_type(data: bytes) -> dict[int, bytes]:
    return {h265.nal_type(n): n for n in h265.split_nals(data)}


def decode(data: list[bytes]) -> int:
    """Frames an H.265 decoder makes of these access units."""
    ctx = av.CodecContext.create("hevc", "r")
    frames = [f for unit in data for f in ctx.decode(av.Packet(unit))]
    return len(frames + ctx.decode(None))


def test_nal_types_and_keyframes(main8: list[MediaPacket]) -> None:
    keyframe = main8[0]
    types = [h265.nal_type(n) for n in h265.split_nals(keyframe.data)]
    assert types[:3] == [h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS]
    assert h265.is_irap(types[-1]) and h265.is_keyframe(keyframe.data)
    expected = [i % 6 == 0 for i in range(12)]
    assert [h265.is_keyframe(p.data) for p in main8] == [p.keyframe for p in main8] == expected
    assert [h265.is_irap(t) for t in (15, 16, 19, 21, 23, 24, 32)] == [0, 1, 1, 1, 1, 0, 0]


def test_parse_sps_main_with_conformance_window(main8: list[MediaPacket]) -> None:
    sps = nals_by_type(main8[0].data)[h265.NAL_SPS]
    assert b"\x00\x00\x03" in sps  # the general PTL is emulation-escaped in the real SPS
    assert h265.general_ptl(sps) == bytes.fromhex("01 60000000 900000000000 3c")
    info = h265.parse_sps(sps)
    assert (info.codec, info.width, info.height, info.profile) == ("h265", 318, 238, "Main")
    assert info.codec_string == h265.codec_string(sps) == "hvc1.1.6.L60.90"
    assert info.profile_level_id == "1.6.L60.90"
    assert h265.stream_info(main8[0].data) == info
    assert h265.stream_info(main8[1].data) is None


@pytest.mark.parametrize(
    ("pix_fmt", "profile", "codec_string"),
    [("yuv420p10le", "Main 10", "hvc1.2.4.L63.90"), ("yuv444p", "Range Extensions", "hvc1.4.10.L63.9E.8")],
)
def test_parse_sps_other_profiles(pix_fmt: str, profile: str, codec_string: str) -> None:
    (keyframe,) = encode_h265(1, width=640, height=360, pix_fmt=pix_fmt)
    info = h265.stream_info(keyframe.data)
    assert info is not None
    assert (info.width, info.height, info.profile, info.codec_string) == (640, 360, profile, codec_string)


def sps_with_ptl(ptl: bytes) -> bytes:
    return b"\x42\x01\x01" + ptl + b"\xa0"


def test_codec_string_spells_space_tier_flags_and_constraints() -> None:
    # Profile space 1 (A), high tier, profile 4; compatibility flag 4 only; level 153;
    # constraint bytes B0 00 00 00 00 01 (zero bytes inside are kept, trailing ones dropped).
    flags = (1 << 27).to_bytes(4, "big")
    ptl = bytes([0x40 | 0x20 | 4]) + flags + bytes.fromhex("b00000000001") + bytes([153])
    assert h265.codec_string(sps_with_ptl(ptl)) == "hvc1.A4.10.H153.B0.0.0.0.0.1"
    main = bytes([1]) + bytes.fromhex("60000000") + bytes.fromhex("b00000000000") + bytes([93])
    assert h265.codec_string(sps_with_ptl(main)) == "hvc1.1.6.L93.B0"


def test_bad_sps_raises_the_h264_bitstream_error(main8: list[MediaPacket]) -> None:
    assert h265.BitstreamError is h264.BitstreamError
    params = nals_by_type(main8[0].data)
    with pytest.raises(h265.BitstreamError, match=r"not an H\.265 SPS"):
        h265.parse_sps(params[h265.NAL_PPS])
    with pytest.raises(h265.BitstreamError):
        h265.parse_sps(params[h265.NAL_SPS][:20])
    assert h265.unescape(b"\x01\x00\x00\x03\x01\x00\x00\x03\x00") == b"\x01\x00\x00\x01\x00\x00\x00"


def test_parameter_sets_complete_keyframes(main8: list[MediaPacket]) -> None:
    first = list(h265.split_nals(main8[0].data))
    vps, sps, pps = first[:3]
    aud = b"\x46\x01\x10"  # access unit delimiter
    later_key = [n for n in h265.split_nals(main8[6].data) if h265.nal_type(n) not in (32, 33, 34)]
    sets = h265.ParameterSets()
    assert sets.complete([aud, *later_key]) == ([aud, *later_key], True)  # nothing known yet
    assert sets.complete(first) == (first, True)
    assert (sets.vps, sets.sps, sets.pps) == (vps, sps, pps)
    assert sets.complete([aud, *later_key]) == ([aud, vps, sps, pps, *later_key], True)
    # A keyframe with only its PPS gets the others, in decoding order.
    assert sets.complete([pps, *later_key]) == ([vps, sps, pps, *later_key], True)
    delta = list(h265.split_nals(main8[1].data))
    assert sets.complete(delta) == (delta, False)
    # From SDP-style sets alone, a stream that never sends them in-band decodes from any keyframe.
    primed = h265.ParameterSets(vps, sps, pps)
    units = [h265.join_nals(primed.complete(later_key)[0])] + [p.data for p in main8[7:]]
    assert decode(units) == 6


def test_hub_learns_h265_stream_info(main8: list[MediaPacket]) -> None:
    hub = Hub("hevc")
    hub.publish(main8[0])
    assert hub.info is not None
    assert (hub.info.codec, hub.info.width, hub.info.codec_string) == ("h265", 318, "hvc1.1.6.L60.90")
