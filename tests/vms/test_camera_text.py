"""A camera's own words never reach a user: a camera that echoes the request's
``Authorization`` header (the base64 of its login) in its reason phrase, headers and
body, seen through the real app's camera and alarm APIs and its log at INFO and above.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time

import pytest

from streams import IngestState
from tests.app_fixtures import serve_app
from tests.streams.sources.echo_camera import EchoCamera, EchoMode

USER, PASSWORD = "camviewer", "Echo-camera-s3cret"
TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def site(url: str) -> str:
    return f"""
ingest:
  connect_timeout: 2
  read_timeout: 2
  stall_timeout: 1
  offline_after: 1
  backoff_initial: 0.2
  backoff_max: 0.5
centres:
  - id: xingning
    name: 兴宁市政务服务中心
    halls: all
halls:
  - id: tax
    name: 国家税务总局兴宁市税务局第一税务分厅办税服务厅
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: {url}
    credentials:
      username: {USER}
      password: "{PASSWORD}"
"""


@pytest.mark.parametrize(
    ("mode", "public"),
    [
        ("401", "the camera refused the login (401)"),
        ("500", "the camera failed with a server error (500) to DESCRIBE"),
        ("garbage", "the camera answered something that is not RTSP"),
    ],
)
async def test_an_echoing_camera_shows_no_login_to_viewers(
    mode: EchoMode, public: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with EchoCamera(mode) as camera, serve_app(site(camera.url)) as running:
        deadline = time.monotonic() + 20
        while running.manager.stats("tax-1").state is not IngestState.OFFLINE or camera.echoed < 2:
            assert time.monotonic() < deadline, running.manager.stats("tax-1")
            await asyncio.sleep(0.05)
        viewer = await running.user("xingning", "viewer")
        bodies = {
            path: (await viewer.get(path)).text
            for path in ("/api/v1/cameras", "/api/v1/cameras/tax-1", "/api/v1/alarms", "/api/v1/halls")
        }
        cam = (await viewer.get("/api/v1/cameras/tax-1")).json()
        alarms = (await viewer.get("/api/v1/alarms")).json()["alarms"]

    assert cam["live"]["last_error"] == public
    assert [a["message"] for a in alarms] == [f"camera offline: {public}"]
    loud = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    quiet = [r.getMessage() for r in caplog.records if r.levelno < logging.INFO]
    for where, text in [*bodies.items(), ("log at INFO and above", loud), ("debug log", "\n".join(quiet))]:
        assert TOKEN not in text, where
        assert PASSWORD not in text, where
        assert TOKEN[:16] not in text, where
    assert any(f"127.0.0.1:{camera.port}/stream" in line for line in quiet), "the detail is kept at DEBUG"
