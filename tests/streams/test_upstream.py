"""Repointing a camera between its own source, the instance that owns it and nowhere.

Two relays in this process stand for two instances: ``here`` (under test) and the
``owner`` it pulls from through the owner's real RTSP re-serve, both in front of one
real RTSP server (GStreamer) that stands for the camera. The camera's sessions are
counted by the kernel, at the camera and at the owner's re-serve. The owner pulls
the camera on demand and runs no analysis, so that what reaches the camera is
``here``'s demand alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from streams import (
    NOWHERE,
    OWN,
    AnalysisOutput,
    AnalysisSpec,
    CameraSpec,
    CameraUnowned,
    IngestPolicy,
    IngestState,
    MseFragment,
    MseSession,
    Peer,
    RecordingSpec,
    RelaySettings,
    SourceOptions,
    StreamManager,
    Upstream,
)
from streams.hub import Hub, Subscription
from streams.rtsp_server import AccessRequest, RtspServer, RtspSettings, Verdict, ha1
from tests.rtsp_fixtures import RtspServerFactory, RtspTestServer

pytestmark = pytest.mark.rtsp

CAMERA = "county-1"
PEER_USER, PEER_PASSWORD = "instance-b", "a token shared by the instances"
IDLE_TIMEOUT = 0.8
POLICY = IngestPolicy(
    stall_timeout=1.5, first_packet_timeout=3, backoff_initial=0.3, backoff_max=1.0, idle_timeout=IDLE_TIMEOUT
)
SETTINGS = RelaySettings(ice_host_addresses=("127.0.0.1",), info_timeout=1.5)
MAX_GAP = 3.0
"""Seconds a viewer may go without a packet across a switch: close one session, open the next."""


async def admit_peer(request: AccessRequest) -> Verdict:
    if request.credentials.username == PEER_USER and request.credentials.matches(
        ha1(PEER_USER, PEER_PASSWORD)
    ):
        return Verdict(200, user=PEER_USER)
    return Verdict(401)


@dataclass
class Pair:
    camera: RtspTestServer
    here: StreamManager
    owner: StreamManager
    owner_rtsp: RtspServer
    states: list[IngestState] = field(default_factory=list)

    @property
    def peer(self) -> Upstream:
        return Upstream.of(Peer("b", f"rtsp://127.0.0.1:{self.owner_rtsp.port}", PEER_USER, PEER_PASSWORD))

    async def to_owner(self) -> None:
        """The owner takes the camera over, then this instance hands it to it."""
        await self.owner.repoint(CAMERA, OWN)
        await self.here.repoint(CAMERA, self.peer)

    async def take_back(self) -> None:
        await self.here.repoint(CAMERA, OWN)
        await self.owner.repoint(CAMERA, NOWHERE)

    def analysed(self) -> int:
        analysis = self.here.output(CAMERA, "analysis", AnalysisOutput)
        assert analysis is not None
        return analysis.analysed

    def recording(self) -> bool:
        return self.here.statistics_of("recorder")[CAMERA]["recording"] is True


@pytest.fixture
async def pair(rtsp_server: RtspServerFactory, tmp_path: Path) -> AsyncIterator[Pair]:
    camera = rtsp_server({"hall": "320x180@25,400k,gop=10"})
    spec = CameraSpec(
        id=CAMERA,
        source=SourceOptions(url=camera.url("hall"), connect_timeout=1.0, read_timeout=3.0),
        policy=POLICY,
        analysis=AnalysisSpec(interval=0.4),
        recording=RecordingSpec(directory=tmp_path / CAMERA, segment_seconds=60),
    )
    here = StreamManager([spec], SETTINGS)
    owner_spec = dataclasses.replace(
        spec, policy=dataclasses.replace(POLICY, on_demand=True), analysis=None, recording=None
    )
    owner = StreamManager([owner_spec], SETTINGS)
    await owner.repoint(CAMERA, NOWHERE)  # before its start: it never pulls on its own
    owner_rtsp = RtspServer(owner, admit_peer, RtspSettings(port=0, session_timeout=5, udp=False))
    pair = Pair(camera, here, owner, owner_rtsp)
    here.add_listener(lambda _camera, _old, new, _error: pair.states.append(new))
    await owner.start()
    await owner_rtsp.start()
    await here.start()
    try:
        yield pair
    finally:
        await here.stop()
        await owner_rtsp.stop()
        await owner.stop()


def sessions_at(port: int) -> int:
    """Established TCP connections from this process to ``port``: counted by the kernel."""
    return sum(
        1
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    )


async def until(check: Callable[[], bool], what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not {what} after {within} s"
        await asyncio.sleep(0.02)


async def sessions(port: int, expected: int, within: float) -> None:
    await until(lambda: sessions_at(port) == expected, f"{expected} sessions at :{port}", within)


async def state(manager: StreamManager, expected: IngestState, within: float) -> None:
    await until(lambda: manager.stats(CAMERA).state is expected, expected.value, within)


async def grows(count: Callable[[], int], within: float) -> None:
    """Wait until ``count()`` exceeds its present value."""
    before = count()
    await until(lambda: count() > before, f"more than {before}", within)


@dataclass
class Watcher:
    """A viewer that keeps what it received, with the time it received it (and the time the
    source received it), and the moments its hub's source restarted."""

    packets: list[tuple[float, int, bool, float]] = field(default_factory=list)
    restarts: list[float] = field(default_factory=list)
    fragments: list[tuple[float, int]] = field(default_factory=list)

    async def read_packets(self, sub: Subscription) -> None:
        async for packet in sub:
            self.packets.append((time.monotonic(), packet.pts, packet.keyframe, packet.received))

    async def read_fragments(self, session: MseSession) -> None:
        async for message in session:
            if isinstance(message, MseFragment) and not message.audio:
                self.fragments.append((time.monotonic(), message.pts))

    def watch_restarts(self, hub: Hub) -> None:
        """Note when ``hub``'s source restarts (a spy on :meth:`Hub.discontinuity`)."""
        restart = hub.discontinuity

        def noted() -> None:
            self.restarts.append(time.monotonic())
            restart()

        hub.discontinuity = noted  # type: ignore[method-assign]

    def first_of_session_after(self, moment: float) -> tuple[float, int, bool, float]:
        """The first packet the source received after its first restart after ``moment``:
        packets of the old session still queued then may come later, but are not of it."""
        restart = next(t for t in self.restarts if t > moment)
        return next(p for p in self.packets if p[3] > restart)


async def test_viewers_keep_watching_across_own_peer_own_and_only_the_owner_analyses_and_records(
    pair: Pair,
) -> None:
    await state(pair.here, IngestState.ONLINE, 5)
    await grows(pair.analysed, 5)
    await until(pair.recording, "recording", 3)
    assert (sessions_at(pair.camera.port), sessions_at(pair.owner_rtsp.port)) == (1, 0)

    watcher = Watcher()
    watcher.watch_restarts(pair.here.hub(CAMERA))
    sub = pair.here.hub(CAMERA).subscribe()
    mse = await pair.here.mse_session(CAMERA)
    readers = [
        asyncio.create_task(watcher.read_packets(sub)),
        asyncio.create_task(watcher.read_fragments(mse)),
    ]
    try:
        await asyncio.sleep(1.0)
        handed = time.monotonic()
        await pair.to_owner()
        await grows(lambda: len([p for p in watcher.packets if p[0] > handed]), MAX_GAP)
        stats = pair.here.stats(CAMERA)
        assert (stats.upstream, stats.peer) == ("peer", "b")
        assert not pair.recording()
        analysed = pair.analysed()
        await asyncio.sleep(1.5)
        assert pair.analysed() == analysed, "no analysis here while the owner does it"
        assert (sessions_at(pair.camera.port), sessions_at(pair.owner_rtsp.port)) == (1, 1), (
            "one pull, by the owner, for this instance's viewers"
        )

        back = time.monotonic()
        await pair.take_back()
        await grows(lambda: len([p for p in watcher.packets if p[0] > back]), MAX_GAP)
        await grows(pair.analysed, 5)
        await until(pair.recording, "recording", 3)
        assert pair.here.stats(CAMERA).upstream == "own"
    finally:
        sub.close()
        mse.close()
        await asyncio.gather(*readers)

    for moment in (handed, back):
        assert watcher.first_of_session_after(moment)[2], "each new upstream starts with a keyframe"
    for received in (watcher.packets, watcher.fragments):
        times = [t for t, _pts, *_ in received]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps) < MAX_GAP, f"a viewer waited {max(gaps):.2f} s"
        pts = [p for _t, p, *_ in received]
        assert all(a < b for a, b in itertools.pairwise(pts)), "the viewer's timeline goes on"
    assert len(watcher.fragments) > 50, "the MSE viewer got pictures all along"
    await sessions(pair.camera.port, 1, within=IDLE_TIMEOUT + 3)
    await sessions(pair.owner_rtsp.port, 0, within=1)


async def test_pulled_from_the_owner_only_while_watched_here(pair: Pair) -> None:
    await state(pair.here, IngestState.ONLINE, 5)
    await pair.to_owner()
    await state(pair.here, IngestState.IDLE, 2)
    await sessions(pair.camera.port, 0, within=2)
    assert sessions_at(pair.owner_rtsp.port) == 0
    analysed = pair.analysed()

    viewers = [await pair.here.mse_session(CAMERA) for _ in range(3)]
    for viewer in viewers:
        async with asyncio.timeout(5):
            while not isinstance(await anext(viewer), MseFragment):
                pass
    assert (sessions_at(pair.camera.port), sessions_at(pair.owner_rtsp.port)) == (1, 1)
    assert pair.here.stats(CAMERA).state is IngestState.ONLINE
    for viewer in viewers:
        viewer.close()
    left = time.monotonic()
    await state(pair.here, IngestState.IDLE, IDLE_TIMEOUT + 2)
    assert time.monotonic() - left >= IDLE_TIMEOUT
    await sessions(pair.owner_rtsp.port, 0, within=1)
    await sessions(pair.camera.port, 0, within=IDLE_TIMEOUT + 2)
    assert pair.analysed() == analysed

    await pair.take_back()
    await state(pair.here, IngestState.ONLINE, 5)
    assert sessions_at(pair.camera.port) == 1
    await grows(pair.analysed, 5)
    assert pair.states[-3:] == [IngestState.IDLE, IngestState.STARTING, IngestState.ONLINE]


async def test_pulled_from_nowhere_viewers_wait_for_an_owner_then_are_refused(pair: Pair) -> None:
    await state(pair.here, IngestState.ONLINE, 5)
    await pair.here.repoint(CAMERA, NOWHERE)
    stats = pair.here.stats(CAMERA)
    assert (stats.state, stats.upstream, stats.peer) == (IngestState.UNOWNED, "none", None)
    await sessions(pair.camera.port, 0, within=2)
    assert pair.here.running, "an unowned camera's supervisor waits, it has not died"
    assert not pair.recording()

    asked = time.monotonic()
    with pytest.raises(CameraUnowned):
        await pair.here.mse_session(CAMERA)
    assert time.monotonic() - asked >= SETTINGS.info_timeout
    with pytest.raises(CameraUnowned):
        pair.here.rtsp_media(CAMERA)

    waiting = asyncio.create_task(pair.here.mse_session(CAMERA))
    await asyncio.sleep(0.3)
    await pair.here.repoint(CAMERA, OWN)
    viewer = await waiting
    async with asyncio.timeout(5):
        while not isinstance(await anext(viewer), MseFragment):
            pass
    viewer.close()
    assert IngestState.UNOWNED in pair.states and pair.here.stats(CAMERA).state is IngestState.ONLINE
