"""H.264 helpers on real encoder output."""

from __future__ import annotations

import pytest

from streams.codecs import h264
from tests.media import encode_h264


@pytest.mark.parametrize(("width", "height"), [(320, 240), (640, 360), (1920, 1080), (176, 144)])
def test_sps_gives_display_size(width: int, height: int) -> None:
    keyframe = encode_h264(1, width=width, height=height)[0]
    info = h264.stream_info(keyframe.data)
    assert info is not None
    assert (info.width, info.height) == (width, height)
    assert info.codec_string == "avc1." + info.profile_level_id
    assert len(info.profile_level_id) == 6


def test_parameter_sets_are_put_before_keyframes_that_lack_them() -> None:
    packets = encode_h264(12, gop=10)
    nals = list(h264.split_nals(packets[0].data))
    sps = next(n for n in nals if h264.nal_type(n) == h264.NAL_SPS)
    pps = next(n for n in nals if h264.nal_type(n) == h264.NAL_PPS)
    bare_idr = [n for n in list(h264.split_nals(packets[10].data)) if h264.nal_type(n) == h264.NAL_IDR]
    params = h264.ParameterSets(sps, pps)
    completed, keyframe = params.complete(bare_idr)
    assert keyframe
    assert completed == [sps, pps, *bare_idr]
    delta = list(h264.split_nals(packets[11].data))
    assert params.complete(delta) == (delta, False)


def test_split_and_join_round_trip() -> None:
    data = encode_h264(1)[0].data
    nals = list(h264.split_nals(data))
    assert list(h264.split_nals(h264.join_nals(nals))) == nals
    assert h264.join_nals(nals).startswith(h264.START_CODE)
    assert h264.is_keyframe(data)


def test_garbage_sps_is_a_bitstream_error() -> None:
    with pytest.raises(h264.BitstreamError):
        h264.parse_sps(b"\x67\x42")
