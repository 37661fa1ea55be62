"""Snapshots and MJPEG of an H.265 camera: real libx265 access units published into a real hub."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import cv2
import numpy as np
import pytest

from streams.hub import Hub
from streams.outputs.pictures import PictureOutput
from streams.packets import CLOCK_RATE, MediaPacket
from tests.media import encode_h265

WIDTH, HEIGHT, GOP = 320, 240, 10


@pytest.fixture(scope="module")
def packets() -> list[MediaPacket]:
    return encode_h265(25, width=WIDTH, height=HEIGHT, gop=GOP)


def picture_error(jpeg: bytes, index: int) -> float:
    """Mean absolute difference between a JPEG and frame ``index`` as ``encode_h265`` drew it."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (HEIGHT, WIDTH, 3)
    ramp = (np.arange(WIDTH) % 256)[None, :].repeat(HEIGHT, axis=0)
    source = np.dstack([255 - ramp, ramp, (ramp + index * 4) % 256]).astype(np.int16)
    return float(np.abs(image.astype(np.int16) - source).mean())


async def test_snapshot_of_an_h265_keyframe(packets: list[MediaPacket]) -> None:
    hub = Hub("hevc")
    output = PictureOutput(hub)
    for packet in packets[:15]:  # the latest keyframe is frame 10
        hub.publish(packet)
    jpeg = await output.snapshot()
    errors = {i: picture_error(jpeg, i) for i in (0, 10, 20)}
    assert min(errors, key=errors.__getitem__) == 10
    assert errors[10] < 12
    await output.stop()


async def test_mjpeg_decodes_an_h265_stream(packets: list[MediaPacket]) -> None:
    hub = Hub("hevc")
    output = PictureOutput(hub, max_fps=50)
    stream = output.mjpeg()
    async with contextlib.aclosing(stream):
        first = asyncio.ensure_future(anext(stream))
        for i, packet in enumerate(packets):
            hub.publish(dataclasses.replace(packet, pts=i * CLOCK_RATE // 25))
            await asyncio.sleep(0.01)
            if first.done():
                break
        jpeg = await asyncio.wait_for(first, 5.0)
    assert min(picture_error(jpeg, i) for i in range(len(packets))) < 12
    assert output.frames_decoded >= 1 and output.decode_errors == 0
    await output.stop()
