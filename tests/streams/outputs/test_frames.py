"""The shared frame source: one decode per camera for MJPEG, snapshots and keyframe
consumers, keyframes only when that is all anyone needs, gone after its last consumer.

A real demo camera (libx264, a keyframe every 10 frames at 25 fps) pulled by a real
:class:`~streams.manager.StreamManager`; the test reaches the stream's frame source
the way an output does, through the registry's :class:`~streams.outputs.base.StreamContext`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest

from streams.hub import HubClosed
from streams.ingest import IngestState
from streams.manager import StreamManager
from streams.outputs.base import OUTPUTS, StreamContext, StreamOutput, output_of
from streams.outputs.frames import FrameSource, FrameSubscription
from streams.sources import SourceOptions
from streams.specs import CameraSpec, RelaySettings

GOP = 10
CAMERA = CameraSpec(
    id="tax-1", source=SourceOptions(url=f"demo://tax-1?size=320x180&gop={GOP}&loop_seconds=2")
)


async def wait_until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def camera() -> AsyncIterator[tuple[StreamManager, FrameSource]]:
    """A running manager with one demo camera, and its main stream's frame source."""
    sources: list[FrameSource] = []
    registry = OUTPUTS.copy()

    @registry.register("frames-probe")
    def probe(context: StreamContext) -> StreamOutput | None:
        source = output_of(context.outputs, "frames", FrameSource)
        if source is not None and context.stream == "main":
            sources.append(source)
        return None

    manager = StreamManager([CAMERA], RelaySettings(mjpeg_max_fps=10), outputs=registry)
    await manager.start()
    try:
        await wait_until(lambda: manager.stats("tax-1").state is IngestState.ONLINE, within=15)
        assert len(sources) == 1
        yield manager, sources[0]
    finally:
        await manager.stop()


async def frames_of(consumer: FrameSubscription, count: int) -> None:
    for _ in range(count):
        await asyncio.wait_for(consumer.next(), 5.0)


async def read_mjpeg(stream: AsyncIterator[bytes], frames: list[bytes]) -> None:
    async for jpeg in stream:
        frames.append(jpeg)


async def test_mjpeg_viewers_snapshots_and_keyframe_consumers_share_one_decode() -> None:
    async with camera() as (manager, source):
        hub = manager.hub("tax-1")
        seen: list[list[bytes]] = [[], []]
        viewers = [asyncio.create_task(read_mjpeg(manager.mjpeg("tax-1"), frames)) for frames in seen]
        analysis = source.subscribe(keyframes_only=True)
        try:
            await wait_until(lambda: all(len(frames) >= 3 for frames in seen))
            snapshots = await asyncio.gather(*(manager.snapshot("tax-1") for _ in range(4)))
            await frames_of(analysis, 2)
            stats = manager.output_statistics("tax-1")["main"]["frames"]
            assert stats["running"] and stats["consumers"] == 2  # the MJPEG publisher and analysis
            assert not stats["keyframes_only"]
            assert stats["decodes_peak"] == 1, "never two decodes of one camera at once"
            assert hub.subscriber_count == 1, "one hub subscription for every consumer of pixels"
            assert all(jpeg[:2] == b"\xff\xd8" for jpeg in snapshots)
            assert stats["on_demand_decodes"] == 0, "snapshots took the running source's frames"
        finally:
            for viewer in viewers:
                viewer.cancel()
            await asyncio.wait(viewers)
            await analysis.close()
        assert not source.running and hub.subscriber_count == 0


async def test_keyframe_consumers_alone_decode_keyframes_only_until_one_wants_every_frame() -> None:
    async with camera() as (_, source):
        first, second = source.subscribe(keyframes_only=True), source.subscribe(keyframes_only=True)
        await asyncio.gather(frames_of(first, 3), frames_of(second, 3))
        assert source.keyframes_only
        assert source.frames_decoded == source.keyframes_decoded >= 3
        # Roughly one frame decoded per GOP of packets received, the rest skipped undecoded.
        assert source.frames_decoded <= source.packets_received // GOP + 2
        assert source.packets_skipped >= source.packets_received - source.frames_decoded - 1
        assert source.decode_errors == 0

        packets, decoded = source.packets_received, source.frames_decoded
        every = source.subscribe(max_fps=50)
        assert not source.keyframes_only
        await frames_of(every, 20)
        await frames_of(first, 1)  # keyframe consumers still get keyframes
        more_packets, more_decoded = source.packets_received - packets, source.frames_decoded - decoded
        assert more_decoded >= 0.8 * more_packets > 0, "every packet is decoded now"
        assert source.decodes_peak == 1

        await every.close()
        assert source.keyframes_only and source.running
        await first.close()
        await second.close()
        assert not source.running and source.consumer_count == 0


async def test_keyframes_nobody_is_ready_for_are_not_decoded() -> None:
    """A keyframe consumer at one picture a second on a camera with 2.5 keyframes a second:
    about one keyframe in three or so is decoded, the others are skipped undecoded."""
    async with camera() as (_, source), source.subscribe(keyframes_only=True, max_fps=1.0) as slow:
        started = time.monotonic()
        pictures = [await asyncio.wait_for(slow.next(), 5.0) for _ in range(3)]
        elapsed = time.monotonic() - started
        assert [p.keyframe for p in pictures] == [True] * 3
        assert elapsed >= 1.5, "at most one picture a second (the first at once)"
        keyframes_sent = source.packets_received / GOP
        assert source.keyframes_decoded <= 4 < keyframes_sent, (source.keyframes_decoded, keyframes_sent)


async def test_the_last_consumer_leaving_stops_the_source_and_leaves_the_hub() -> None:
    async with camera() as (manager, source):
        hub = manager.hub("tax-1")
        assert not source.running and hub.subscriber_count == 0
        consumer = source.subscribe(max_fps=25)
        frame = await asyncio.wait_for(consumer.next(), 5.0)
        assert frame.frame.width == 320 and frame.pts is not None
        assert source.latest is not None and hub.subscriber_count == 1

        waiting = asyncio.ensure_future(consumer.next())
        await consumer.close()
        with pytest.raises(HubClosed):
            await asyncio.wait_for(waiting, 2.0)
        assert not source.running and source.latest is None
        assert hub.subscriber_count == 0
        assert source.statistics()["consumers"] == 0

        # Idle, a snapshot decodes the latest keyframe itself, and a new consumer starts it again.
        jpeg = await manager.snapshot("tax-1")
        assert jpeg[:2] == b"\xff\xd8" and source.on_demand_decodes == 1
        assert not source.running and hub.subscriber_count == 0
        async with source.subscribe(keyframes_only=True) as again:
            await frames_of(again, 1)
            assert source.starts == 2 and hub.subscriber_count == 1
        assert not source.running and hub.subscriber_count == 0


async def test_a_slow_consumer_gets_the_latest_frame_not_a_queue() -> None:
    async with camera() as (_, source):
        fast, slow = source.subscribe(), source.subscribe()
        first = await asyncio.wait_for(slow.next(), 5.0)
        await frames_of(fast, 8)  # the slow consumer reads nothing meanwhile; the fast one saw it first
        latest = await asyncio.wait_for(slow.next(), 5.0)
        assert latest is source.latest and latest.seq >= first.seq + 7  # six or more skipped
        assert latest.pts is not None and first.pts is not None and latest.pts > first.pts
        await fast.close()
        await slow.close()
        assert not source.running
