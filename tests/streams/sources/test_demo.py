"""Demo sources: a real encoded test card, replayed at real-time pace."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid

import av
import pytest

from streams.codecs.h264 import NAL_PPS, NAL_SPS, nal_type, split_nals
from streams.packets import CLOCK_RATE, MediaPacket
from streams.sources._pacing import Pacer
from streams.sources.base import SourceOptions
from streams.sources.demo import DemoSource, demo_cache_stats, parse_demo_url

TINY = "size=160x96&fps=50&gop=5&loop_seconds=0.2"


def _source(query: str = TINY, label: str = "Hall 1 / cam 1", name: str = "hall1-cam1") -> DemoSource:
    return DemoSource(SourceOptions(url=f"demo://{name}?{query}", label=label))


async def _take(source: DemoSource, count: int) -> list[MediaPacket]:
    out: list[MediaPacket] = []
    async with contextlib.aclosing(source.packets()) as packets:
        async for packet in packets:
            out.append(packet)
            if len(out) == count:
                break
    return out


def _decode(packets: list[MediaPacket]) -> list[av.VideoFrame]:
    ctx = av.CodecContext.create("h264", "r")
    frames: list[av.VideoFrame] = []
    for packet in packets:
        frames.extend(ctx.decode(av.Packet(packet.data)))
    frames.extend(ctx.decode(None))
    return frames


def test_url_defaults_and_loop_of_whole_gops() -> None:
    params = parse_demo_url("demo://hall2-cam1", "Hall 2 / cam 1")
    assert (params.width, params.height, params.fps, params.gop) == (640, 360, 25, 50)
    assert params.loop_frames == 250
    odd = parse_demo_url("demo://x?fps=10&gop=15&loop_seconds=4")
    assert odd.loop_frames % odd.gop == 0 and odd.loop_frames == 45


@pytest.mark.parametrize(
    "url",
    [
        "demo://x?size=641x360",
        "demo://x?size=big",
        "demo://x?fps=0",
        "demo://x?gop=-1",
        "demo://x?colour=red",
        "demo://?fps=25",
    ],
)
def test_bad_demo_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="demo"):
        DemoSource(SourceOptions(url=url))


def test_non_ascii_label_is_drawn_as_question_marks() -> None:
    assert parse_demo_url("demo://x", "Hall 1 大厅").label == "Hall 1 ??"


async def test_keyframes_at_the_configured_interval_with_parameter_sets() -> None:
    packets = await _take(_source(), 16)
    assert [i for i, p in enumerate(packets) if p.keyframe] == [0, 5, 10, 15]
    for packet in packets:
        types = {nal_type(n) for n in split_nals(packet.data)}
        assert ({NAL_SPS, NAL_PPS} <= types) == packet.keyframe


async def test_frames_decode_at_the_configured_size() -> None:
    packets = await _take(_source(), 10)
    frames = _decode(packets)
    assert len(frames) == 10
    assert {(f.width, f.height) for f in frames} == {(160, 96)}
    assert len(_decode(packets[5:])) == 5  # a later keyframe is enough to start


async def test_pts_increase_strictly_across_the_loop_boundary() -> None:
    packets = await _take(_source(), 25)  # the loop is 10 frames long
    steps = {b.pts - a.pts for a, b in itertools.pairwise(packets)}
    assert steps == {CLOCK_RATE // 50}
    assert packets[10].data == packets[0].data and packets[10].keyframe
    assert packets[13].data == packets[3].data


async def test_real_time_pacing() -> None:
    packets = await _take(_source("size=160x96&fps=25&gop=25&loop_seconds=1"), 21)
    span = packets[-1].received - packets[0].received
    assert span == pytest.approx(20 / 25, abs=0.08)
    gaps = [b.received - a.received for a, b in itertools.pairwise(packets)]
    assert max(gaps) < 0.04 * 3


async def test_same_parameters_share_one_encode() -> None:
    label = f"shared {uuid.uuid4().hex[:8]}"
    first, second = _source(label=label), _source(label=label)
    before = demo_cache_stats().encodes
    a, b = await asyncio.gather(_take(first, 1), _take(second, 1))
    assert demo_cache_stats().encodes == before + 1
    assert first.encoded is not None and first.encoded is second.encoded
    assert a[0].data == b[0].data
    other = _source(label=label + " other")
    await _take(other, 1)
    assert demo_cache_stats().encodes == before + 2
    assert other.encoded is not first.encoded


async def test_pacer_reanchors_instead_of_bursting() -> None:
    pacer = Pacer(max_lag=0.1)
    step = CLOCK_RATE // 50
    assert await pacer.wait(0) == 0
    await asyncio.sleep(0.3)  # the consumer stalls for 15 frame intervals
    shift = await pacer.wait(step)
    assert pacer.reanchors == 1
    assert shift == pytest.approx(0.3 * CLOCK_RATE - step, abs=0.1 * CLOCK_RATE)
    started = time.monotonic()
    for n in range(2, 6):
        assert await pacer.wait(n * step) == shift
    assert time.monotonic() - started == pytest.approx(4 / 50, abs=0.03)


async def test_an_opener_cancelled_mid_encode_does_not_spoil_the_shared_encode() -> None:
    query = "size=320x180&fps=25&gop=25&loop_seconds=2"
    label = f"cancelled {uuid.uuid4().hex[:8]}"
    before = demo_cache_stats().encodes
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(_take(_source(query, label=label), 1), 0.001)
    second = _source(query, label=label)
    [packet] = await _take(second, 1)
    assert packet.keyframe and second.encoded is not None
    assert demo_cache_stats().encodes == before + 1
