"""An H.265 camera (GStreamer's x265enc behind a real RTSP server) through the real app:
passed through to browsers that decode H.265, transcoded to H.264 once for everyone
else, whatever the protocol, and only while someone watches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

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
  max_width: 320
  max_height: 320
  idle_timeout: 0.5
centres:
  - id: xingning
    name: 兴宁市政务服务中心
    halls: all
halls:
  - id: tax
    name: 国家税务总局兴宁市税务局第一税务分厅办税服务厅
cameras:
  - id: tax-h265
    name: 大厅全景
    hall: tax
    url: {url}
"""


@pytest.fixture
async def h265_app(rtsp_server: RtspServerFactory) -> AsyncIterator[RunningApp]:
    server = rtsp_server({"h265": "640x360@25,600k,gop=25,codec=h265"})
    async with serve_app(SITE.format(url=server.url("h265"))) as app:
        await app.wait_online("tax-h265")
        yield app


async def test_h265_is_transcoded_once_for_every_viewer_and_only_while_watched(
    h265_app: RunningApp, tmp_path: Path
) -> None:
    app = h265_app
    viewer = await app.user("xingning", "viewer")
    camera = (await viewer.get("/api/v1/cameras/tax-h265")).json()
    assert camera["live"]["codec"] == "h265"
    assert not camera["live"]["transcoding"]

    async with AsyncExitStack() as stack:
        # A WebRTC viewer first: waiting for the transcode's description starts the transcoder.
        client = await stack.enter_async_context(WhepClient())
        await client.connect_http(viewer, "/api/v1/cameras/tax-h265/whep")
        assert await client.wait_frames(5, within=10)
        assert (client.frames[0].width, client.frames[0].height) == (320, 180)
        # MSE viewers share the same transcoder.
        sockets = [
            await stack.enter_async_context(open_ws(app, ws_url(app, "tax-h265"), viewer)) for _ in range(3)
        ]
        captures = await asyncio.gather(*(receive_mse(ws, 15, within=20) for ws in sockets))
        stats = app.manager.stats("tax-h265")
        assert stats.transcoding and stats.transcoder_starts == 1
        assert (stats.mse_viewers, stats.webrtc_viewers) == (3, 1)
    for capture in captures:
        assert capture.init["transcoded"] is True
        assert capture.init["codec"].startswith("avc1.42")  # Constrained Baseline, for every browser
        assert (capture.init["width"], capture.init["height"]) == (320, 180)
    frames = captures[0].decode(tmp_path / "transcoded.mp4")
    assert len(frames) == 15 and frames[0].key_frame

    async def stopped() -> bool:
        return not app.manager.stats("tax-h265").transcoding

    await until(stopped, "the transcoder kept running without viewers", within=5)
    assert app.manager.stats("tax-h265").transcoder_starts == 1

    # A browser that decodes H.265 gets the camera's own stream, and no transcoder starts.
    async with open_ws(app, ws_url(app, "tax-h265", hevc="1"), viewer) as ws:
        capture = await receive_mse(ws, 10)
    assert capture.init["transcoded"] is False
    assert capture.init["codec"].startswith(("hvc1.", "hev1."))
    assert (capture.init["width"], capture.init["height"]) == (640, 360)
    frames = capture.decode(tmp_path / "h265.mp4")
    assert len(frames) == 10 and {(f.width, f.height) for f in frames} == {(640, 360)}
    assert app.manager.stats("tax-h265").transcoder_starts == 1

    # Snapshots decode H.265 directly.
    operator = await app.user("xingning", "operator")
    snapshot = await operator.get("/api/v1/cameras/tax-h265/snapshot.jpg")
    assert snapshot.status_code == 200 and snapshot.content[:2] == b"\xff\xd8"
