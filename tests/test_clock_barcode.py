"""The burnt-in clock barcode: drawn and read back in bytes, through a real RTSP ``clock`` camera
(encoded, sent, depacketized and decoded), and by the browser reader in headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import statistics
import time
from pathlib import Path

import av
import numpy as np
import pytest
from playwright.async_api import async_playwright

from streams.sources.base import SourceOptions
from streams.sources.rtsp.source import RtspSource
from tests.clock_barcode import HEIGHT, READ_CLOCK_JS, WIDTH, barcode_rows, read_clock
from tests.rtsp_fixtures import RtspServerFactory

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"]
NOW_MS = 1_795_000_000_123


def plane(width: int, height: int, ms: int | None, grey: int = 96) -> bytearray:
    data = bytearray([grey]) * (width * height)
    if ms is not None:
        for y, row in enumerate(barcode_rows(ms)):
            data[y * width : y * width + WIDTH] = row
    return data


def test_round_trip_in_bytes_and_arrays() -> None:
    assert (WIDTH, HEIGHT) == (384, 32)
    rows = barcode_rows(NOW_MS)
    assert len(rows) == HEIGHT and {len(r) for r in rows} == {WIDTH} and set(b"".join(rows)) == {16, 235}
    data = plane(640, 48, NOW_MS)
    assert read_clock(bytes(data), 640) == NOW_MS
    assert read_clock(np.frombuffer(data, np.uint8).reshape(48, 640), 640) == NOW_MS
    # Compression noise within a block does not change a bit.
    rng = random.Random(1)
    noisy = bytearray(min(255, max(0, b + rng.randint(-40, 40))) for b in data)
    assert read_clock(noisy, 640) == NOW_MS


def test_implausible_pictures_read_as_none() -> None:
    assert read_clock(plane(640, 48, None), 640) is None  # grey: no barcode
    assert read_clock(plane(640, 48, 12345), 640) is None  # a 1970 clock is not a clock
    assert read_clock(plane(640, 48, NOW_MS)[: 640 * 20], 640) is None  # cut short
    assert read_clock(bytes(320 * 48), 320) is None  # narrower than the barcode
    with pytest.raises(ValueError, match="48 bits"):
        barcode_rows(1 << 48)


@pytest.mark.rtsp
@pytest.mark.parametrize("codec", ["h264", "h265"])
async def test_clock_camera_through_rtsp_reads_within_a_frame_or_two(
    rtsp_server: RtspServerFactory, codec: str
) -> None:
    server = rtsp_server(streams={"clock": f"640x360@25,1500k,gop=25,clock,codec={codec}"})
    source = RtspSource(SourceOptions(url=server.url("clock"), connect_timeout=3.0, read_timeout=3.0))
    decoder = av.CodecContext.create("hevc" if codec == "h265" else "h264", "r")
    clocks: list[int] = []
    delays: list[float] = []
    async with contextlib.aclosing(source.packets()) as packets, asyncio.timeout(10):
        async for packet in packets:
            for frame in decoder.decode(av.Packet(packet.data)):
                ms = read_clock(frame.to_ndarray(), frame.width)
                assert ms is not None
                clocks.append(ms)
                delays.append(time.time() * 1000 - ms)
            if len(clocks) >= 30:
                break
    assert source.info is not None and source.info.codec == codec
    steps = [b - a for a, b in itertools.pairwise(clocks)]
    assert 30 < statistics.median(steps) < 50  # one frame apart at 25 fps
    # Made, encoded, sent and decoded within a frame period or two (on a busy machine some take longer).
    assert 0 < min(delays) < 80, delays


# A canvas drawing the barcode (RGB 255 for ones, 0 for zeros: video range as a browser shows it),
# streamed into a <video> element by captureStream().
_PAGE_JS = """(bits) => {
  const canvas = document.createElement("canvas");
  canvas.width = 640; canvas.height = 360;
  const g = canvas.getContext("2d");
  g.fillStyle = "rgb(110,110,110)"; g.fillRect(0, 0, 640, 360);
  for (let i = 0; i < 48; i++) {
    g.fillStyle = bits[i] === "1" ? "rgb(255,255,255)" : "rgb(0,0,0)";
    g.fillRect((i % 24) * 16, Math.floor(i / 24) * 16, 16, 16);
  }
  const video = document.createElement("video");
  video.id = "v"; video.muted = true;
  video.srcObject = canvas.captureStream(25);
  document.body.appendChild(video);
  setInterval(() => g.fillRect(600, 300, 1, 1), 40);  // keep frames coming
  return video.play().then(() => true);
}"""


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing; run scripts/install-test-deps.sh (as root)", pytrace=False)
    return CHROMIUM


async def test_browser_reader_in_chromium(chromium: Path) -> None:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(chromium),
            args=CHROMIUM_FLAGS,
            timeout=20_000,
        )
        try:
            page = await browser.new_page()
            await page.set_content("<html><body></body></html>")
            assert await page.evaluate(_PAGE_JS, f"{NOW_MS:048b}")
            video = page.locator("#v")
            deadline = time.monotonic() + 10
            value = None
            while value is None and time.monotonic() < deadline:
                value = await video.evaluate(READ_CLOCK_JS)
                await asyncio.sleep(0.05)
            assert value == NOW_MS
            assert await page.evaluate(f"({READ_CLOCK_JS})(null)") is None
        finally:
            await browser.close()
