"""The HTTP API end to end: real app, real relay, real aiortc viewers, demo cameras."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import cv2
import httpx
import numpy as np
import pytest

from tests.app_fixtures import RunningApp, serve_app
from tests.whep_client import WhepClient

SECRET = "s3cret-Pa55word"

CONFIG = f"""
webrtc:
  ice_host_addresses: ["127.0.0.1"]
  max_viewers_per_camera: 2
ingest:
  connect_timeout: 1
  stall_timeout: 2
  backoff_initial: 0.5
  backoff_max: 2
pictures:
  mjpeg_max_fps: 10
centres:
  - id: meizhou
    name: 梅州市政务服务中心
halls:
  - id: tax
    name: 国家税务总局兴宁市税务局第一税务分厅办税服务厅
    department: 市税务局
  - id: legal-services
    name: 兴宁市公共法律服务中心
    department: 市司法局
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: demo://tax-1?size=320x180&gop=25
  - id: legal-1
    name: 窗口区
    hall: legal-services
    url: rtsp://127.0.0.1:9/nothing-listens-here
    credentials:
      username: admin
      password: {SECRET}
"""


@pytest.fixture
async def running() -> AsyncIterator[RunningApp]:
    async with serve_app(CONFIG) as app:
        yield app


@pytest.fixture
async def admin(running: RunningApp) -> httpx.AsyncClient:
    """The centre's first administrator: every permission, one centre."""
    return await running.admin("meizhou")


async def test_health_probes(running: RunningApp) -> None:
    assert (await running.http.get("/healthz")).json() == {"status": "ok"}
    ready = await running.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


async def test_halls_and_cameras_with_live_state(running: RunningApp, admin: httpx.AsyncClient) -> None:
    await running.wait_online("tax-1")
    halls = (await admin.get("/api/v1/halls")).json()
    assert [(h["id"], h["online"], h["total"]) for h in halls] == [("tax", 1, 1), ("legal-services", 0, 1)]
    cam = (await admin.get("/api/v1/cameras/tax-1")).json()
    assert cam["live"]["state"] == "online"
    assert cam["live"]["codec"] == "h264"
    assert (cam["live"]["width"], cam["live"]["height"]) == (320, 180)
    assert cam["links"]["whep"] == "/api/v1/cameras/tax-1/whep"
    missing = await admin.get("/api/v1/cameras/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def test_camera_password_never_in_an_answer(running: RunningApp, admin: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 10
    while running.manager.stats("legal-1").last_error is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    bodies = [
        (await admin.get(path)).text
        for path in ("/api/v1/cameras", "/api/v1/cameras/legal-1", "/api/v1/halls", "/api/v1/centres")
    ]
    cam = json.loads(bodies[1])
    assert cam["live"]["state"] == "offline"
    assert cam["source"] == "rtsp://127.0.0.1:9/nothing-listens-here"
    assert cam["live"]["last_error"]
    for body in bodies:
        assert SECRET not in body
        assert "admin" not in body


async def test_whep_session_plays_and_ends(running: RunningApp, admin: httpx.AsyncClient) -> None:
    await running.wait_online("tax-1")
    async with WhepClient(decode=True) as viewer:
        answer = await viewer.connect_http(admin, "/api/v1/cameras/tax-1/whep")
        assert "H264" in answer
        assert viewer.location is not None and "/api/v1/whep/" in viewer.location
        assert await viewer.wait_frames(5, within=10)
        assert (viewer.frames[0].width, viewer.frames[0].height) == (320, 180)
        assert running.manager.stats("tax-1").webrtc_viewers == 1
        assert (await admin.delete(viewer.location)).status_code == 200
        assert (await admin.delete(viewer.location)).status_code == 404
    assert running.manager.stats("tax-1").webrtc_viewers == 0


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        ("v=0\r\nthis is not sdp\r\n", "application/sdp", 400),
        ("", "application/sdp", 400),
        ("v=0\r\n", "text/plain", 415),
        ("x" * 70_000, "application/sdp", 413),
    ],
)
async def test_bad_offers_get_a_4xx(
    running: RunningApp, admin: httpx.AsyncClient, body: str, content_type: str, status: int
) -> None:
    await running.wait_online("tax-1")
    res = await admin.post("/api/v1/cameras/tax-1/whep", content=body, headers={"content-type": content_type})
    assert res.status_code == status
    assert res.headers["content-type"] == "application/problem+json"
    assert res.json()["detail"]


async def test_offer_without_h264_is_refused_clearly(running: RunningApp, admin: httpx.AsyncClient) -> None:
    await running.wait_online("tax-1")
    async with WhepClient(codecs=("VP8",)) as viewer:
        offer = await viewer.create_offer()
        res = await admin.post(
            "/api/v1/cameras/tax-1/whep", content=offer, headers={"content-type": "application/sdp"}
        )
    assert res.status_code == 400
    assert "H.264" in res.json()["detail"]


async def test_viewer_cap_per_camera(running: RunningApp, admin: httpx.AsyncClient) -> None:
    await running.wait_online("tax-1")
    viewers = [WhepClient(decode=False) for _ in range(3)]
    try:
        for viewer in viewers[:2]:
            await viewer.connect_http(admin, "/api/v1/cameras/tax-1/whep")
        # Only connected viewers take the camera's slots (pending ones have caps of their own).
        for viewer in viewers[:2]:
            assert await viewer.wait_frames(1, within=10)
        offer = await viewers[2].create_offer()
        res = await admin.post(
            "/api/v1/cameras/tax-1/whep", content=offer, headers={"content-type": "application/sdp"}
        )
        assert res.status_code == 503
        assert res.headers["retry-after"]
    finally:
        for viewer in viewers:
            await viewer.close()


async def test_snapshot_is_a_jpeg_of_the_camera(running: RunningApp, admin: httpx.AsyncClient) -> None:
    await running.wait_online("tax-1")
    res = await admin.get("/api/v1/cameras/tax-1/snapshot.jpg")
    assert res.status_code == 200
    assert res.headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(res.content, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (180, 320, 3)
    offline = await admin.get("/api/v1/cameras/legal-1/snapshot.jpg")
    assert offline.status_code == 503


async def test_mjpeg_streams_jpeg_parts(running: RunningApp, admin: httpx.AsyncClient) -> None:
    await running.wait_online("tax-1")
    jpegs = 0
    buffer = b""
    async with admin.stream("GET", "/api/v1/cameras/tax-1/stream.mjpeg") as res:
        assert res.headers["content-type"].startswith("multipart/x-mixed-replace; boundary=")
        async for chunk in res.aiter_bytes():
            buffer += chunk
            jpegs = buffer.count(b"\xff\xd8\xff")
            if jpegs >= 3:
                break
    assert jpegs >= 3
    deadline = time.monotonic() + 5
    while running.manager.stats("tax-1").mjpeg_viewers:
        assert time.monotonic() < deadline, "the MJPEG viewer was not released"
        await asyncio.sleep(0.05)


async def test_dashboard_is_served(running: RunningApp) -> None:
    page = await running.http.get("/")
    assert page.status_code == 200
    assert "<title>" in page.text
    script = await running.http.get("/player.js")
    assert script.status_code == 200
    assert "links.whep" in script.text, "the player follows the API's links"
