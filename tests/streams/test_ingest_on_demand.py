"""On-demand cameras: pulled only while their hub has subscribers, closed ``idle_timeout``
after the last leaves. Against a real RTSP server asking for Digest credentials (as another
Hallwatch's RTSP re-serve does), with the upstream sessions counted by the kernel, and on an
in-process source for the failure rules."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest

from streams import CameraSpec, IngestPolicy, IngestState, MseSession, SourceOptions, StreamManager
from streams.hub import Hub
from streams.ingest import Ingest
from streams.packets import MediaPacket
from tests.media import encode_h264
from tests.rtsp_fixtures import RtspServerFactory, RtspTestServer
from tests.streams.test_ingest import FAST, ReplaySource, wait_for_state
from tests.streams.test_relay_rtsp import SETTINGS, rtsp_connections, until

IDLE_TIMEOUT = 0.8
ON_DEMAND = IngestPolicy(
    stall_timeout=1.5,
    first_packet_timeout=3,
    backoff_initial=0.3,
    backoff_max=1.0,
    on_demand=True,
    idle_timeout=IDLE_TIMEOUT,
)


@pytest.fixture
async def upstream(rtsp_server: RtspServerFactory) -> AsyncIterator[tuple[RtspTestServer, StreamManager]]:
    server = rtsp_server({"hall": "320x180@25,400k,gop=10"}, user="meizhou", password="hw_token-of-a-user")
    spec = CameraSpec(
        id="county-1",
        source=SourceOptions(
            url=server.url("hall"),
            username="meizhou",
            password="hw_token-of-a-user",
            connect_timeout=1.0,
            read_timeout=3.0,
        ),
        policy=ON_DEMAND,
    )
    manager = StreamManager([spec], SETTINGS)
    await manager.start()
    try:
        yield server, manager
    finally:
        await manager.stop()


async def first_fragment(session: MseSession) -> None:
    """The init segment and a first fragment: the viewer got a picture."""
    async with asyncio.timeout(5):
        for _ in range(2):
            await anext(session)


async def connections(server: RtspTestServer, expected: int, within: float) -> None:
    deadline = time.monotonic() + within
    while (count := rtsp_connections(server)) != expected:
        assert time.monotonic() < deadline, f"{count} upstream sessions, not {expected}, after {within} s"
        await asyncio.sleep(0.05)


@pytest.mark.rtsp
async def test_pulled_for_its_viewers_only_once_for_all_and_closed_after_the_idle_timeout(
    upstream: tuple[RtspTestServer, StreamManager],
) -> None:
    server, manager = upstream
    states: list[IngestState] = []
    manager.add_listener(lambda _camera, _old, new, _error: states.append(new))
    await asyncio.sleep(0.5)  # time enough for a pulled camera to connect: this one must not
    stats = manager.stats("county-1")
    assert (stats.state, stats.sessions_opened, rtsp_connections(server)) == (IngestState.IDLE, 0, 0)

    opened = time.monotonic()
    first = await manager.mse_session("county-1")
    await first_fragment(first)
    connect_to_picture = time.monotonic() - opened
    second = await manager.mse_session("county-1")
    await first_fragment(second)
    probe = manager.hub("county-1").subscribe()
    assert manager.stats("county-1").state is IngestState.ONLINE
    assert manager.stats("county-1").sessions_opened == 1 and rtsp_connections(server) == 1
    assert connect_to_picture < SETTINGS.info_timeout, "a waiting viewer gets the first keyframe in time"

    first.close()
    probe.close()
    await asyncio.sleep(IDLE_TIMEOUT + 0.3)
    assert manager.stats("county-1").state is IngestState.ONLINE, "one viewer is left"
    second.close()
    left = time.monotonic()
    await until(manager, "county-1", IngestState.IDLE, IDLE_TIMEOUT + 2)
    assert time.monotonic() - left >= IDLE_TIMEOUT
    await connections(server, 0, within=2)
    assert manager.hub("county-1").last_keyframe is None, "no stale picture for the next viewer"

    again = await manager.mse_session("county-1")
    await first_fragment(again)
    assert manager.stats("county-1").sessions_opened == 2 and rtsp_connections(server) == 1
    again.close()
    await until(manager, "county-1", IngestState.IDLE, IDLE_TIMEOUT + 2)
    assert states == [IngestState.ONLINE, IngestState.IDLE, IngestState.ONLINE, IngestState.IDLE]
    assert manager.stats("county-1").reconnects == 0 and manager.stats("county-1").last_error is None
    assert manager.running, "an idle camera's supervisor runs"


@pytest.mark.rtsp
async def test_a_snapshot_of_an_idle_camera_connects_it(
    upstream: tuple[RtspTestServer, StreamManager],
) -> None:
    server, manager = upstream
    jpeg = await manager.snapshot("county-1")
    assert jpeg[:2] == b"\xff\xd8"
    await until(manager, "county-1", IngestState.IDLE, IDLE_TIMEOUT + 2)
    await connections(server, 0, within=2)


@pytest.fixture(scope="module")
def packets() -> list[MediaPacket]:
    return encode_h264(10, width=160, height=120, gop=5)


async def test_nothing_is_pulled_without_a_subscriber(packets: list[MediaPacket]) -> None:
    source = ReplaySource(packets, ["forever"])
    hub = Hub("cam")
    ingest = Ingest("cam", source, hub, dataclasses.replace(FAST, on_demand=True, idle_timeout=0.2))
    ingest.start()
    try:
        await asyncio.sleep(0.3)
        assert (ingest.state, source.sessions) == (IngestState.IDLE, 0)
        sub = hub.subscribe()
        await wait_for_state(ingest, IngestState.ONLINE, 2)
        assert (await asyncio.wait_for(sub.get(), 2)).keyframe
        sub.close()
        await wait_for_state(ingest, IngestState.IDLE, 1)
        assert source.open == 0 and ingest.running
    finally:
        await ingest.stop()


async def test_a_failure_of_a_wanted_camera_is_retried_until_it_works_then_it_goes_idle(
    packets: list[MediaPacket],
) -> None:
    source = ReplaySource(packets, ["refuse", "refuse", "forever"])
    hub = Hub("cam")
    states: list[IngestState] = []
    policy = dataclasses.replace(FAST, on_demand=True, idle_timeout=0.2)
    ingest = Ingest("cam", source, hub, policy, listener=lambda _c, _o, new, _e: states.append(new))
    ingest.start()
    try:
        viewer = hub.subscribe()
        await wait_for_state(ingest, IngestState.OFFLINE, 1)
        viewer.close()  # gave up on the failing camera
        await wait_for_state(ingest, IngestState.IDLE, 3)
        assert source.sessions == 3 and source.open == 0
        assert states[0] is IngestState.OFFLINE and states[-2:] == [IngestState.ONLINE, IngestState.IDLE]
    finally:
        await ingest.stop()
