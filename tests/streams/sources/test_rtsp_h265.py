"""The RTSP source on H.265 (GStreamer's x265enc and rtph265pay) and on H.264 with B-frames."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import av
import pytest

from streams.codecs import h264, h265
from streams.hub import Hub
from streams.packets import MediaPacket
from streams.sources.base import SourceOptions
from streams.sources.rtsp.source import RtspSource
from tests.rtsp_fixtures import RtspServerFactory

pytestmark = pytest.mark.rtsp


async def take(source: RtspSource, count: int, *, within: float = 10.0) -> list[MediaPacket]:
    out: list[MediaPacket] = []
    async with contextlib.aclosing(source.packets()) as gen:
        async with asyncio.timeout(within):
            async for packet in gen:
                out.append(packet)
                if len(out) >= count:
                    break
    return out


def source(url: str, transport: str = "tcp") -> RtspSource:
    return RtspSource(SourceOptions(url=url, transport=transport, connect_timeout=3.0, read_timeout=3.0))  # type: ignore[arg-type]


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_h265_camera_yields_keyframes_with_parameter_sets(
    rtsp_server: RtspServerFactory, transport: str
) -> None:
    server = rtsp_server(streams={"hevc": "320x240@25,300k,gop=10,codec=h265"})
    src = source(server.url("hevc"), transport)
    packets = await take(src, 22)
    assert {p.codec for p in packets} == {"h265"}
    keyframes = [p for p in packets if p.keyframe]
    assert packets[0].keyframe and len(keyframes) >= 2
    for keyframe in keyframes:
        types = [h265.nal_type(n) for n in h265.split_nals(keyframe.data)]
        assert {h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS} <= set(types)
        assert any(h265.is_irap(t) for t in types)
    assert src.info is not None
    assert (src.info.codec, src.info.width, src.info.height, src.info.profile) == ("h265", 320, 240, "Main")
    assert src.info.codec_string.startswith("hvc1.1.6.L")
    pts = [p.pts for p in packets]
    assert pts == sorted(pts) and pts[0] == 0
    ctx = av.CodecContext.create("hevc", "r")
    frames = [f for p in packets for f in ctx.decode(av.Packet(p.data))]
    assert len(frames) >= len(packets) - 1
    assert (frames[0].width, frames[0].height) == (320, 240)


async def test_h264_camera_with_b_frames_sends_reordered_timestamps(rtsp_server: RtspServerFactory) -> None:
    server = rtsp_server(streams={"cam": "320x240@25,300k,gop=25,bframes=2"})
    src = source(server.url("cam"))
    packets = await take(src, 20)
    assert src.info is not None and src.info.profile == "High"
    pts = [p.pts for p in packets]
    assert any(later < earlier for earlier, later in itertools.pairwise(pts))
    assert sorted(pts) == sorted(set(pts))  # every frame once
    assert h264.stream_info(packets[0].data) == src.info
    hub = Hub("cam")
    for packet in packets:
        hub.publish(packet)
    assert hub.reorders
