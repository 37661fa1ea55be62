"""Pictures: snapshots of the latest keyframe, and MJPEG decoded once per camera
however many viewers, with real H.264 published into a real hub."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from streams.hub import Hub
from streams.outputs.pictures import MJPEG_BOUNDARY, NoPicture, PictureOutput, mjpeg_part
from streams.packets import CLOCK_RATE, MediaPacket
from tests.media import encode_h264

WIDTH, HEIGHT, GOP = 320, 240, 10
FRAME_TICKS = CLOCK_RATE // 25


@pytest.fixture(scope="module")
def packets() -> list[MediaPacket]:
    return encode_h264(40, width=WIDTH, height=HEIGHT, gop=GOP)


def source_picture(index: int) -> npt.NDArray[np.int16]:
    """Frame ``index`` as ``tests.media.encode_h264`` drew it, in BGR."""
    ramp = (np.arange(WIDTH) % 256)[None, :].repeat(HEIGHT, axis=0)
    return np.dstack([255 - ramp, ramp, (ramp + index * 4) % 256]).astype(np.int16)


def decode_jpeg(jpeg: bytes) -> npt.NDArray[np.uint8]:
    assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image.astype(np.uint8)


def closest_keyframe(jpeg: bytes) -> int:
    image = decode_jpeg(jpeg).astype(np.int16)
    errors = {i: float(np.abs(image - source_picture(i)).mean()) for i in range(0, 40, GOP)}
    return min(errors, key=errors.__getitem__)


async def wait_until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class Feeder:
    """Publishes the sample packets in a loop at a steady frame rate, as a camera would."""

    def __init__(self, hub: Hub, packets: list[MediaPacket], fps: float, count: int | None) -> None:
        self.hub, self.packets, self.fps, self.count = hub, packets, fps, count
        self.published = 0
        self.done = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while self.count is None or self.published < self.count:
            source = self.packets[self.published % len(self.packets)]
            # A new object each time, as a source makes: the hub's GOP cache changes with it.
            packet = dataclasses.replace(source, pts=self.published * FRAME_TICKS, received=time.monotonic())
            self.hub.publish(packet)
            self.published += 1
            await asyncio.sleep(max(0.0, start + self.published / self.fps - loop.time()))
        self.done.set()


@contextlib.asynccontextmanager
async def feeding(
    hub: Hub, packets: list[MediaPacket], *, fps: float = 50.0, count: int | None = None
) -> AsyncIterator[Feeder]:
    feeder = Feeder(hub, packets, fps, count)
    task = asyncio.create_task(feeder.run())
    try:
        yield feeder
    finally:
        task.cancel()
        await asyncio.wait([task])
        assert task.cancelled() or task.exception() is None


class Viewer:
    """An MJPEG viewer reading as fast as frames come, in its own task."""

    def __init__(self, output: PictureOutput, limit: int | None = None) -> None:
        self.frames: list[tuple[float, bytes]] = []
        self.task = asyncio.create_task(self._read(output.mjpeg(), limit))

    async def _read(self, stream: AsyncGenerator[bytes, None], limit: int | None) -> None:
        async with contextlib.aclosing(stream):
            async for jpeg in stream:
                self.frames.append((time.monotonic(), jpeg))
                if limit is not None and len(self.frames) >= limit:
                    return

    async def leave(self) -> None:
        self.task.cancel()
        await asyncio.wait([self.task])


# Snapshots ---------------------------------------------------------------


async def test_snapshot_is_latest_keyframe_and_cached_within_gop(packets: list[MediaPacket]) -> None:
    hub = Hub("cam")
    output = PictureOutput(hub)
    for packet in packets[:15]:  # a GOP and half of the next: the latest keyframe is frame 10
        hub.publish(packet)
    first = await output.snapshot()
    assert decode_jpeg(first).shape == (HEIGHT, WIDTH, 3)
    assert closest_keyframe(first) == 10
    assert output.jpegs_encoded == 1

    for packet in packets[15:19]:  # same GOP: nothing to redo
        hub.publish(packet)
    assert await output.snapshot() is first
    assert output.jpegs_encoded == 1

    for packet in packets[19:22]:  # a new keyframe (frame 20)
        hub.publish(packet)
    newer = await output.snapshot()
    assert closest_keyframe(newer) == 20
    assert output.jpegs_encoded == 2
    await output.stop()


async def test_concurrent_snapshots_encode_once_and_scale(packets: list[MediaPacket]) -> None:
    hub = Hub("cam")
    output = PictureOutput(hub, max_width=160, executor_slots=asyncio.Semaphore(1))
    for packet in packets[:5]:
        hub.publish(packet)
    jpegs = await asyncio.gather(*(output.snapshot() for _ in range(8)))
    assert all(jpeg is jpegs[0] for jpeg in jpegs)
    assert output.jpegs_encoded == 1
    assert decode_jpeg(jpegs[0]).shape == (120, 160, 3)


async def test_snapshot_waits_for_the_first_keyframe(packets: list[MediaPacket]) -> None:
    hub = Hub("cam")
    output = PictureOutput(hub)
    pending = asyncio.create_task(output.snapshot(timeout=5.0))
    await wait_until(lambda: hub.subscriber_count == 1)
    for packet in packets[:3]:
        hub.publish(packet)
    jpeg = await asyncio.wait_for(pending, 5.0)
    assert closest_keyframe(jpeg) == 0
    assert hub.subscriber_count == 0


async def test_snapshot_without_keyframe_raises_no_picture(packets: list[MediaPacket]) -> None:
    hub = Hub("cam")
    output = PictureOutput(hub)
    started = time.monotonic()
    with pytest.raises(NoPicture, match=r"no keyframe within 0\.2 s"):
        await output.snapshot(timeout=0.2)
    assert 0.15 < time.monotonic() - started < 2.0
    assert hub.subscriber_count == 0

    for packet in packets[1:5]:  # frames without their keyframe do not help
        hub.publish(packet)
    with pytest.raises(NoPicture):
        await output.snapshot(timeout=0.05)

    await output.stop()
    with pytest.raises(NoPicture, match="stopped"):
        await output.snapshot()


# MJPEG -------------------------------------------------------------------


async def test_many_viewers_share_one_decoder(packets: list[MediaPacket]) -> None:
    hub = Hub("cam")
    output = PictureOutput(hub, max_fps=10, max_width=160)
    viewers = [Viewer(output) for _ in range(5)]
    await wait_until(lambda: output.viewer_count == 5)
    assert output.decoder_running
    assert hub.subscriber_count == 1, "one decoder subscription, not one per viewer"

    async with feeding(hub, packets, fps=60, count=60) as feeder:
        await asyncio.wait_for(feeder.done.wait(), 5.0)
        await wait_until(lambda: output.frames_decoded >= feeder.published)
    assert output.frames_decoded == 60, "every packet decoded once, not once per viewer"
    assert output.decode_errors == 0
    # One second at 10 fps: each JPEG is encoded once and shared by every viewer.
    assert 3 <= output.jpegs_encoded <= 12
    shared = {id(jpeg) for viewer in viewers for _, jpeg in viewer.frames}
    assert len(shared) <= output.jpegs_encoded
    for viewer in viewers:
        assert len(viewer.frames) >= 3
        assert decode_jpeg(viewer.frames[-1][1]).shape == (120, 160, 3)

    for viewer in viewers:
        await viewer.leave()
    assert not output.decoder_running
    assert output.viewer_count == 0
    assert hub.subscriber_count == 0


async def test_mjpeg_rate_is_capped(packets: list[MediaPacket]) -> None:
    hub = Hub("cam")
    output = PictureOutput(hub, max_fps=5)
    async with feeding(hub, packets, fps=50):
        viewer = Viewer(output)
        await wait_until(lambda: len(viewer.frames) >= 1)
        first = viewer.frames[0][0]
        await wait_until(lambda: time.monotonic() - first >= 1.2, within=3.0)
        await viewer.leave()
    times = [t for t, _ in viewer.frames if t - first <= 1.2]
    assert 4 <= len(times) <= 7  # 1 + 1.2 s x 5 fps
    gaps = np.diff(times)
    assert gaps.min() > 0.1
    assert output.frames_decoded > 3 * output.jpegs_encoded


async def test_slow_viewer_does_not_hold_back_a_fast_one(packets: list[MediaPacket]) -> None:
    hub = Hub("cam")
    output = PictureOutput(hub, max_fps=20)
    async with feeding(hub, packets, fps=50):
        slow = output.mjpeg()
        slow_first = await asyncio.wait_for(anext(slow), 5.0)  # then reads nothing for a while
        fast = Viewer(output, limit=8)
        started = time.monotonic()
        await asyncio.wait_for(fast.task, 5.0)
        assert time.monotonic() - started < 2.0  # 8 frames at 20 fps take about 0.4 s
        fast_jpegs = [jpeg for _, jpeg in fast.frames]
        assert all(jpeg is not slow_first for jpeg in fast_jpegs[1:])
        # The slow viewer resumes at the latest picture, skipping those it missed.
        slow_next = await asyncio.wait_for(anext(slow), 5.0)
        assert slow_next is fast_jpegs[-1]
        assert output.viewer_count == 1 and output.decoder_running
        await slow.aclose()
    assert not output.decoder_running


async def test_last_viewer_leaving_stops_the_decoder(packets: list[MediaPacket]) -> None:
    hub = Hub("cam")
    output = PictureOutput(hub, max_fps=20)
    async with feeding(hub, packets, fps=50):
        closed_by_aclose = output.mjpeg()
        await asyncio.wait_for(anext(closed_by_aclose), 5.0)
        cancelled = Viewer(output)
        await wait_until(lambda: len(cancelled.frames) >= 1)
        assert output.viewer_count == 2 and hub.subscriber_count == 1

        await closed_by_aclose.aclose()
        assert output.viewer_count == 1 and output.decoder_running

        await cancelled.leave()
        assert output.viewer_count == 0
        assert not output.decoder_running
        assert hub.subscriber_count == 0

        # A new viewer starts a new decoder.
        again = Viewer(output, limit=2)
        await asyncio.wait_for(again.task, 5.0)
        assert not output.decoder_running and hub.subscriber_count == 0


async def test_stop_ends_active_iterators(packets: list[MediaPacket]) -> None:
    hub = Hub("cam")
    output = PictureOutput(hub, max_fps=20)
    async with feeding(hub, packets, fps=50):
        viewers = [Viewer(output) for _ in range(3)]
        await wait_until(lambda: all(viewer.frames for viewer in viewers))
        await output.stop()
        done, _ = await asyncio.wait([viewer.task for viewer in viewers], timeout=2.0)
        assert len(done) == 3
        assert all(not task.cancelled() and task.exception() is None for task in done)
        assert not output.decoder_running and output.viewer_count == 0
        assert hub.subscriber_count == 0
        await output.stop()  # idempotent
        assert [jpeg async for jpeg in output.mjpeg()] == []


async def test_hub_closing_ends_viewers(packets: list[MediaPacket]) -> None:
    hub = Hub("cam")
    output = PictureOutput(hub, max_fps=20)
    async with feeding(hub, packets, fps=50):
        viewer = Viewer(output)
        await wait_until(lambda: len(viewer.frames) >= 1)
        hub.close()
        await asyncio.wait_for(viewer.task, 2.0)
    assert not output.decoder_running and output.viewer_count == 0
    assert [jpeg async for jpeg in output.mjpeg()] == []


async def test_corrupt_packet_skips_to_the_next_keyframe(packets: list[MediaPacket]) -> None:
    hub = Hub("cam")
    output = PictureOutput(hub, max_fps=20)
    viewer = Viewer(output)
    await wait_until(lambda: hub.subscriber_count == 1)
    corrupt = MediaPacket(
        data=b"\x00\x00\x00\x01\x41" + bytes(range(200)),
        pts=0,
        keyframe=False,
        received=packets[4].received,  # arrives in stream order, like a real packet
    )
    for packet in [*packets[:5], corrupt, *packets[5:20]]:
        hub.publish(packet)
    # Frames 0-4 decode; the corrupt packet and the rest of its GOP (5-9) are skipped;
    # decoding resumes at keyframe 10.
    await wait_until(lambda: output.frames_decoded >= 15)
    assert output.frames_decoded == 15
    assert output.decode_errors == 1
    assert output.decoder_running
    await wait_until(lambda: len(viewer.frames) >= 1)
    assert closest_keyframe(viewer.frames[-1][1]) in (10, 20)
    await viewer.leave()


def test_mjpeg_part_format() -> None:
    jpeg = b"\xff\xd8 picture \xff\xd9"
    part = mjpeg_part(jpeg, MJPEG_BOUNDARY)
    assert part == (
        f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
        + jpeg
        + b"\r\n"
    )
