"""The picture diagnosis through the real app: alarms with their picture, the probe, the
reference picture, health and metrics; file cameras made of a synthetic hall encoded by
PyAV (one healthy, one whose picture is dark), and a real SQLite database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from tests.app_fixtures import RunningApp, serve_app
from tests.streams.analysis.scenes import raw_pictures
from vms.audit import AuditLog, AuditQuery

FPS = 10


def write_hall(path: Path, seconds: float, light: float = 1.0, shift: int = 0) -> Path:
    """An MP4 of the synthetic hall at ``light`` times its brightness, seen ``shift`` pixels to
    the side, a keyframe every 0.5 s."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": str(FPS // 2), "bf": "0", "sc_threshold": "0"}
        for picture in raw_pictures(int(seconds * 25))[::3]:
            lit = np.clip(picture.astype(np.float32) * light, 0, 255).astype(np.uint8)
            lit = np.roll(lit, shift, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(lit, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def site(hall: Path, dark: Path) -> str:
    return f"""
analysis:
  interval: 0.5
  raise_after: 1
  clear_after: 1
centres:
  - id: xingning
    name: 兴宁市政务服务中心
halls:
  - id: tax
    name: 税务分厅
cameras:
  - id: hall-1
    name: 大厅全景
    hall: tax
    url: file://{hall}
  - id: dark-1
    name: 窗口区
    hall: tax
    url: file://{dark}
"""


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("clips")
    return write_hall(base / "hall.mp4", 8), write_hall(base / "dark.mp4", 8, light=0.1)


@pytest.fixture
async def running(clips: tuple[Path, Path]) -> AsyncIterator[RunningApp]:
    async with serve_app(site(*clips)) as app:
        await app.wait_online("hall-1", "dark-1")
        yield app


async def until(check: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what} within {within} s"
        await asyncio.sleep(0.2)


async def test_a_dark_picture_raises_its_alarm_with_the_picture(running: RunningApp) -> None:
    operator = await running.user("xingning", "operator")

    async def dark_alarm() -> dict[str, Any] | None:
        alarms = (await operator.get("/api/v1/alarms")).json()["alarms"]
        return next((a for a in alarms if a["kind"] == "dark"), None)

    alarm = await until(dark_alarm, 10, "the dark camera raises its alarm")
    assert alarm["camera_id"] == "dark-1" and not alarm["informational"]
    assert alarm["texts"] == {"zh-CN": "画面过暗", "en": "picture too dark"}
    assert alarm["picture"] == f"/api/v1/alarms/{alarm['id']}/picture"
    res = await operator.get(alarm["picture"])
    assert res.status_code == 200 and res.headers["content-type"] == "image/jpeg"
    picture = cv2.imdecode(np.frombuffer(res.content, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert picture.shape == (360, 640) and picture.mean() < 40
    audit: AuditLog = running.app.state.audit
    seen = await audit.query(AuditQuery(action="snapshot", camera_id="dark-1"))
    assert [r.protocol for r in seen] == ["alarm_picture"]

    # The healthy camera stays quiet; the probe tells the two apart.
    alarms = (await operator.get("/api/v1/alarms")).json()["alarms"]
    assert {a["camera_id"] for a in alarms} == {"dark-1"}
    res = await running.http.get("/api/v1/probe/cameras/dark-1")
    assert res.status_code == 503 and res.json() == {
        "camera": "dark-1",
        "state": "online",
        "picture": ["dark"],
    }
    assert (await running.http.get("/api/v1/probe/cameras/hall-1")).status_code == 200

    health = (await operator.get("/api/v1/cameras/dark-1/health")).json()
    assert health["enabled"] and health["raised"] == ["dark"] and health["alarms"] == ["dark"]
    assert health["scores"]["brightness"] < 40 and health["texts"]["dark"]["zh-CN"] == "画面过暗"

    metrics = (await running.http.get("/metrics")).text
    assert 'hallwatch_picture_condition{camera="dark-1",condition="dark",hall="tax"} 1.0' in metrics
    assert 'hallwatch_picture_condition{camera="hall-1",condition="dark",hall="tax"} 0.0' in metrics
    assert 'hallwatch_alarms_total{kind="dark"} 1.0' in metrics
    assert 'hallwatch_picture_score{camera="dark-1",hall="tax",score="brightness"}' in metrics

    res = await operator.post(f"/api/v1/alarms/{alarm['id']}/ack")
    assert res.status_code == 200 and res.json()["acknowledged_by"] == "operator-xingning"
    acks = await audit.query(AuditQuery(action="alarm_ack", camera_id="dark-1"))
    assert len(acks) == 1


async def test_an_operator_sets_the_reference_picture(running: RunningApp) -> None:
    viewer = await running.user("xingning", "viewer")
    assert (await viewer.post("/api/v1/cameras/hall-1/reference")).status_code == 403
    operator = await running.user("xingning", "operator")

    async def analysed() -> bool:
        health = (await operator.get("/api/v1/cameras/hall-1/health")).json()
        return bool(health["analysed"])

    await until(analysed, 10, "the camera's pictures are analysed")
    assert (await operator.get("/api/v1/cameras/hall-1/reference.jpg")).status_code == 404
    res = await operator.post("/api/v1/cameras/hall-1/reference")
    assert res.status_code == 200, res.text
    reference = res.json()["reference"]
    assert reference["set_by"] == "operator-xingning"
    picture = await operator.get(reference["picture"])
    assert picture.status_code == 200
    assert cv2.imdecode(np.frombuffer(picture.content, np.uint8), cv2.IMREAD_COLOR).shape == (360, 640, 3)
    audit: AuditLog = running.app.state.audit
    assert len(await audit.query(AuditQuery(action="reference_set", camera_id="hall-1"))) == 1
    # The same view against its own reference: nothing moved.
    await asyncio.sleep(2)
    health = (await operator.get("/api/v1/cameras/hall-1/health")).json()
    assert health["raised"] == [] and health["scores"]["in_place"] > 0.3


async def test_the_reference_picture_survives_a_restart(clips: tuple[Path, Path], tmp_path: Path) -> None:
    """Set on one run, given back to the camera's analysis on the next: the health names who set
    it, and a camera turned aside while the service was down scores few features in place
    (without the stored reference, its own first picture would become the reference and it
    would score a healthy share)."""
    async with serve_app(site(*clips), tmp_path) as first:
        await first.wait_online("hall-1")
        operator = await first.user("xingning", "operator")

        async def reference_set() -> bool:
            return (await operator.post("/api/v1/cameras/hall-1/reference")).status_code == 200

        await until(reference_set, 10, "the reference is set once a picture was analysed")
    turned = write_hall(tmp_path / "turned.mp4", 8, shift=96)
    async with serve_app(site(turned, clips[1]), tmp_path) as second:
        operator = await second.login("operator-xingning")
        health = (await operator.get("/api/v1/cameras/hall-1/health")).json()
        assert health["reference"]["set_by"] == "operator-xingning"

        async def scored() -> dict[str, Any] | None:
            scores = (await operator.get("/api/v1/cameras/hall-1/health")).json()["scores"]
            return scores

        scores = await until(scored, 10, "a picture is analysed after the restart")
        assert scores["in_place"] < 0.3, "judged against the stored reference"


async def test_unknown_and_invisible(running: RunningApp) -> None:
    operator = await running.user("xingning", "operator")
    for path in ("/api/v1/cameras/nope/health", "/api/v1/alarms/123/picture"):
        assert (await operator.get(path)).status_code == 404
    assert (await running.http.get("/api/v1/cameras/hall-1/health")).status_code == 401
