"""The relay against a real, independent RTSP server (GStreamer): one pull, many viewers,
and the camera failures an operator meets: killed, frozen, unreachable."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import psutil
import pytest

from streams import CameraSpec, IngestPolicy, IngestState, RelaySettings, SourceOptions, StreamManager
from tests.rtsp_fixtures import RtspServerFactory, RtspTestServer
from tests.whep_client import WhepClient

pytestmark = pytest.mark.rtsp

POLICY = IngestPolicy(
    stall_timeout=1.5,
    first_packet_timeout=3,
    backoff_initial=0.3,
    backoff_max=1.0,
    backoff_reset_after=30,
)
SETTINGS = RelaySettings(ice_host_addresses=("127.0.0.1",))


def rtsp_camera(camera_id: str, url: str) -> CameraSpec:
    return CameraSpec(
        id=camera_id,
        source=SourceOptions(url=url, connect_timeout=1.0, read_timeout=3.0),
        policy=POLICY,
    )


@pytest.fixture
async def relay_of(
    rtsp_server: RtspServerFactory,
) -> AsyncIterator[list[StreamManager]]:
    managers: list[StreamManager] = []
    yield managers
    for manager in managers:
        await manager.stop()


async def started(managers: list[StreamManager], *cameras: CameraSpec) -> StreamManager:
    manager = StreamManager(list(cameras), SETTINGS)
    managers.append(manager)
    await manager.start()
    return manager


async def until(manager: StreamManager, camera: str, state: IngestState, within: float) -> float:
    start = time.monotonic()
    while manager.stats(camera).state is not state:
        if time.monotonic() - start > within:
            stats = manager.stats(camera)
            pytest.fail(f"{camera}: {stats.state} ({stats.last_error}), not {state}, after {within} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def rtsp_connections(server: RtspTestServer) -> int:
    """Established TCP connections from this process to the server: counted by the kernel."""
    return sum(
        1
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == server.port and conn.status == psutil.CONN_ESTABLISHED
    )


async def test_eight_viewers_share_one_rtsp_session(
    rtsp_server: RtspServerFactory, relay_of: list[StreamManager]
) -> None:
    server = rtsp_server({"cam1": "640x360@25,800k,gop=25"})
    manager = await started(relay_of, rtsp_camera("cam1", server.url("cam1")))
    await until(manager, "cam1", IngestState.ONLINE, 10)
    viewers = [WhepClient(decode=False) for _ in range(8)]
    try:
        for viewer in viewers:
            await viewer.connect(lambda offer: _answer(manager, "cam1", offer))
        for viewer in viewers:
            assert await viewer.wait_until(lambda v=viewer: len(v.units) >= 25, within=15)
        stats = manager.stats("cam1")
        assert stats.webrtc_viewers == 8
        assert stats.sessions_opened == 1
        assert rtsp_connections(server) == 1
        assert (stats.width, stats.height) == (640, 360)
    finally:
        for viewer in viewers:
            await viewer.close()


async def _answer(manager: StreamManager, camera: str, offer: str) -> str:
    return (await manager.whep_offer(camera, offer)).answer_sdp


async def test_killed_server_goes_offline_and_comes_back_alone(
    rtsp_server: RtspServerFactory, relay_of: list[StreamManager]
) -> None:
    server = rtsp_server({"cam1": "320x240@25,300k,gop=25"})
    manager = await started(relay_of, rtsp_camera("cam1", server.url("cam1")))
    await until(manager, "cam1", IngestState.ONLINE, 10)
    server.kill()
    await until(manager, "cam1", IngestState.OFFLINE, POLICY.stall_timeout + 2)
    server.start()
    await until(manager, "cam1", IngestState.ONLINE, POLICY.backoff_max * 1.2 + 5)
    assert manager.stats("cam1").reconnects >= 1


async def test_frozen_server_is_stalled_then_recovers(
    rtsp_server: RtspServerFactory, relay_of: list[StreamManager]
) -> None:
    server = rtsp_server({"cam1": "320x240@25,300k,gop=25"})
    manager = await started(relay_of, rtsp_camera("cam1", server.url("cam1")))
    await until(manager, "cam1", IngestState.ONLINE, 10)
    server.freeze()
    took = await until(manager, "cam1", IngestState.STALLED, POLICY.stall_timeout + 1.0)
    assert took >= POLICY.stall_timeout * 0.8
    assert manager.stats("cam1").last_error == "no packet for 1.5 s"
    server.thaw()
    await until(manager, "cam1", IngestState.ONLINE, 10)
    assert manager.stats("cam1").stalls == 1


async def test_unreachable_camera_does_not_delay_another(
    rtsp_server: RtspServerFactory, relay_of: list[StreamManager]
) -> None:
    server = rtsp_server({"cam1": "320x240@25,300k,gop=25"})
    # A listener that never answers: connects succeed, the RTSP reply never comes.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        port = silent.getsockname()[1]
        manager = await started(
            relay_of,
            rtsp_camera("silent", f"rtsp://127.0.0.1:{port}/x"),
            rtsp_camera("refused", "rtsp://127.0.0.1:9/x"),
            rtsp_camera("good", server.url("cam1")),
        )
        took = await until(manager, "good", IngestState.ONLINE, 5)
        alone = await _time_to_online(rtsp_server)
        assert took < alone + 1.0, f"{took:.2f} s with dead cameras beside it, {alone:.2f} s alone"
        await until(manager, "silent", IngestState.OFFLINE, 5)
        assert manager.stats("refused").state is IngestState.OFFLINE
    finally:
        silent.close()


async def _time_to_online(rtsp_server: RtspServerFactory) -> float:
    server = rtsp_server({"cam1": "320x240@25,300k,gop=25"})
    manager = StreamManager([rtsp_camera("alone", server.url("cam1"))], SETTINGS)
    await manager.start()
    try:
        return await until(manager, "alone", IngestState.ONLINE, 5)
    finally:
        await manager.stop()
