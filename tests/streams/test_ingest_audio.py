"""Ingest with audio: audio frames go to the camera's audio hub, video to its hub, and the
watchdog follows the video only. A real RTSP camera with Opus sound, and an in-process
source that keeps sending sound after its picture died."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

import pytest

from streams.hub import Hub, Subscription
from streams.ingest import Ingest, IngestPolicy, IngestState
from streams.packets import AudioInfo, MediaPacket
from streams.sources import open_source
from streams.sources.base import Source, SourceOptions
from tests.audio_media import encode_audio
from tests.media import encode_h264
from tests.rtsp_fixtures import RtspServerFactory

POLICY = IngestPolicy(
    stall_timeout=0.5, first_packet_timeout=5, backoff_initial=0.1, backoff_max=0.3, backoff_reset_after=60
)


async def take(sub: Subscription, count: int, within: float = 5.0) -> list[MediaPacket]:
    out: list[MediaPacket] = []
    async with asyncio.timeout(within):
        while len(out) < count:
            out.append(await sub.get())
    return out


@pytest.mark.rtsp
async def test_rtsp_audio_goes_to_the_audio_hub_and_continues_after_a_reconnect(
    rtsp_server: RtspServerFactory,
) -> None:
    server = rtsp_server({"cam": "320x240@25,300k,gop=10,audio=opus"})
    options = SourceOptions(url=server.url("cam"), connect_timeout=2, read_timeout=2, audio=True)
    hub, audio_hub = Hub("cam"), Hub("cam/audio")
    ingest = Ingest("cam", open_source(options), hub, POLICY, audio_hub=audio_hub)
    video_sub, audio_sub = hub.subscribe(), audio_hub.subscribe()
    ingest.start()
    try:
        before = await take(audio_sub, 10)
        assert all(p.codec == "opus" for p in before)
        assert audio_hub.audio == AudioInfo("opus", 48000, 2)
        video = await take(video_sub, 5)
        assert not any(p.is_audio for p in video) and ingest.state is IngestState.ONLINE
        assert audio_hub.stats.packets >= 10 and hub.stats.packets >= 5

        server.stop()  # the camera restarts: a new session, timestamps rebased by both hubs
        server.start()
        deadline = time.monotonic() + 10
        while ingest.sessions_opened < 2 or ingest.state is not IngestState.ONLINE:
            assert time.monotonic() < deadline, f"{ingest.state} after the restart"
            await asyncio.sleep(0.02)
        after = await take(audio_sub, audio_sub.pending() + 20)
        assert after[-1].received > after[0].received + 0.2
        pts = [p.pts for p in before + after]
        assert pts == sorted(pts) and len(set(pts)) == len(pts)
    finally:
        await ingest.stop()
        hub.close()
        audio_hub.close()


class SilentPictureSource(Source):
    """Real H.264 and Opus frames at 25 and 50 per second; the video stops after ``video_seconds``."""

    def __init__(self, video_seconds: float) -> None:
        super().__init__(SourceOptions(url="demo://sound", audio=True))
        self._video = encode_h264(25, width=160, height=120, gop=25)
        self._audio = encode_audio("opus", 0.2)
        self._video_seconds = video_seconds
        self.sessions = 0

    async def packets(self) -> AsyncGenerator[MediaPacket, None]:
        self.sessions += 1
        self.audio_info = self._audio.info
        start = time.monotonic()
        for i in range(10_000):
            await asyncio.sleep(0.02)
            if i % 2 == 0 and time.monotonic() - start < self._video_seconds:
                v = self._video[(i // 2) % len(self._video)]
                yield MediaPacket(v.data, i * 1800, v.keyframe, received=time.monotonic())
            a = self._audio.packets[i % len(self._audio.packets)]
            yield MediaPacket(a.data, i * 1800, True, "opus", received=time.monotonic())


@pytest.mark.parametrize("with_audio_hub", [True, False])
async def test_a_camera_whose_picture_died_stalls_even_while_its_sound_flows(with_audio_hub: bool) -> None:
    source = SilentPictureSource(video_seconds=0.3)
    hub = Hub("cam")
    audio_hub = Hub("cam/audio") if with_audio_hub else None
    ingest = Ingest("cam", source, hub, POLICY, audio_hub=audio_hub)
    video_sub = hub.subscribe()
    ingest.start()
    try:
        deadline = time.monotonic() + 5
        while ingest.stalls == 0:
            assert time.monotonic() < deadline, f"still {ingest.state} with sound alone"
            await asyncio.sleep(0.02)
        assert ingest.last_error == "no packet for 0.5 s"
        video = [video_sub.get_nowait() for _ in range(video_sub.pending())]
        assert video and not any(p is None or p.is_audio for p in video)
        if audio_hub is not None:
            assert audio_hub.stats.packets > hub.stats.packets and audio_hub.audio is not None
    finally:
        await ingest.stop()
