"""The dashboard's playback view in real Chromium against the real service recording real
RTSP cameras whose pictures carry the wall clock at which they were made: a moment chosen on
the timeline shows that moment's picture, two cameras of a hall play in step (also at 2×),
an alarm's play-back button plays from just before the alarm, a viewer has no playback, and
the view speaks Chinese first. Figures go to ``test-output/recordings-view-report.txt``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Page, expect

from tests.app_fixtures import RunningApp, serve_app
from tests.browser.conftest import (
    OUTPUT_DIR,
    PageFactory,
    assert_decoding,
    login,
    page_log,
    rtsp_servers,
    wait_until,
)
from tests.browser.conftest import note as write_note
from tests.clock_barcode import READ_CLOCK_JS
from tests.rtsp_fixtures import RtspTestServer

pytestmark = pytest.mark.asyncio(loop_scope="session")

CLOCK_SPEC = "640x360@25,600k,gop=25,clock"
"""A keyframe every second: playback starts at most one second before the moment asked for."""
HALL_CAMERAS = ("clock-1", "clock-2")
DOOR = "door"
"""A clock camera of another hall, on an RTSP server of its own that a test freezes."""
RECORDED_S = 12
"""Seconds of recording the site waits for before its first test."""
MATCH_MS = 1000
IN_STEP_MS = 500
ZOOM_WINDOWS_MS = (86_400_000, 21_600_000, 3_600_000, 900_000, 120_000)
"""The timeline's windows, the whole day first, as the dashboard's timeline has them."""
TILE_VIDEO = '#pb-tiles .pb-tile[data-camera="{}"] video'


def site_yaml(hall_server: RtspTestServer, door_server: RtspTestServer) -> str:
    return f"""
webrtc:
  ice_host_addresses: ["127.0.0.1"]
ingest:
  connect_timeout: 1
  read_timeout: 1
  stall_timeout: 1.5
  offline_after: 3
  backoff_initial: 0.3
  backoff_max: 1
recording:
  record: true
  segment_seconds: 2
centres:
  - id: meizhou
    name: 梅州市政务服务中心
    halls: all
halls:
  - id: tax
    name: 国家税务总局兴宁市税务局第一税务分厅办税服务厅
    department: 市税务局
  - id: police
    name: 兴宁市公安局综合办证大厅
    department: 市公安局
cameras:
  - {{id: clock-1, name: 大厅全景, hall: tax, url: "{hall_server.url("clock-1")}"}}
  - {{id: clock-2, name: 窗口区, hall: tax, url: "{hall_server.url("clock-2")}"}}
  - {{id: {DOOR}, name: 门口, hall: police, url: "{door_server.url(DOOR)}"}}
"""


@dataclass
class Recorded:
    app: RunningApp
    door: RtspTestServer
    operator: str
    viewer: str
    api: httpx.AsyncClient
    """Logged in as the operator."""
    alarm: dict[str, Any] | None = None

    async def door_alarm(self) -> dict[str, Any]:
        """The ``stalled`` alarm of the door camera, raised (once) by freezing its RTSP server."""
        if self.alarm is None:
            self.door.freeze()
            try:
                deadline = time.monotonic() + 10
                while self.alarm is None:
                    assert time.monotonic() < deadline, f"no stalled alarm for {DOOR}"
                    await asyncio.sleep(0.2)
                    res = await self.api.get("/api/v1/alarms")
                    found = [
                        a for a in res.json()["alarms"] if a["camera_id"] == DOOR and a["kind"] == "stalled"
                    ]
                    self.alarm = found[0] if found else None
            finally:
                self.door.thaw()
        return self.alarm

    @property
    def url(self) -> str:
        return self.app.base_url + "/"

    async def spans(self, camera: str) -> list[tuple[float, float]]:
        """The camera's recorded spans of the last hour, as epoch milliseconds."""
        res = await self.api.get(f"/api/v1/cameras/{camera}/recordings")
        assert res.status_code == 200, res.text
        return [(_ms(s["start"]), _ms(s["end"])) for s in res.json()["spans"]]


def _ms(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp() * 1000


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def recorded() -> AsyncIterator[Recorded]:
    """The service recording three clock cameras in 2-second segments, with RECORDED_S seconds done."""
    hall_server = RtspTestServer({camera: CLOCK_SPEC for camera in HALL_CAMERAS})
    door_server = RtspTestServer({DOOR: CLOCK_SPEC})
    # The servers have their ports once started: the site's YAML is written after.
    async with rtsp_servers(hall_server, door_server), serve_app(site_yaml(hall_server, door_server)) as app:
        await app.wait_online(*HALL_CAMERAS, DOOR, within=30)
        api = await app.user("meizhou", "operator")
        await app.user("meizhou", "viewer")
        site = Recorded(app, door_server, "operator-meizhou", "viewer-meizhou", api)
        for camera in (*HALL_CAMERAS, DOOR):
            await _wait_recorded(site, camera, RECORDED_S)
        yield site


async def _wait_recorded(site: Recorded, camera: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds + 30
    while True:
        spans = await site.spans(camera)
        if spans and spans[-1][1] - spans[-1][0] >= seconds * 1000:
            return
        assert time.monotonic() < deadline, f"{camera}: {seconds} s not recorded in time: {spans}"
        await asyncio.sleep(0.5)


# -- helpers -----------------------------------------------------------------------


def note(what: str, text: str) -> None:
    """Print a measurement and append it to ``test-output/recordings-view-report.txt``."""
    write_note("recordings-view-report.txt", what, text)


async def open_playback(page: Page, site: Recorded, username: str) -> None:
    await page.goto(site.url, wait_until="domcontentloaded")
    await login(page, username)
    await page.locator("#nav-playback").click()
    await expect(page.locator("section#playback")).to_be_visible()
    await expect(page.locator("section.center")).to_be_hidden()


async def choose(page: Page, value: str, cameras: tuple[str, ...]) -> None:
    """Pick a camera or hall; wait until the timeline shows each camera's recorded spans."""
    await page.locator("#pb-source").select_option(value)
    for camera in cameras:
        lane = page.locator(f'#pb-timeline .tl-lane[data-camera="{camera}"] .tl-span')
        await expect(lane.first).to_be_attached(timeout=10_000)


async def zoom_to_two_minutes_around_now(page: Page) -> None:
    """Wheel the timeline in, four steps, to a two-minute window with the present in its middle.

    A wheel step keeps the moment under the pointer where it is on screen, so the pointer
    goes where that holds the present at the middle of the narrower window (as near as the
    track's ends allow). Over the day's first minute the test waits, for the timeline shows
    one day and the moments the tests choose lie a few seconds back.
    """
    since_midnight = (
        time.time() - datetime.now().replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    )
    if since_midnight < 60:
        await asyncio.sleep(60 - since_midnight)
    track = page.locator("#pb-timeline .tl-tracks")
    for narrower in ZOOM_WINDOWS_MS[1:]:
        box = await track.bounding_box()
        assert box is not None
        start, end = await _window(page)
        ratio = (time.time() * 1000 - narrower / 2 - start) / (end - start - narrower)
        x = box["x"] + box["width"] * max(0.0, min(1.0, ratio))
        await page.mouse.move(min(x, box["x"] + box["width"] - 1), box["y"] + box["height"] / 2)
        await page.mouse.wheel(0, -100)
        await wait_until(
            page,
            f"(e => e.dataset.to - e.dataset.from === {narrower})(document.querySelector('#pb-timeline'))",
            5,
            f"a timeline window of {narrower} ms",
        )
    await expect(page.locator("#pb-timeline .tl-window")).to_have_text("2 分钟")


async def _window(page: Page) -> tuple[float, float]:
    """The timeline's window: its first and last moment (ms)."""
    span: dict[str, str] = await page.locator("#pb-timeline").evaluate("e => ({...e.dataset})")
    return float(span["from"]), float(span["to"])


async def _ratio(page: Page, ms: float) -> float:
    start, end = await _window(page)
    return max(0.0, min(1.0, (ms - start) / (end - start)))


async def click_timeline(page: Page, ms: float) -> float:
    """Click the timeline where it shows ``ms``; return the moment the click stands for."""
    track = page.locator("#pb-timeline .tl-tracks")
    box = await track.bounding_box()
    assert box is not None
    ratio = await _ratio(page, ms)
    await page.mouse.click(box["x"] + box["width"] * ratio, box["y"] + box["height"] / 2)
    start, end = await _window(page)
    return start + ratio * (end - start)


async def playback(page: Page) -> dict[str, Any]:
    info: dict[str, Any] = await page.evaluate("window.hallwatch.playback()")
    return info


async def wait_playing(page: Page, cameras: tuple[str, ...], timeout: float = 15) -> dict[str, Any]:
    """Every stream shows the moment asked for, with decoded frames."""

    async def ready() -> dict[str, Any] | None:
        info = await playback(page)
        streams = {s["camera"]: s for s in info["streams"]}
        good = all(
            camera in streams
            and streams[camera]["status"] in ("playing", "ended")
            and streams[camera]["framesDecoded"] > 0
            and streams[camera]["width"] > 0
            for camera in cameras
        )
        return info if good else None

    return await wait_until(page, ready, timeout, f"playback of {cameras}")


READ_TILES_JS = f"""(ids) => {{
  const read = {READ_CLOCK_JS};
  const info = window.hallwatch.playback();
  return {{
    clocks: ids.map((id) => read(document.querySelector(`#pb-tiles .pb-tile[data-camera="${{id}}"] video`))),
    moment: info.moment,
  }};
}}"""
"""The burnt-in clocks of the given cameras' tiles and the view's moment, read in one go."""


async def read_tiles(page: Page, cameras: tuple[str, ...]) -> tuple[list[float | None], float | None]:
    found: dict[str, Any] = await page.evaluate(READ_TILES_JS, list(cameras))
    return found["clocks"], found["moment"]


async def read_clock_settled(page: Page, camera: str, timeout: float = 5) -> float:
    """The burnt-in clock of a paused tile, once two readings agree."""
    last: list[float | None] = [None]

    async def steady() -> float | None:
        clocks, _ = await read_tiles(page, (camera,))
        value = clocks[0]
        agreed = value is not None and value == last[0]
        last[0] = value
        return value if agreed else None

    return await wait_until(page, steady, timeout, f"a steady clock in {camera}'s picture")


async def read_first_picture(page: Page, camera: str, timeout: float = 3) -> tuple[float, float]:
    """The burnt-in clock of a playing tile and the moment the view shows beside it, read in one
    go, once the picture can be read: a frame counted as decoded is not always on the page yet
    (the canvas copy of a video about to present its first frame is blank)."""

    async def readable() -> tuple[float, float] | None:
        clocks, moment = await read_tiles(page, (camera,))
        return (clocks[0], moment) if clocks[0] is not None and moment is not None else None

    return await wait_until(page, readable, timeout, f"a readable clock in {camera}'s first picture")


def local_hms(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S")


# -- tests -------------------------------------------------------------------------


async def test_a_moment_chosen_on_the_timeline_shows_that_moments_picture(
    recorded: Recorded, new_page: PageFactory
) -> None:
    page = await new_page(1600, 900)
    await page.goto(recorded.url, wait_until="domcontentloaded")
    await login(page, recorded.operator)
    await assert_decoding(page, HALL_CAMERAS)  # the live wall, which stops once hidden
    await page.locator("#nav-playback").click()
    await expect(page.locator("section#playback")).to_be_visible()
    await wait_until(
        page,
        "window.hallwatch.tiles().every(t => t.status === 'idle')",
        10,
        "the hidden wall's tiles stopped",
    )
    await page.locator('nav#hall-tree [data-camera-item="clock-1"]').first.click()
    await choose(page, "camera:clock-1", ("clock-1",))
    await expect(page.locator("#pb-source")).to_have_value("camera:clock-1")
    await zoom_to_two_minutes_around_now(page)

    chosen = await click_timeline(page, time.time() * 1000 - 6000)
    clicked = time.monotonic()
    await wait_playing(page, ("clock-1",))
    waited = time.monotonic() - clicked
    clock, moment = await read_first_picture(page, "clock-1")
    assert abs(clock - moment) < MATCH_MS, f"picture {clock}, view says {moment}"
    assert chosen - MATCH_MS <= clock <= chosen + (time.monotonic() - clicked) * 1000 + MATCH_MS

    # Paused, the time control moves to a moment and the picture shows exactly it.
    await page.locator("#pb-play").click()
    await expect(page.locator("#pb-play")).to_have_attribute("aria-pressed", "true")
    target = (time.time() - 8) // 1 * 1000
    await page.locator("#pb-time").fill(local_hms(target))
    await page.locator("#pb-time").press("Enter")
    await expect(page.locator("#pb-moment")).to_contain_text(local_hms(target))
    shown = await read_clock_settled(page, "clock-1")
    info = await playback(page)
    note(
        "chosen moment",
        f"first picture {waited:.2f} s after the click; paused at {local_hms(target)}: the picture shows "
        f"{shown - target:+.0f} ms from it; stream {info['streams'][0]}",
    )
    assert abs(shown - target) < MATCH_MS, f"asked for {target}, the picture shows {shown}"
    assert info["paused"] and info["streams"][0]["paused"]
    OUTPUT_DIR.mkdir(exist_ok=True)
    await page.screenshot(path=str(OUTPUT_DIR / "recordings-view.png"))


async def test_two_cameras_of_a_hall_play_in_step_at_1x_and_2x(
    recorded: Recorded, new_page: PageFactory
) -> None:
    page = await new_page(1600, 900)
    await open_playback(page, recorded, recorded.operator)
    await choose(page, "hall:tax", HALL_CAMERAS)
    await expect(page.locator("#pb-tiles .pb-tile")).to_have_count(2)
    first = max(span[-1][0] for span in [await recorded.spans(c) for c in HALL_CAMERAS])
    start = max(first + 2000, time.time() * 1000 - 25000)
    await page.locator("#pb-time").fill(local_hms(start // 1000 * 1000 + 1000))
    await page.locator("#pb-goto button[type=submit]").click()
    await wait_playing(page, HALL_CAMERAS)

    figures = {}
    for speed in (1, 2):
        if speed != 1:
            await page.locator(f'#pb-speeds [data-speed="{speed}"]').click()
            await expect(page.locator(f'#pb-speeds [data-speed="{speed}"]')).to_have_attribute(
                "aria-pressed", "true"
            )
            await asyncio.sleep(1)  # the followers catch up with the new rate
        drifts = await sample_drift(page, seconds=4)
        figures[speed] = drifts
        assert len(drifts) >= 10, (
            f"{speed}×: the clocks could be read {len(drifts)} times only\n{page_log(page)}"
        )
        worst = max(abs(d) for d in drifts)
        assert worst < IN_STEP_MS, f"{speed}×: the pictures drifted {worst:.0f} ms apart: {drifts}"
    # A follower pushed 1.5 s ahead is brought back to the leader's moment.
    before = (await playback(page))["corrections"]
    await page.locator(TILE_VIDEO.format(HALL_CAMERAS[1])).evaluate("v => { v.currentTime += 1.5; }")

    async def corrected() -> list[float] | None:
        if (await playback(page))["corrections"] <= before:
            return None
        drifts = await sample_drift(page, seconds=1)
        return drifts if drifts and max(abs(d) for d in drifts) < IN_STEP_MS else None

    after_push = await wait_until(page, corrected, 5, "the pushed follower back in step")
    info = await playback(page)
    assert info["speed"] == 2 and all(s["speed"] == 2 for s in info["streams"]), info
    rates = await page.eval_on_selector_all("#pb-tiles video", "vs => vs.map(v => v.playbackRate)")
    assert rates == [2, 2], rates
    note(
        "in step",
        "; ".join(
            f"{speed}×: {len(d)} readings, worst {max(abs(x) for x in d):.0f} ms, "
            f"mean {sum(abs(x) for x in d) / len(d):.0f} ms"
            for speed, d in figures.items()
        )
        + f"; pushed 1.5 s ahead, back within {max(abs(x) for x in after_push):.0f} ms"
        + f"; corrections {info['corrections']}",
    )


async def test_a_range_marked_on_the_timeline_is_exported_with_its_reason(
    recorded: Recorded, new_page: PageFactory
) -> None:
    page = await new_page(1600, 900)
    await open_playback(page, recorded, recorded.operator)
    await choose(page, "camera:clock-2", ("clock-2",))
    await zoom_to_two_minutes_around_now(page)
    now = time.time() * 1000
    track = page.locator("#pb-timeline .tl-tracks")
    box = await track.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    x0 = box["x"] + box["width"] * await _ratio(page, now - 14000)
    x1 = box["x"] + box["width"] * await _ratio(page, now - 8000)
    await page.keyboard.down("Shift")
    await page.mouse.move(x0, y)
    await page.mouse.down()
    await page.mouse.move((x0 + x1) / 2, y, steps=3)
    await page.mouse.move(x1, y, steps=3)
    await page.mouse.up()
    await page.keyboard.up("Shift")
    marks = (await playback(page))["marks"]
    assert marks and abs(marks["to"] - marks["from"] - 6000) < 1000, marks
    await expect(page.locator("#pb-range")).to_contain_text("秒")

    await page.locator("#pb-reason").fill("窗口投诉核查")
    await page.locator("#pb-export-button").click()
    item = page.locator("#pb-export-list .pb-export-item").first
    await expect(item).to_have_attribute("data-status", "ready", timeout=20_000)
    await expect(item.locator(".pb-export-status")).to_have_text("已完成")
    links = item.locator("a.pb-export-link")
    await expect(links).to_have_text(["视频文件", "签名清单"])
    hrefs = await links.evaluate_all("as => as.map(a => a.href)")
    fetched: list[dict[str, Any]] = await page.evaluate(
        """async (urls) => Promise.all(urls.map(async (u) => {
            const res = await fetch(u);
            const body = await res.arrayBuffer();
            const type = res.headers.get("Content-Type");
            const text = type.includes("json") ? new TextDecoder().decode(body) : "";
            return {status: res.status, type, bytes: body.byteLength, text};
        }))""",
        hrefs,
    )
    video, manifest = fetched
    assert video["status"] == 200 and video["type"] == "video/mp4" and video["bytes"] > 10_000, video
    assert manifest["status"] == 200 and "窗口投诉核查" in manifest["text"], manifest
    size = await item.locator(".pb-export-size").inner_text()
    note("export", f"6 s marked by shift+drag: {video['bytes']} bytes, shown as {size}")


async def sample_drift(page: Page, seconds: float) -> list[float]:
    """Differences (ms) between the two hall cameras' burnt-in clocks, read in one go, over seconds."""
    drifts = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        clocks, _ = await read_tiles(page, HALL_CAMERAS)
        if clocks[0] is not None and clocks[1] is not None:
            drifts.append(clocks[0] - clocks[1])
        await asyncio.sleep(0.15)
    return drifts


async def test_an_alarms_play_back_button_plays_from_ten_seconds_before_it(
    recorded: Recorded, new_page: PageFactory
) -> None:
    alarm = await recorded.door_alarm()
    at = _ms(alarm["at"])
    page = await new_page(1600, 900)
    await page.goto(recorded.url, wait_until="domcontentloaded")
    await login(page, recorded.operator)
    item = page.locator(f'#alarm-list .alarm[data-alarm-id="{alarm["id"]}"]')
    await item.locator('button[data-action="playback"]').click()
    await expect(page.locator("section#playback")).to_be_visible()
    await expect(page.locator("#pb-source")).to_have_value(f"camera:{DOOR}")
    await page.locator("#pb-play").click()  # pause: the picture stays at the moment asked for
    await wait_playing(page, (DOOR,))
    shown = await read_clock_settled(page, DOOR)
    note("alarm play-back", f"picture {shown - (at - 10000):+.0f} ms from 10 s before the alarm")
    assert abs(shown - (at - 10000)) < MATCH_MS, f"alarm at {at}, the picture shows {shown}"
    marker = page.locator(f'#pb-timeline .tl-lane[data-camera="{DOOR}"] .tl-alarm[data-kind="stalled"]')
    await expect(marker.first).to_be_attached()


async def test_a_viewer_has_no_playback(recorded: Recorded, new_page: PageFactory) -> None:
    await recorded.door_alarm()
    page = await new_page()
    await page.goto(recorded.url, wait_until="domcontentloaded")
    await login(page, recorded.viewer)
    await expect(page.locator("#nav-wall")).to_be_visible()
    await expect(page.locator("#nav-playback")).to_be_hidden()
    await expect(page.locator("section#playback")).to_be_hidden()
    assert await page.evaluate("window.hallwatch.playback()") is None
    await expect(page.locator("#alarm-list .alarm").first).to_be_attached(timeout=10_000)
    await expect(page.locator('#alarm-list button[data-action="playback"]')).to_have_count(0)


async def test_the_view_speaks_chinese_first_and_english_by_the_switch(
    recorded: Recorded, new_page: PageFactory
) -> None:
    await recorded.door_alarm()
    page = await new_page()
    await page.goto(recorded.url, wait_until="domcontentloaded")
    await login(page, recorded.operator)
    nav = page.locator("#nav-playback")
    await nav.focus()
    await page.keyboard.press("Enter")
    view = page.locator("section#playback")
    await expect(view).to_be_visible()
    await expect(page.locator("#pb-source")).to_be_focused()
    await choose(page, "camera:clock-1", ("clock-1",))

    zh = {
        "#nav-playback": "录像回放",
        "#playback-title": "录像回放",
        "#pb-play": "暂停",
        "#pb-mark-in": "标记起点",
        "#pb-mark-out": "标记终点",
        "#pb-export-button": "导出所选时段",
        "#pb-exports-title": "导出记录",
        "#pb-moment": "在时间轴上点击开始回放",
        "#pb-timeline .tl-window": "24 小时",
    }
    en = {
        "#nav-playback": "Playback",
        "#pb-play": "Pause",
        "#pb-mark-in": "Mark in",
        "#pb-export-button": "Export the range",
        "#pb-timeline .tl-window": "24 hours",
    }
    for selector, text in zh.items():
        await expect(page.locator(selector)).to_have_text(text)
    await expect(page.locator("#pb-reason")).to_have_attribute("placeholder", "导出原因（可选）")
    await expect(page.locator("#pb-timeline .tl-tracks")).to_have_attribute("aria-label", "时间轴")
    await expect(page.locator('#alarm-list button[data-action="playback"]').first).to_have_text("回放")
    assert_no_keys(await view.inner_text())

    await page.locator("button#lang").click()
    for selector, text in en.items():
        await expect(page.locator(selector)).to_have_text(text)
    await expect(page.locator('#alarm-list button[data-action="playback"]').first).to_have_text("Play back")
    assert_no_keys(await view.inner_text())
    await page.locator("button#lang").click()
    await expect(page.locator("#pb-play")).to_have_text("暂停")

    # The keyboard: Left on the timeline plays from 10 s earlier; Esc closes the view.
    await page.locator("#pb-time").fill(local_hms(time.time() * 1000 - 6000))
    await page.locator("#pb-time").press("Enter")
    before = (await wait_playing(page, ("clock-1",)))["moment"]
    slider = page.locator("#pb-timeline .tl-tracks")
    await slider.focus()
    await page.keyboard.press("ArrowLeft")

    async def stepped_back() -> float | None:
        moment = (await playback(page))["moment"]
        return moment if moment is not None and moment < before - 5000 else None

    await wait_until(page, stepped_back, 5, "playing from 10 s earlier")
    await page.keyboard.press("Escape")
    await expect(view).to_be_hidden()
    await expect(page.locator("section.center")).to_be_visible()
    await expect(nav).to_be_focused()


def assert_no_keys(text: str) -> None:
    """No string key shows through where a translation is missing."""
    for prefix in ("playback.", "timeline.", "exports.", "nav."):
        assert prefix not in text, f"untranslated {prefix}* in: {text}"
