"""Camera sound through the real app, from real RTSP cameras (GStreamer): off unless a
camera's ``audio: true``; AAC in the MSE stream as it is and to WebRTC as Opus,
transcoded once; Opus passed through to WebRTC as it is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import av
import pytest

from tests.app_fixtures import RunningApp, serve_app
from tests.rtsp_fixtures import RtspServerFactory
from tests.vms.test_live_ws import open_ws, receive_mse, until, ws_url
from tests.whep_client import WhepClient

SITE = """
webrtc:
  ice_host_addresses: [127.0.0.1]
ingest:
  connect_timeout: 2
  backoff_initial: 0.5
  backoff_max: 2
transcode:
  idle_timeout: 0.5
centres:
  - id: xingning
    name: 兴宁市政务服务中心
    halls: all
halls:
  - id: tax
    name: 国家税务总局兴宁市税务局第一税务分厅办税服务厅
cameras:
  - id: aac
    name: 大厅全景
    hall: tax
    url: {aac}
    audio: true
  - id: opus
    name: 窗口区
    hall: tax
    url: {opus}
    audio: true
  - id: silent
    name: 门口
    hall: tax
    url: {silent}
"""


@pytest.fixture
async def app(rtsp_server: RtspServerFactory) -> AsyncIterator[RunningApp]:
    video = "320x180@25,300k,gop=25"
    # Each camera its own path: GStreamer's server shares one pipeline per path and answers
    # 503 when two clients set up different tracks of it at the same moment.
    streams = {"aac": f"{video},audio=aac", "opus": f"{video},audio=opus", "silent": f"{video},audio=aac"}
    server = rtsp_server(streams)
    site = SITE.format(aac=server.url("aac"), opus=server.url("opus"), silent=server.url("silent"))
    async with serve_app(site) as running:
        await running.wait_online("aac", "opus", "silent")
        yield running


async def test_sound_is_relayed_only_where_configured(app: RunningApp, tmp_path: Path) -> None:
    viewer = await app.user("xingning", "viewer")

    async def audio_known() -> bool:
        cams = {c["id"]: c["live"]["audio"] for c in (await viewer.get("/api/v1/cameras")).json()}
        return cams == {"aac": "aac", "opus": "opus", "silent": None}

    await until(audio_known, "the cameras' sound was not described")

    # MSE: AAC goes into the same fragmented MP4 as the video, as it is.
    async with open_ws(app, ws_url(app, "aac"), viewer) as ws:
        capture = await receive_mse(ws, 60)
    assert capture.init["audio"] == "mp4a.40.2"
    assert capture.init["mime"] == f'video/mp4; codecs="{capture.init["codec"]}, mp4a.40.2"'
    path = tmp_path / "with-sound.mp4"
    path.write_bytes(b"".join(capture.segments))
    with av.open(str(path)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
        audio_frames = list(container.decode(audio=0))
    assert len(audio_frames) >= 10 and audio_frames[0].sample_rate == 48000

    # A browser that cannot play AAC asks for the picture alone.
    async with open_ws(app, ws_url(app, "aac", audio="0"), viewer) as ws:
        picture_only = await receive_mse(ws, 10)
    assert picture_only.init["audio"] is None and "mp4a" not in picture_only.init["mime"]

    # A camera without audio: true sends no sound, although its camera has some.
    async with open_ws(app, ws_url(app, "silent"), viewer) as ws:
        silent = await receive_mse(ws, 10)
    assert silent.init["audio"] is None and "mp4a" not in silent.init["mime"]

    # WebRTC: Opus passes through; AAC becomes Opus, transcoded once for every listener.
    async with AsyncExitStack() as stack:
        listeners = []
        for camera in ("opus", "aac", "aac"):
            client = await stack.enter_async_context(WhepClient(audio=True))
            await client.connect_http(viewer, f"/api/v1/cameras/{camera}/whep")
            listeners.append(client)
        for client in listeners:
            assert client.audio_codec is not None and client.audio_codec.lower() == "opus"
            assert await client.wait_until(lambda c=client: c.audio_frames >= 25, within=10)
            assert await client.wait_frames(5, within=10)
        aac = app.manager.stats("aac")
        assert aac.webrtc_viewers == 2
        assert app.manager.stats("aac").transcoding  # AAC to Opus, once for both listeners
        assert app.manager.stats("opus").transcoder_starts == 0  # passed through
    assert app.manager.stats("aac").transcoder_starts == 1

    async def transcoder_idle() -> bool:
        return not app.manager.stats("aac").transcoding

    await until(transcoder_idle, "the AAC to Opus transcoder kept running without listeners", within=5)

    # A viewer that offers no audio gets the picture alone.
    async with WhepClient() as client:
        await client.connect_http(viewer, "/api/v1/cameras/opus/whep")
        assert await client.wait_frames(5, within=10)
