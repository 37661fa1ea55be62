"""The transcoder: real H.265 (PyAV libx265) published into a real hub at a steady pace,
transcoded to H.264 by a real worker thread, checked by decoding the output with PyAV."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable

import av
import numpy as np
import pytest

from streams.codecs import h264
from streams.hub import Hub, HubClosed, Subscription
from streams.packets import CLOCK_RATE, MediaPacket
from streams.transcoding.pipeline import fit_size
from streams.transcoding.transcoder import Transcoder
from tests.media import encode_h264, encode_h265

WIDTH, HEIGHT, GOP = 320, 240, 25
FRAME_TICKS = CLOCK_RATE // 25
MAX_W, MAX_H = 160, 160
OUT_W, OUT_H = 160, 120


@pytest.fixture(scope="module")
def hevc() -> list[MediaPacket]:
    return encode_h265(50, width=WIDTH, height=HEIGHT, gop=GOP)


def make_transcoder(source: Hub, *, idle_timeout: float = 0.3, keyframe_interval: float = 2.0) -> Transcoder:
    return Transcoder(
        source,
        name="cam",
        max_width=MAX_W,
        max_height=MAX_H,
        bitrate=300_000,
        keyframe_interval=keyframe_interval,
        idle_timeout=idle_timeout,
    )


async def wait_until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class Feeder:
    """Publishes the sample packets in a loop at a steady rate, as a camera would."""

    def __init__(self, hub: Hub, packets: list[MediaPacket], fps: float, start_pts: int = 0) -> None:
        self.hub, self.packets, self.fps, self.start_pts = hub, packets, fps, start_pts
        self.published: dict[int, MediaPacket] = {}
        """pts -> the packet as published (before the hub's own timeline offset)."""
        self.count = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start, first = loop.time(), self.count
        while True:
            self.publish_next()
            await asyncio.sleep(max(0.0, start + (self.count - first) / self.fps - loop.time()))

    def publish_next(self) -> MediaPacket:
        source = self.packets[self.count % len(self.packets)]
        packet = dataclasses.replace(
            source, pts=self.start_pts + self.count * FRAME_TICKS, received=time.monotonic()
        )
        self.hub.publish(packet)
        self.published[packet.pts] = packet
        self.count += 1
        return packet


@contextlib.asynccontextmanager
async def feeding(hub: Hub, packets: list[MediaPacket], *, fps: float = 50.0) -> AsyncIterator[Feeder]:
    async with running(Feeder(hub, packets, fps)) as feeder:
        yield feeder


@contextlib.asynccontextmanager
async def running(feeder: Feeder) -> AsyncIterator[Feeder]:
    task = asyncio.create_task(feeder.run())
    try:
        yield feeder
    finally:
        task.cancel()
        await asyncio.wait([task])


async def take(sub: Subscription, count: int, within: float = 10.0) -> list[MediaPacket]:
    async with asyncio.timeout(within):
        return [await sub.get() for _ in range(count)]


def nal_types(packet: MediaPacket) -> list[int]:
    return [h264.nal_type(nal) for nal in h264.split_nals(packet.data)]


def decode_h264(packets: list[MediaPacket]) -> list[av.VideoFrame]:
    """Every packet decoded by a fresh PyAV decoder; raises if any is rejected."""
    ctx = av.CodecContext.create("h264", "r")
    assert isinstance(ctx, av.VideoCodecContext)
    frames: list[av.VideoFrame] = []
    for packet in packets:
        frames += ctx.decode(av.Packet(packet.data))
    frames += ctx.decode(None)
    return frames


def worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "transcode cam"]


async def test_output_is_scaled_baseline_h264_with_source_timing(hevc: list[MediaPacket]) -> None:
    source = Hub("cam-hevc")
    transcoder = make_transcoder(source)
    async with feeding(source, hevc) as feeder:
        await wait_until(lambda: source.last_keyframe is not None)
        sub = transcoder.subscribe()
        out = await take(sub, 60)
    await transcoder.stop()

    assert all(p.codec == "h264" for p in out)
    assert out[0].keyframe
    for packet in out:
        types = nal_types(packet)
        if packet.keyframe:
            assert h264.NAL_SPS in types and h264.NAL_PPS in types and h264.NAL_IDR in types
            assert types.index(h264.NAL_SPS) < types.index(h264.NAL_IDR)
        else:
            assert h264.NAL_IDR not in types
    info = h264.stream_info(out[0].data)
    assert info is not None
    assert (info.profile, info.width, info.height) == ("Constrained Baseline", OUT_W, OUT_H)
    assert transcoder.output.info == info

    # Source timing kept: each output packet is a source packet's pts and arrival time.
    pts = [p.pts for p in out]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    for packet in out:
        published = feeder.published[packet.pts]
        assert packet.received == published.received
        assert packet.keyframe >= published.keyframe  # every source keyframe stays a keyframe

    frames = decode_h264(out)
    assert len(frames) == len(out)
    assert {(f.width, f.height) for f in frames} == {(OUT_W, OUT_H)}
    # The pictures are the source's, scaled: compare with PyAV's own decode of the source.
    reference = av.CodecContext.create("hevc", "r")
    assert isinstance(reference, av.VideoCodecContext)
    wanted: dict[int, np.ndarray] = {}
    for packet in hevc:
        for frame in reference.decode(av.Packet(packet.data)):
            wanted[len(wanted)] = frame.reformat(width=OUT_W, height=OUT_H, format="rgb24").to_ndarray()
    index = (out[5].pts // FRAME_TICKS) % len(hevc)
    got = frames[5].reformat(format="rgb24").to_ndarray()
    assert float(np.abs(got.astype(np.int16) - wanted[index]).mean()) < 12


async def test_keyframes_at_least_every_interval_with_a_long_source_gop() -> None:
    source = Hub("cam-long-gop")
    packets = encode_h265(100, width=WIDTH, height=HEIGHT, gop=100)  # one keyframe per 4 s
    transcoder = make_transcoder(source, keyframe_interval=0.48)
    async with feeding(source, packets, fps=100):
        await wait_until(lambda: source.last_keyframe is not None)
        out = await take(transcoder.subscribe(), 60)
    await transcoder.stop()
    keys = [p.pts for p in out if p.keyframe]
    gaps = {b - a for a, b in itertools.pairwise(keys)}
    assert len(keys) >= 4
    assert gaps == {12 * FRAME_TICKS}  # the first frame 0.48 s after the last keyframe
    assert len(decode_h264(out)) == len(out)


@pytest.mark.parametrize(
    ("codec", "size"),
    [("h264 High", (320, 240)), ("h265 Main 10", (240, 320)), ("h265 small", (128, 96))],
)
async def test_decodes_whatever_codec_the_packets_say(codec: str, size: tuple[int, int]) -> None:
    width, height = size
    if codec == "h264 High":
        packets = encode_h264(25, width=width, height=height, gop=GOP, profile="high")
    elif codec == "h265 Main 10":
        packets = encode_h265(25, width=width, height=height, gop=GOP, pix_fmt="yuv420p10le")
    else:
        packets = encode_h265(25, width=width, height=height, gop=GOP)
    source = Hub("cam-any")
    transcoder = make_transcoder(source)
    async with feeding(source, packets):
        await wait_until(lambda: source.last_keyframe is not None)
        out = await take(transcoder.subscribe(), 10)
    await transcoder.stop()
    frames = decode_h264(out)
    assert len(frames) == len(out)
    assert (frames[0].width, frames[0].height) == fit_size(width, height, MAX_W, MAX_H)
    info = h264.stream_info(out[0].data)
    assert info is not None and info.profile == "Constrained Baseline"


def test_fit_size_scales_down_only_and_keeps_even_aspect() -> None:
    assert fit_size(1920, 1080, 1280, 720) == (1280, 720)
    assert fit_size(1280, 720, 1920, 1080) == (1280, 720)
    assert fit_size(1920, 1080, 640, 640) == (640, 360)
    assert fit_size(1080, 1920, 1280, 720) == (404, 720)
    assert fit_size(1001, 601, 4000, 4000) == (1000, 600)
    assert fit_size(5000, 10, 100, 100) == (100, 2)


async def test_three_subscribers_share_one_worker(hevc: list[MediaPacket]) -> None:
    source = Hub("cam-shared")
    transcoder = make_transcoder(source)
    async with feeding(source, hevc) as feeder:
        await wait_until(lambda: source.last_keyframe is not None)
        subs = [transcoder.subscribe() for _ in range(3)]
        assert transcoder.starts == 1 and transcoder.running
        assert len(worker_threads()) == 1
        received = await asyncio.gather(*(take(sub, 40) for sub in subs))
        first = feeder.count
        await wait_until(lambda: feeder.count >= first + 25)
    assert transcoder.starts == 1
    assert all(batch[0].keyframe for batch in received)
    # Every packet the worker took in came out (less the frame still in the pipeline).
    await wait_until(lambda: transcoder.frames_out >= transcoder.frames_in - 2)
    assert transcoder.frames_in >= 60
    assert transcoder.frames_out <= transcoder.frames_in
    assert transcoder.dropped == 0 and transcoder.decode_errors == 0
    await transcoder.stop()


async def test_stops_when_idle_frees_its_thread_and_restarts_on_demand(hevc: list[MediaPacket]) -> None:
    source = Hub("cam-idle")
    transcoder = make_transcoder(source, idle_timeout=0.3)
    async with feeding(source, hevc):
        await wait_until(lambda: source.last_keyframe is not None)
        sub = transcoder.subscribe()
        thread = transcoder.worker_thread
        assert thread is not None and thread.is_alive()
        before = await take(sub, 10)
        sub.close()
        left = time.monotonic()
        await wait_until(lambda: not transcoder.running, within=3.0)
        assert time.monotonic() - left < 0.3 + 1.0
        assert not thread.is_alive()
        assert worker_threads() == []

        # The stopped worker's GOP is not kept for the next viewer: it is stale.
        assert transcoder.output.last_keyframe is None
        # Whoever subscribes to the output hub starts the worker again (an output
        # handed the hub itself, too), and gets a keyframe the new worker encoded.
        again = transcoder.output.subscribe()
        assert transcoder.running and transcoder.starts == 2
        restarted = await take(again, 10)
        assert restarted[0].keyframe
        assert all(packet.pts > before[-1].pts for packet in restarted)
        assert len(decode_h264(restarted)) == len(restarted)
    await transcoder.stop()
    assert worker_threads() == []


async def test_a_subscriber_leaving_and_coming_back_within_the_timeout_keeps_the_worker(
    hevc: list[MediaPacket],
) -> None:
    source = Hub("cam-brief")
    transcoder = make_transcoder(source, idle_timeout=1.0)
    async with feeding(source, hevc):
        await wait_until(lambda: source.last_keyframe is not None)
        sub = transcoder.subscribe()
        await take(sub, 5)
        sub.close()
        await asyncio.sleep(0.2)
        sub = transcoder.subscribe()
        await take(sub, 5)
    assert transcoder.starts == 1
    await transcoder.stop()


async def test_late_subscriber_starts_on_a_cached_keyframe(hevc: list[MediaPacket]) -> None:
    source = Hub("cam-late")
    transcoder = make_transcoder(source)
    async with feeding(source, hevc):
        await wait_until(lambda: source.last_keyframe is not None)
        early = transcoder.subscribe()
        out = await take(early, 35)  # past the second keyframe, into its GOP
        assert out[-1].keyframe is False
        late = transcoder.subscribe()
        assert late.backlog > 0
        first = await take(late, 1)
        assert first[0].keyframe
        assert first[0].pts <= out[-1].pts
        assert first[0] in out  # the cached one, not the next to come
    await transcoder.stop()


async def test_garbage_packets_do_not_kill_the_worker(hevc: list[MediaPacket]) -> None:
    source = Hub("cam-garbage")
    transcoder = make_transcoder(source)
    feeder = Feeder(source, hevc, fps=50)
    feeder.publish_next()
    sub = transcoder.subscribe()
    await take(sub, 1)
    garbage = [
        b"\x00\x00\x00\x01\x26\x01" + bytes(range(256)) * 4,  # an IDR slice header, then nonsense
        b"\x00\x00\x00\x01\x02\x01" + b"\xff" * 300,
        b"not annex-b at all",
        b"",
    ]
    for i, data in enumerate(garbage * 3):
        packet = MediaPacket(data=data, pts=(1000 + i) * FRAME_TICKS, keyframe=i % 2 == 0, codec="h265")
        source.publish(packet)
        await asyncio.sleep(0.005)
    feeder.start_pts = 2000 * FRAME_TICKS
    feeder.count = 0
    async with running(feeder):
        after = await take(sub, 40)
    assert transcoder.running and transcoder.starts == 1 and transcoder.failures == 0
    tail = after[next(i for i, p in enumerate(after) if p.pts >= 2000 * FRAME_TICKS) :]
    assert tail[0].keyframe
    assert len(decode_h264(tail)) == len(tail)
    await transcoder.stop()


async def test_a_source_reconnect_is_harmless(hevc: list[MediaPacket]) -> None:
    source = Hub("cam-reconnect")
    transcoder = make_transcoder(source)
    feeder = Feeder(source, hevc, fps=50)
    feeder.publish_next()
    sub = transcoder.subscribe()
    for _ in range(30):  # into the second GOP
        feeder.publish_next()
        await asyncio.sleep(0.01)
    before = await take(sub, 20)
    source.discontinuity()  # the camera reconnected: its timestamps start over, at a keyframe
    feeder.count = 0
    async with running(feeder):
        after = await take(sub, 40)
    assert transcoder.starts == 1 and transcoder.decode_errors == 0
    pts = [p.pts for p in before + after]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    assert len(decode_h264(before + after)) == len(before) + len(after)
    await transcoder.stop()


async def test_a_worker_that_falls_behind_drops_to_the_next_keyframe(hevc: list[MediaPacket]) -> None:
    source = Hub("cam-burst")
    transcoder = Transcoder(
        source, name="cam", max_width=MAX_W, max_height=MAX_H, bitrate=300_000, queue_packets=2
    )
    feeder = Feeder(source, hevc, fps=50)
    feeder.publish_next()
    sub = transcoder.subscribe()
    for _ in range(120):  # a burst the worker cannot keep up with
        feeder.publish_next()
    await wait_until(lambda: transcoder.dropped > 0)
    async with running(feeder):
        out = await take(sub, 40)
    assert transcoder.frames_in + transcoder.dropped <= feeder.count
    assert len(decode_h264(out)) == len(out)  # still decodable: resumed at a keyframe
    assert transcoder.decode_errors == 0
    await transcoder.stop()


async def test_stop_is_prompt_idempotent_and_ends_subscribers(hevc: list[MediaPacket]) -> None:
    source = Hub("cam-stop")
    transcoder = make_transcoder(source, idle_timeout=30.0)
    async with feeding(source, hevc):
        await wait_until(lambda: source.last_keyframe is not None)
        sub = transcoder.subscribe()
        await take(sub, 5)
        thread = transcoder.worker_thread
        assert thread is not None
        started = time.monotonic()
        await transcoder.stop()
        assert time.monotonic() - started < 2.0
        await transcoder.stop()
    assert not transcoder.running and not thread.is_alive()
    with pytest.raises(HubClosed):
        while True:
            await sub.get()
    with pytest.raises(HubClosed):
        transcoder.subscribe()


async def test_a_failed_worker_signals_its_exit_and_restarts_for_its_subscribers(
    hevc: list[MediaPacket],
) -> None:
    source = Hub("cam-fail")
    transcoder = Transcoder(
        source, name="cam", max_width=MAX_W, max_height=MAX_H, bitrate=300_000, restart_delay=0.2
    )
    feeder = Feeder(source, hevc, fps=50)
    feeder.publish_next()
    sub = transcoder.subscribe()
    await take(sub, 1)
    first_thread = transcoder.worker_thread
    assert first_thread is not None
    # A codec no decoder exists for is beyond what the worker handles: it fails.
    unknown = dataclasses.replace(hevc[0], pts=100 * FRAME_TICKS, codec="vp9")  # type: ignore[arg-type]
    source.publish(unknown)
    await wait_until(lambda: transcoder.failures == 1)
    failed_at = time.monotonic()
    assert not first_thread.is_alive()
    feeder.start_pts = 200 * FRAME_TICKS
    feeder.count = 0
    async with running(feeder):  # the next keyframe replaces the bad one in the source's cache
        await wait_until(lambda: transcoder.starts == 2)
        after = await take(sub, 10)
    assert after[0].keyframe and after[0].received > failed_at
    assert len(decode_h264(after)) == len(after)
    assert transcoder.running and transcoder.failures == 1
    await transcoder.stop()
    assert worker_threads() == []


async def test_concurrent_stops_both_wait_for_the_thread(hevc: list[MediaPacket]) -> None:
    source = Hub("cam-stops")
    transcoder = make_transcoder(source)
    async with feeding(source, hevc):
        await wait_until(lambda: source.last_keyframe is not None)
        await take(transcoder.subscribe(), 3)
        thread = transcoder.worker_thread
        assert thread is not None
        await asyncio.gather(transcoder.stop(), transcoder.stop(), transcoder.stop())
    assert not thread.is_alive()


async def test_stop_without_ever_starting() -> None:
    transcoder = make_transcoder(Hub("cam-unused"))
    await transcoder.stop()
    await transcoder.stop()
    assert transcoder.starts == 0


async def test_source_hub_closing_ends_the_output(hevc: list[MediaPacket]) -> None:
    source = Hub("cam-removed")
    transcoder = make_transcoder(source, idle_timeout=30.0)
    async with feeding(source, hevc):
        await wait_until(lambda: source.last_keyframe is not None)
        sub = transcoder.subscribe()
        await take(sub, 5)
        source.close()
        await wait_until(lambda: not transcoder.running)
    with pytest.raises(HubClosed):
        async with asyncio.timeout(2.0):
            while True:
                await sub.get()
    with pytest.raises(HubClosed):
        transcoder.subscribe()
    await transcoder.stop()
    assert worker_threads() == []
