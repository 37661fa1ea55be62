"""The ingest supervisor's state machine, watchdog and backoff, on in-process sources.

These sources are real ``Source`` implementations replaying real H.264; the
RTSP behaviour (kill, freeze, unreachable) is tested against a real server in
``test_ingest_rtsp.py``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from streams.errors import SourceProtocolError, SourceUnreachable
from streams.hub import Hub
from streams.ingest import Ingest, IngestPolicy, IngestState
from streams.packets import MediaPacket
from streams.sources.base import Source, SourceOptions
from streams.sources.demo import DemoSource
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
        assert ingest.last_error == "the camera cannot be reached", "our words, not the source's"
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


async def test_users_get_fixed_words_and_the_debug_log_the_redacted_detail(
    packets: list[MediaPacket], caplog: pytest.LogCaptureFixture
) -> None:
    token = base64.b64encode(b"admin:hunter2").decode()

    class LeakySource(ReplaySource):
        async def packets(self) -> AsyncIterator[MediaPacket]:
            raise SourceProtocolError(
                f"cannot reach rtsp://admin:hunter2@10.0.0.1/stream: 500 Basic {token} password=hunter2",
                public="the camera failed with a server error (500) to DESCRIBE",
            )
            yield  # pragma: no cover

    source = LeakySource(packets, [])
    source.options = SourceOptions(url="rtsp://10.0.0.1/stream", username="admin", password="hunter2")
    caplog.set_level(logging.DEBUG, logger="streams")
    ingest = Ingest("cam", source, Hub("cam"), FAST)
    ingest.start()
    try:
        await wait_for_state(ingest, IngestState.OFFLINE, 1)
        assert ingest.last_error == "the camera failed with a server error (500) to DESCRIBE"
    finally:
        await ingest.stop()
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("rtsp://10.0.0.1/stream: 500 Basic ***" in line for line in debug), debug
    assert "hunter2" not in caplog.text and token not in caplog.text


# -- start-up: late is "starting", not "offline" -----------------------------------------------------


class LateSource(Source):
    """Takes ``delay`` seconds to open (like a demo card waiting for its encode), then
    says so (``announce``) or not, then sends packets; ``delay=None`` never opens."""

    def __init__(self, packets: list[MediaPacket], delay: float | None, *, announce: bool = False) -> None:
        super().__init__(SourceOptions(url="demo://late"))
        self._packets, self._delay, self._announce = packets, delay, announce
        self.hang_after_open = False

    async def packets(self) -> AsyncIterator[MediaPacket]:
        if self._delay is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self._delay or 0)
        if self._announce:
            self.opened()
        if self.hang_after_open:
            await asyncio.Event().wait()
        while True:
            for pkt in self._packets:
                await asyncio.sleep(0.02)
                yield MediaPacket(pkt.data, pkt.pts, pkt.keyframe, received=time.monotonic())


def recording(states: list[IngestState]) -> Callable[[str, IngestState, IngestState, str | None], None]:
    return lambda _c, _o, new, _e: states.append(new)


async def test_a_source_slow_to_open_is_starting_not_offline(packets: list[MediaPacket]) -> None:
    # Its first packet comes after first_packet_timeout (0.5 s): that clock starts when the source is open.
    states: list[IngestState] = []
    ingest = Ingest("cam", LateSource(packets, 1.0), Hub("cam"), FAST, listener=recording(states))
    ingest.start()
    try:
        await wait_for_state(ingest, IngestState.ONLINE, 5)
        assert states == [IngestState.ONLINE], "never offline while opening"
        assert ingest.last_error is None
    finally:
        await ingest.stop()


async def test_demo_cameras_queued_behind_each_others_encodes_raise_no_false_offline() -> None:
    # The reported start-up: demo cards are encoded in a pool of two threads, so the last cameras
    # wait for the others' encodes; the old rule called them offline after first_packet_timeout.
    policy = dataclasses.replace(FAST, first_packet_timeout=0.05)
    run = uuid.uuid4().hex[:8]
    states: dict[str, list[IngestState]] = {}
    ingests = []
    for n in range(8):
        name = f"late-{run}-{n}"
        states[name] = []
        source = DemoSource(SourceOptions(url=f"demo://{name}?size=160x96&loop_seconds=2"))
        ingests.append(Ingest(name, source, Hub(name), policy, listener=recording(states[name])))
    for ingest in ingests:
        ingest.start()
    try:
        for ingest in ingests:
            await wait_for_state(ingest, IngestState.ONLINE, 60)
        assert all(seen == [IngestState.ONLINE] for seen in states.values()), states
    finally:
        await asyncio.gather(*(ingest.stop() for ingest in ingests))


async def test_an_open_source_without_a_packet_is_offline_after_first_packet_timeout(
    packets: list[MediaPacket],
) -> None:
    source = LateSource(packets, 0.0, announce=True)
    source.hang_after_open = True
    ingest = Ingest("cam", source, Hub("cam"), FAST)  # open_timeout stays 20 s
    ingest.start()
    try:
        took = await wait_for_state(ingest, IngestState.OFFLINE, 5)
        assert ingest.last_error == "no packet within 0.5 s"
        assert took < 3
    finally:
        await ingest.stop()


async def test_a_source_that_never_opens_is_offline_after_open_timeout(packets: list[MediaPacket]) -> None:
    policy = dataclasses.replace(FAST, open_timeout=1.0)
    states: list[IngestState] = []
    ingest = Ingest("cam", LateSource(packets, None), Hub("cam"), policy, listener=recording(states))
    ingest.start()
    try:
        took = await wait_for_state(ingest, IngestState.OFFLINE, 5)
        assert 0.9 <= took < 4
        assert ingest.last_error == "not connected within 1 s"
        assert states == [IngestState.OFFLINE]
    finally:
        await ingest.stop()
