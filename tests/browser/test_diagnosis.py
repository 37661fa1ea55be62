"""The picture diagnosis in real Chromium against the real service: an operator sets a
camera's reference picture from its health dialog, the camera is moved, and the scene-change
alarm arrives with its picture (a thumbnail, then full size in a dialog), in Chinese in the
Chinese page; the operator acknowledges it and the audit trail holds both acts.

The camera is a real RTSP camera (GStreamer's test server) filming the synthetic hall of
:mod:`tests.streams.analysis.scenes`. Moving it restarts the server, on the same port, with
the same hall seen from a view shifted by 8 % and 5 %: what the service sees of a camera
knocked aside and powered back on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
import pytest_asyncio
from playwright.async_api import Page, expect

from streams.packets import MediaPacket
from tests.app_fixtures import RunningApp, serve_app
from tests.browser.conftest import (
    OUTPUT_DIR,
    PageFactory,
    login,
    note,
    page_log,
    rtsp_servers,
    wait_until,
)
from tests.rtsp_fixtures import RtspTestServer, write_au_file
from tests.streams.analysis.scenes import FAULTS, FPS, HEIGHT, WIDTH, raw_pictures

pytestmark = pytest.mark.asyncio(loop_scope="session")

CAMERA = "hall-1"
OPERATOR = "operator-xingning"
SECONDS = 4
GOP = FPS // 2
MOVED_TEXT = "摄像机移位或场景变化"


def hall_units(path: Path, fault: str | None = None) -> Path:
    """The hall (with ``fault`` applied) as the RTSP test server's access-unit file: H.264 by
    libx264, a keyframe every half second."""
    pictures = raw_pictures(SECONDS * FPS)
    if fault is not None:
        rng = np.random.default_rng(7)
        pictures = [FAULTS[fault](picture, rng) for picture in pictures]
    encoder = av.CodecContext.create("libx264", "w")
    assert isinstance(encoder, av.VideoCodecContext)
    encoder.width, encoder.height, encoder.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    encoder.time_base, encoder.framerate = Fraction(1, FPS), Fraction(FPS)
    encoder.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(GOP), "bf": "0"}
    packets: list[av.Packet] = []
    for index, picture in enumerate(pictures):
        frame = av.VideoFrame.from_ndarray(picture, format="bgr24")
        frame.pts = index
        packets.extend(encoder.encode(frame))
    packets.extend(encoder.encode(None))
    units = [MediaPacket(data=bytes(p), pts=int(p.pts or 0), keyframe=p.is_keyframe) for p in packets]
    return write_au_file(path, units)


def site(url: str) -> str:
    return f"""
webrtc:
  ice_host_addresses: ["127.0.0.1"]
ingest:
  connect_timeout: 1
  read_timeout: 1
  backoff_initial: 0.2
  backoff_max: 0.5
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
  - id: {CAMERA}
    name: 大厅全景
    hall: tax
    url: {url}
"""


@dataclass
class MovableCamera:
    app: RunningApp
    server: RtspTestServer
    moved: Path
    """The access-unit file of the shifted view."""

    is_moved: bool = False

    async def move(self) -> None:
        """Restart the camera's server on its port, filming the shifted view."""
        self.server.streams[CAMERA] = f"aufile={self.moved},fps={FPS}"
        await asyncio.to_thread(self.server.start)
        self.is_moved = True

    async def moved_alarm(self, client: httpx.AsyncClient) -> dict[str, Any]:
        """The scene-change alarm, moving the camera first if no test did."""
        if not self.is_moved:
            await self.move()
        deadline = time.monotonic() + 10
        while True:
            alarms = (await client.get("/api/v1/alarms")).json()["alarms"]
            found = [a for a in alarms if a["kind"] == "moved"]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no scene-change alarm: {alarms}"
            await asyncio.sleep(0.2)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def camera(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MovableCamera]:
    base = tmp_path_factory.mktemp("hall")
    hall, moved = await asyncio.gather(
        asyncio.to_thread(hall_units, base / "hall.au"),
        asyncio.to_thread(hall_units, base / "moved.au", "shifted"),
    )
    server = RtspTestServer(au_files={CAMERA: hall})
    async with rtsp_servers(server), serve_app(site(server.url(CAMERA))) as app:
        await app.wait_online(CAMERA)
        yield MovableCamera(app, server, moved)


async def analysed(app: RunningApp, within: float) -> None:
    """Wait until the camera's analysis has seen a picture (an operator's reference needs one)."""
    deadline = time.monotonic() + within
    client = await app.login(OPERATOR)
    while not (await client.get(f"/api/v1/cameras/{CAMERA}/health")).json()["analysed"]:
        assert time.monotonic() < deadline, f"no picture of {CAMERA} analysed within {within} s"
        await asyncio.sleep(0.2)


async def focused_action(page: Page) -> str | None:
    action: str | None = await page.evaluate("document.activeElement?.dataset.action")
    return action


async def wait_loaded(page: Page, selector: str, what: str) -> None:
    """Wait until the image ``selector`` names has loaded a picture."""

    async def loaded() -> bool:
        found: bool = await page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0")
        return found

    await wait_until(page, loaded, 5, what)


async def set_reference(page: Page) -> None:
    """Open the camera's health from its tile, set the reference picture, close with Esc."""
    tile = page.locator(f'section#wall div.tile[data-camera="{CAMERA}"]')
    await tile.locator('button[data-action="health"]').click()
    dialog = page.locator("dialog.health-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog.locator("h2")).to_have_text("画面诊断：大厅全景")
    await expect(dialog.locator(".health-state")).to_have_text("画面正常", timeout=5_000)
    await expect(dialog.locator(".health-score")).to_have_count(6)
    await expect(dialog.locator(".health-reference-by")).to_have_text("未设置基准画面：以首个正常画面为准")
    button = dialog.locator('button[data-action="set-reference"]')
    await expect(button).to_have_text("设为基准画面")
    await button.click()
    await expect(dialog.locator(".health-result")).to_have_text("基准画面已更新", timeout=5_000)
    await expect(dialog.locator(".health-reference-by")).to_contain_text(f"{OPERATOR} 于")
    await wait_loaded(page, "dialog.health-dialog img.health-picture", "the reference picture shown")
    await page.screenshot(path=OUTPUT_DIR / "diagnosis-health-1366x768.png")
    await page.keyboard.press("Escape")
    await expect(dialog).to_have_count(0)
    assert await focused_action(page) == "health", "the focus went back to the tile's button"


async def test_an_operator_sees_the_camera_moved_from_its_reference(
    camera: MovableCamera, new_page: PageFactory
) -> None:
    app = camera.app
    await app.user("xingning", "operator")
    page = await new_page()
    await page.goto(app.base_url + "/", wait_until="domcontentloaded")
    await login(page, OPERATOR)
    await analysed(app, 10)
    await set_reference(page)

    await camera.move()
    moved_at = time.monotonic()
    item = page.locator('aside#alarms li[data-kind="moved"]')
    await expect(item).to_have_count(1, timeout=15_000)
    shown_after = time.monotonic() - moved_at
    await expect(item.locator(".alarm-kind")).to_have_text(MOVED_TEXT)
    alarm_id = await item.get_attribute("data-alarm-id")
    thumb = f'aside#alarms li[data-alarm-id="{alarm_id}"] button[data-action="picture"] img'
    await wait_loaded(page, thumb, "the alarm's thumbnail loaded")
    tile = page.locator(f'section#wall div.tile[data-camera="{CAMERA}"]')
    await expect(tile).to_have_attribute("data-picture", "moved")
    await expect(tile.locator(".tile-picture")).to_have_text("画面异常")
    await page.screenshot(path=OUTPUT_DIR / "diagnosis-alarm-1366x768.png")
    await assert_texts(page, app, "zh-CN")

    await page.locator(thumb).click()
    picture = page.locator("dialog.picture-dialog")
    await expect(picture).to_be_visible()
    await expect(picture.locator("h2")).to_have_text(MOVED_TEXT)
    await wait_loaded(page, "dialog.picture-dialog img", "the full-size picture loaded")
    await page.screenshot(path=OUTPUT_DIR / "diagnosis-alarm-picture-1366x768.png")
    await page.keyboard.press("Escape")
    await expect(picture).to_have_count(0)
    assert await focused_action(page) == "picture", f"focus not back on the thumbnail\n{page_log(page)}"

    await item.locator('button[data-action="ack"]').click()
    await expect(item).to_have_attribute("data-acknowledged", "true", timeout=5_000)
    await expect(item.locator(".alarm-ack")).to_contain_text(f"{OPERATOR} 于")
    await assert_audited(app, int(alarm_id or 0))
    await page.locator("#lang").click()
    await expect(item.locator(".alarm-kind")).to_have_text("camera moved or scene changed")
    await assert_texts(page, app, "en")
    note("diagnosis.txt", "scene change to alarm in the panel", f"{shown_after:.1f} s after the camera moved")


async def assert_texts(page: Page, app: RunningApp, language: str) -> None:
    """Every alarm in the panel says what the API's text in ``language`` says, never the other's."""
    other = "en" if language == "zh-CN" else "zh-CN"
    client = await app.login(OPERATOR)
    alarms = (await client.get("/api/v1/alarms")).json()["alarms"]
    for alarm in alarms:
        item = page.locator(f'aside#alarms li[data-alarm-id="{alarm["id"]}"]')
        text = alarm["texts"][language]
        kind = await item.locator(".alarm-kind").inner_text()
        messages = await item.locator(".alarm-message").all_inner_texts()
        # In the message line, or the kind's own words (a picture alarm's text is its kind).
        assert messages == [text] or (messages == [] and kind == text), (alarm, kind, messages)
        assert alarm["texts"][other] not in await item.inner_text(), alarm


async def assert_audited(app: RunningApp, alarm_id: int) -> None:
    admin = await app.admin("xingning")
    records = {}
    for action in ("reference_set", "alarm_ack", "snapshot"):
        res = await admin.get("/api/v1/audit", params={"action": action, "camera": CAMERA})
        assert res.status_code == 200, res.text
        records[action] = [r for r in res.json() if r["username"] == OPERATOR]
    assert len(records["reference_set"]) == 1, records
    [ack] = records["alarm_ack"]
    assert json.loads(ack["detail"]) == {"alarm": alarm_id, "kind": "moved"}, ack
    # The thumbnail and the full-size picture are one download, kept by the browser.
    assert [r["protocol"] for r in records["snapshot"]] == ["alarm_picture"], records["snapshot"]


async def test_a_viewer_reads_the_diagnosis_but_sees_no_picture_and_sets_nothing(
    camera: MovableCamera, new_page: PageFactory
) -> None:
    app = camera.app
    viewer = await app.user("xingning", "viewer")
    alarm = await camera.moved_alarm(viewer)
    page = await new_page()
    await page.goto(app.base_url + "/", wait_until="domcontentloaded")
    await login(page, "viewer-xingning")
    item = page.locator(f'aside#alarms li[data-alarm-id="{alarm["id"]}"]')
    await expect(item.locator(".alarm-kind")).to_have_text(MOVED_TEXT)
    await expect(item.locator("button")).to_have_count(0)  # no picture, no acknowledgement

    await page.locator(f'section#wall div.tile[data-camera="{CAMERA}"] button[data-action="health"]').click()
    dialog = page.locator("dialog.health-dialog")
    await expect(dialog.locator(".health-state")).to_have_text(MOVED_TEXT, timeout=5_000)
    await expect(dialog.locator(".health-state")).to_have_attribute("data-bad", "true")
    await expect(dialog.locator(".health-score")).to_have_count(6)
    await expect(dialog.locator("img.health-picture")).to_be_hidden()
    await expect(dialog.locator('button[data-action="set-reference"]')).to_have_count(0)

    # The session ends while the dialog is open: it goes, and the login form is not hidden behind it.
    await page.context.clear_cookies()
    await expect(page.locator("form#login")).to_be_visible(timeout=5_000)
    await expect(dialog).to_have_count(0)
