"""The ingest supervisor's state machine, watchdog and backoff, on in-process sources.

These sources are real ``Source`` implementations replaying real H.264; the
RTSP behaviour (kill, freeze, unreachable) is tested against a real server in
``test_ingest_rtsp.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator

import pytest

from streams.errors import SourceUnreachable
from streams.hub import Hub
from streams.ingest import Ingest, IngestPolicy, IngestState
from streams.packets import MediaPacket
from streams.sources.base import Source, SourceOptions
from tests.media import encode_h264

FAST = IngestPolicy(
    stall_timeout=0.3,
    first_packet_timeout=0.5,
    backoff_initial=0.05,
    backoff_max=0.2,
    backoff_reset_after=60,
)


class ReplaySource(Source):
    """Replays packets at ``fps``; ``script`` says what each session does after them."""

    def __init__(self, packets: list[MediaPacket], script: list[str], fps: float = 50) -> None:
        super().__init__(SourceOptions(url="demo://replay"))
        self._packets = packets
        self._script = script
        self._fps = fps
        self.sessions = 0
        self.open = 0

    async def packets(self) -> AsyncIterator[MediaPacket]:
        step = self._script[min(self.sessions, len(self._script) - 1)]
        self.sessions += 1
        if step == "refuse":
            raise SourceUnreachable("connection refused by demo://replay")
        self.open += 1
        try:
            for pkt in self._packets:
                await asyncio.sleep(1 / self._fps)
                yield MediaPacket(pkt.data, pkt.pts, pkt.keyframe, received=time.monotonic())
            if step == "hang":
                await asyncio.Event().wait()
            if step == "fail":
                raise SourceUnreachable("connection reset")
            if step == "forever":
                while True:
                    for pkt in self._packets:
                        await asyncio.sleep(1 / self._fps)
                        yield MediaPacket(pkt.data, pkt.pts, pkt.keyframe, received=time.monotonic())
        finally:
            self.open -= 1


@pytest.fixture(scope="module")
def packets() -> list[MediaPacket]:
    return encode_h264(10, width=160, height=120, gop=5)


async def wait_for_state(ingest: Ingest, state: IngestState, timeout: float) -> float:
    """Seconds until ``ingest`` reaches ``state``; fails after ``timeout``."""
    start = time.monotonic()
    while ingest.state is not state:
        if time.monotonic() - start > timeout:
            pytest.fail(f"{ingest.camera_id} is {ingest.state}, not {state}, after {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def test_online_then_stalled_by_watchdog_then_back(packets: list[MediaPacket]) -> None:
    source = ReplaySource(packets, ["hang", "forever"])
    states: list[IngestState] = []
    hub = Hub("cam")
    ingest = Ingest("cam", source, hub, FAST, listener=lambda _c, _o, new, _e: states.append(new))
    ingest.start()
    try:
        await wait_for_state(ingest, IngestState.ONLINE, 2)
        await wait_for_state(ingest, IngestState.STALLED, 2)
        assert ingest.last_error == "no packet for 0.3 s"
        await wait_for_state(ingest, IngestState.ONLINE, 2)
        assert states[:3] == [IngestState.ONLINE, IngestState.STALLED, IngestState.ONLINE]
        assert ingest.stalls == 1
        assert source.open == 1, "the stalled session was closed before reconnecting"
    finally:
        await ingest.stop()
    assert source.open == 0
    assert not ingest.running


async def test_refused_goes_offline_and_backs_off(packets: list[MediaPacket]) -> None:
    source = ReplaySource(packets, ["refuse", "refuse", "refuse", "forever"])
    ingest = Ingest("cam", source, Hub("cam"), FAST)
    ingest.start()
    try:
        await wait_for_state(ingest, IngestState.OFFLINE, 1)
        assert ingest.last_error == "connection refused by demo://replay"
        await wait_for_state(ingest, IngestState.ONLINE, 3)
        assert source.sessions == 4
        assert ingest.reconnects == 3
    finally:
        await ingest.stop()


async def test_stream_end_is_retried_at_once(packets: list[MediaPacket]) -> None:
    source = ReplaySource(packets, ["end", "forever"])
    hub = Hub("cam")
    sub = hub.subscribe()
    ingest = Ingest("cam", source, hub, FAST)
    ingest.start()
    try:
        await wait_for_state(ingest, IngestState.ONLINE, 2)
        while source.sessions < 2:
            await asyncio.sleep(0.01)
        await wait_for_state(ingest, IngestState.ONLINE, 2)
        seen = []
        while len(seen) < 15:
            seen.append((await asyncio.wait_for(sub.get(), 2)).pts)
        assert all(b > a for a, b in itertools.pairwise(seen)), "timestamps stay monotonic"
    finally:
        await ingest.stop()


def test_backoff_is_capped_exponential_with_jitter() -> None:
    policy = IngestPolicy(backoff_initial=1, backoff_max=30, backoff_jitter=0.2)
    rng = random.Random(7)
    delays = [policy.backoff(n, rng) for n in range(1, 10)]
    assert 0.8 <= delays[0] <= 1.2
    assert 1.6 <= delays[1] <= 2.4
    assert all(d <= 36 for d in delays)
    assert delays[-1] >= 24, "capped near the maximum"
    assert len({round(policy.backoff(3, rng), 6) for _ in range(5)}) > 1, "jittered"


async def test_stop_is_immediate_during_backoff(packets: list[MediaPacket]) -> None:
    slow = IngestPolicy(backoff_initial=30, backoff_max=30, first_packet_timeout=1)
    ingest = Ingest("cam", ReplaySource(packets, ["refuse"]), Hub("cam"), slow)
    ingest.start()
    await wait_for_state(ingest, IngestState.OFFLINE, 1)
    start = time.monotonic()
    await ingest.stop()
    assert time.monotonic() - start < 0.5
    await ingest.stop()  # idempotent


async def test_disabled_camera_never_runs(packets: list[MediaPacket]) -> None:
    source = ReplaySource(packets, ["forever"])
    ingest = Ingest("cam", source, Hub("cam"), FAST, enabled=False)
    ingest.start()
    assert ingest.state is IngestState.DISABLED
    assert not ingest.running
    await asyncio.sleep(0.05)
    assert source.sessions == 0
    await ingest.stop()


async def test_a_hanging_camera_does_not_delay_another(packets: list[MediaPacket]) -> None:
    stuck = Ingest("stuck", ReplaySource([], ["hang"]), Hub("stuck"), FAST)
    good = Ingest("good", ReplaySource(packets, ["forever"]), Hub("good"), FAST)
    stuck.start()
    good.start()
    try:
        took = await wait_for_state(good, IngestState.ONLINE, 1)
        assert took < 0.2
        assert stuck.state is IngestState.STARTING
    finally:
        await asyncio.gather(stuck.stop(), good.stop())


async def test_errors_are_redacted(packets: list[MediaPacket]) -> None:
    class LeakySource(ReplaySource):
        async def packets(self) -> AsyncIterator[MediaPacket]:
            raise SourceUnreachable("cannot reach rtsp://admin:hunter2@10.0.0.1/stream (hunter2)")
            yield  # pragma: no cover

    ingest = Ingest("cam", LeakySource(packets, []), Hub("cam"), FAST, secrets=["hunter2"])
    ingest.start()
    try:
        await wait_for_state(ingest, IngestState.OFFLINE, 1)
        assert ingest.last_error is not None
        assert "hunter2" not in ingest.last_error
        assert "rtsp://10.0.0.1/stream" in ingest.last_error
    finally:
        await ingest.stop()
