"""Stream outputs: every camera stream feeds the registered outputs, and a new kind of
output is added by registering it, without touching the manager."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from streams import IngestState, StreamManager
from streams.hub import HubClosed
from streams.outputs.base import OUTPUTS, OutputRegistry, Statistic, StreamContext
from tests.rtsp_fixtures import RtspServerFactory
from tests.streams.test_relay_rtsp import SETTINGS, rtsp_camera, until

pytestmark = pytest.mark.rtsp


class PacketCounter:
    """A stand-in for an output that works without viewers (as a recorder does)."""

    def __init__(self, context: StreamContext) -> None:
        self.context = context
        self.packets = 0
        self.keyframes = 0
        self.started = self.stopped = False
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"{self.context.name}/counter"

    async def start(self) -> None:
        self.started = True
        self._task = asyncio.create_task(self._count())

    async def _count(self) -> None:
        try:
            async with self.context.hub.subscribe() as packets:
                async for packet in packets:
                    self.packets += 1
                    self.keyframes += packet.keyframe
        except HubClosed:
            pass

    async def stop(self) -> None:
        self.stopped = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self.context.emit(("counted", self.packets))

    def statistics(self) -> dict[str, Statistic]:
        return {"packets": self.packets, "keyframes": self.keyframes}


@pytest.fixture
async def counters() -> AsyncIterator[tuple[OutputRegistry, list[PacketCounter]]]:
    built: list[PacketCounter] = []
    registry = OUTPUTS.copy()

    @registry.register("counter")
    def _counter(context: StreamContext) -> PacketCounter | None:
        if context.spec.id == "not-counted":
            return None
        built.append(PacketCounter(context))
        return built[-1]

    yield registry, built


async def test_a_registered_output_is_fed_by_the_one_upstream_session_and_stopped_with_it(
    rtsp_server: RtspServerFactory, counters: tuple[OutputRegistry, list[PacketCounter]]
) -> None:
    registry, built = counters
    server = rtsp_server({"cam1": "320x240@25,300k,gop=25", "cam2": "320x240@25,300k,gop=25"})
    cameras = [rtsp_camera("counted", server.url("cam1")), rtsp_camera("not-counted", server.url("cam2"))]
    manager = StreamManager(cameras, SETTINGS, outputs=registry)
    events: list[tuple[str, object]] = []
    manager.add_output_listener(lambda camera_id, event: events.append((camera_id, event)))
    await manager.start()
    try:
        [counter] = built  # the factory declined the second camera
        assert counter.started and counter.context.stream == "main"
        await until(manager, "counted", IngestState.ONLINE, within=15)
        for _ in range(200):
            if counter.keyframes and counter.packets > 10:
                break
            await asyncio.sleep(0.05)
        stats = manager.output_statistics("counted")
        assert sorted(stats["main"]) == ["counter", "frames", "h264", "pictures"]  # no sound: no Opus
        assert stats["main"]["counter"]["packets"] == counter.packets > 10
        assert stats["main"]["h264"]["running"] is False  # nobody watches: no transcode
        assert "counter" not in manager.output_statistics("not-counted")["main"]
        assert list(manager.statistics_of("counter")) == ["counted"]  # by camera, those that have one
        assert manager.stats("counted").sessions_opened == 1
    finally:
        await manager.stop()
    assert counter.stopped
    assert events == [("counted", ("counted", counter.packets))]


def test_the_default_outputs_are_the_frame_source_pictures_the_transcoders_the_recorder_and_analysis() -> (
    None
):
    assert sorted(OUTPUTS) == ["analysis", "frames", "h264", "opus", "pictures", "recorder"]


def test_a_kind_is_registered_once() -> None:
    registry = OUTPUTS.copy()
    with pytest.raises(ValueError, match="registered already"):
        registry.register("pictures")(lambda context: None)
