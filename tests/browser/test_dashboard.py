"""The centre dashboards in real Chromium against the real service: logins per centre, the
video wall decoding over WebRTC, a camera dying and coming back, the MJPEG fallback,
who may acknowledge alarms, and a full 16-tile wall (with CPU figures and screenshots
written under ``test-output/``)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from playwright.async_api import Page, WebSocket, expect

from tests.browser.conftest import (
    ALL_CAMERA_IDS,
    CAMERAS,
    CENTRE_NAMES,
    HALLS,
    MEIZHOU_HALLS,
    OUTPUT_DIR,
    VICTIM,
    PageFactory,
    Site,
    assert_decoding,
    chromium_processes,
    cpu_seconds,
    login,
    open_dashboard,
    page_log,
    tiles,
    wait_until,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

TAX = [f"tax-{n}" for n in range(1, 5)]
WATCHDOG_BOUND = 1.5 + 3 + 6
"""stall_timeout + offline_after of the site, plus the page's own polling and push delay."""
WALL_TILES = "section#wall div.tile"
NO_WEBRTC = (
    "delete window.RTCPeerConnection; delete window.webkitRTCPeerConnection;"
    " delete window.MediaSource; delete window.ManagedMediaSource;"
)
"""A browser with neither WebRTC nor MSE: MJPEG is all that is left."""


def cameras_of(*halls: str) -> list[str]:
    return [camera_id for camera_id, _, hall, _ in CAMERAS if hall in halls]


async def hall_ids(page: Page) -> set[str]:
    found: list[str] = await page.eval_on_selector_all(
        "nav#hall-tree [data-hall]", "els => els.map(e => e.dataset.hall)"
    )
    return set(found)


async def wall_cameras(page: Page) -> list[str]:
    found: list[str] = await page.eval_on_selector_all(
        WALL_TILES, "els => els.map(e => e.dataset.camera || '')"
    )
    return found


async def settle(
    page: Page, read: Callable[[Page], Awaitable[Any]], expected: Any, timeout: float = 10
) -> Any:
    """Poll ``read()`` until it equals ``expected`` or the time is up; return the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await read(page)
        if value == expected or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(0.2)


async def choose_layout(page: Page, layout: int) -> None:
    await page.locator(f'button[data-layout-choice="{layout}"]').click()

    async def shown() -> bool:
        wall = page.locator("section#wall")
        return (
            await wall.get_attribute("data-layout") == str(layout)
            and await page.locator(WALL_TILES).count() == layout
        )

    await wait_until(page, shown, 5, f"section#wall showing layout {layout}")


async def show_hall(page: Page, hall: str, layout: int = 4) -> None:
    """Choose the layout, then click the hall in the tree: its cameras fill the wall."""
    await choose_layout(page, layout)
    await page.locator(f'nav#hall-tree [data-hall="{hall}"]').first.click()
    expected = cameras_of(hall)
    shown = await settle(page, _sorted_cameras, sorted(expected))
    assert shown == sorted(expected), f"clicking hall {hall} showed {shown}\n{page_log(page)}"


async def _sorted_cameras(page: Page) -> list[str]:
    return sorted(c for c in await wall_cameras(page) if c)


async def alarm_items(page: Page) -> list[dict[str, str]]:
    found: list[dict[str, str]] = await page.eval_on_selector_all(
        "aside#alarms [data-alarm-id]",
        """els => els.map(e => ({id: e.dataset.alarmId, kind: e.dataset.kind,
            acknowledged: e.dataset.acknowledged, text: e.textContent,
            ack: !!e.querySelector('button[data-action="ack"]')}))""",
    )
    return found


async def tile_attr(page: Page, camera: str, name: str) -> str | None:
    return await page.locator(f'section#wall div.tile[data-camera="{camera}"]').get_attribute(name)


async def test_each_centre_sees_its_own_halls(site: Site, new_page: PageFactory) -> None:
    cases = [
        ("meizhou", "viewer", set(MEIZHOU_HALLS), "police"),
        ("xingning", "operator", set(HALLS), "veterans"),
    ]
    for centre, role, halls, hall_to_play in cases:
        username, _ = await site.account(centre, role)
        page = await new_page()
        await open_dashboard(page, site)
        await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        await login(page, username)
        await expect(page.locator("#centre-name")).to_have_text(CENTRE_NAMES[centre])
        await expect(page.locator("#user-name")).to_contain_text(username)
        shown = await settle(page, hall_ids, halls)
        assert shown == halls, f"{username} sees halls {sorted(shown)}"
        for hall in halls:
            count = page.locator(f'nav#hall-tree [data-hall="{hall}"] .count').first
            total = len(cameras_of(hall))
            await expect(count).to_have_text(f"{total}/{total}", timeout=10_000)
        items: list[str] = await page.eval_on_selector_all(
            "nav#hall-tree [data-camera-item]", "els => els.map(e => e.dataset.cameraItem)"
        )
        assert set(items) == set(cameras_of(*halls)), f"{username}'s tree lists cameras {sorted(items)}"

        await show_hall(page, hall_to_play)
        await assert_decoding(page, cameras_of(hall_to_play))
        await expect(page.locator("#status-health")).to_have_text("就绪", timeout=10_000)

        await page.locator("button#lang").click()
        await expect(page.locator("html")).to_have_attribute("lang", "en")
        await expect(page.locator("#centre-name")).to_have_text(CENTRE_NAMES[centre])
        await expect(page.locator("#status-health")).to_have_text("ready", timeout=10_000)
        await page.locator("button#lang").click()
        await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")

    # The last one logs out: back to the login form.
    await page.locator("button#logout").click()
    await expect(page.locator("form#login")).to_be_visible()
    await expect(page.locator("#app")).to_be_hidden()


async def test_each_hall_shows_its_second_plate_in_the_tree_and_on_its_tiles(
    site: Site, new_page: PageFactory
) -> None:
    username, _ = await site.account("xingning", "viewer")
    page = await new_page()
    await open_dashboard(page, site)
    await login(page, username)
    await settle(page, hall_ids, set(HALLS))
    for hall, (name, department, plate) in HALLS.items():
        row = page.locator(f'nav#hall-tree [data-hall="{hall}"]')
        await expect(row.locator(".hall-name")).to_have_text(name)
        await expect(row.locator(".hall-plate")).to_have_text(plate)
        await expect(row.locator(".hall-plate")).to_be_visible()
        await expect(row.locator(".hall-dept")).to_have_text(department)
        assert plate in (await row.get_attribute("aria-label") or "")

    await show_hall(page, "veterans")
    plate = HALLS["veterans"][2]
    for camera in cameras_of("veterans"):
        tile = page.locator(f'section#wall div.tile[data-camera="{camera}"]')
        await expect(tile.locator(".tile-plate")).to_have_text(plate)
        await expect(tile.locator(".tile-plate")).to_be_visible()
        assert plate in (await tile.get_attribute("aria-label") or "")
    box = await page.locator("section#wall div.tile .tile-plate").first.bounding_box()
    assert box is not None and box["width"] > 40 and box["height"] > 8, box
    OUTPUT_DIR.mkdir(exist_ok=True)
    await page.screenshot(path=str(OUTPUT_DIR / "hall-plates.png"))


async def test_four_real_cameras_decode_over_webrtc(site: Site, new_page: PageFactory) -> None:
    username, _ = await site.account("xingning", "operator")
    page = await new_page(1920, 1080)
    await open_dashboard(page, site)
    await login(page, username)
    await show_hall(page, "tax", 4)

    readings = await assert_decoding(page, TAX, mode="webrtc")
    for tile in readings:
        assert (tile["width"], tile["height"]) == (640, 360), tile

    # Read the <video> elements themselves too, not only the test hook.
    script = """tiles => tiles.map(t => { const v = t.querySelector('video');
        return {camera: t.dataset.camera, mode: t.dataset.mode, fps: Number(t.dataset.fps),
                width: v ? v.videoWidth : 0,
                frames: v ? v.getVideoPlaybackQuality().totalVideoFrames : 0}; })"""
    first = {v["camera"]: v for v in await page.eval_on_selector_all(WALL_TILES, script)}

    async def moving() -> list[dict[str, Any]] | None:
        now = await page.eval_on_selector_all(WALL_TILES, script)
        ok = all(
            v["mode"] == "webrtc"
            and v["width"] == 640
            and v["frames"] > first[v["camera"]]["frames"]
            and v["fps"] >= 10
            for v in now
        )
        return now if ok else None

    await wait_until(page, moving, 10, "<video> frames rising, data-fps >= 10 on every tile")
    names = {camera_id: name for camera_id, name, _, _ in CAMERAS}
    for camera in TAX:
        title = page.locator(f'section#wall div.tile[data-camera="{camera}"] .tile-title')
        await expect(title).to_contain_text(names[camera])
        await expect(title).to_contain_text(HALLS["tax"][0])


async def test_dead_camera_goes_offline_raises_an_alarm_and_recovers(
    site: Site, new_page: PageFactory
) -> None:
    username, _ = await site.account("xingning", "operator")
    page = await new_page(1920, 1080)
    await open_dashboard(page, site)
    await login(page, username)
    await show_hall(page, "tax", 4)
    await assert_decoding(page, TAX, mode="webrtc")
    known = {item["id"] for item in await alarm_items(page)}

    killed = time.monotonic()
    site.victim.kill()
    try:
        await wait_until(
            page,
            lambda: _tile_in_state(page, VICTIM, "offline"),
            WATCHDOG_BOUND,
            f"tile of {VICTIM} showing data-state=offline",
        )
        offline_after = time.monotonic() - killed

        async def new_alarm() -> list[dict[str, str]] | None:
            fresh = [a for a in await alarm_items(page) if a["id"] not in known and a["kind"] == "offline"]
            return fresh or None

        alarms = await wait_until(page, new_alarm, WATCHDOG_BOUND, "a new offline alarm in aside#alarms")
        alarm_after = time.monotonic() - killed
        assert alarms[0]["acknowledged"] == "false", alarms
        count = await page.locator("#alarm-count").inner_text()
        assert count.strip().isdigit() and int(count) >= 1, f"#alarm-count is {count!r}"
        state_text = await page.locator(
            f'section#wall div.tile[data-camera="{VICTIM}"] .tile-state'
        ).inner_text()
        assert "离线" in state_text and re.search(r"\d\d:\d\d:\d\d", state_text), (
            f"offline tile says {state_text!r}, not 离线 with the time since when"
        )
        await wait_until(page, lambda: _status_online(page, "15/16"), WATCHDOG_BOUND, "#status-online 15/16")
        OUTPUT_DIR.mkdir(exist_ok=True)
        await page.screenshot(path=OUTPUT_DIR / "dashboard-4-offline-1920x1080.png")
        # The other cameras keep playing.
        await assert_decoding(page, TAX[:3], mode="webrtc")
    finally:
        restarted = time.monotonic()
        await asyncio.to_thread(site.victim.start)

    await wait_until(
        page, lambda: _tile_in_state(page, VICTIM, "online"), 30, f"tile of {VICTIM} online again, no click"
    )
    await assert_decoding(page, [VICTIM], timeout=30)
    recovered_after = time.monotonic() - restarted
    await wait_until(page, lambda: _status_online(page, "16/16"), WATCHDOG_BOUND, "#status-online 16/16")
    _note(
        "dead camera",
        f"tile offline {offline_after:.1f} s after the kill, alarm shown after {alarm_after:.1f} s; "
        f"playing again {recovered_after:.1f} s after the restart",
    )


async def _status_online(page: Page, expected: str) -> bool:
    return (await page.locator("#status-online").inner_text()).strip() == expected


async def _tile_in_state(page: Page, camera: str, state: str) -> bool:
    return await tile_attr(page, camera, "data-state") == state


async def test_without_webrtc_the_tiles_fall_back_to_mjpeg(site: Site, new_page: PageFactory) -> None:
    username, _ = await site.account("xingning", "viewer")
    page = await new_page(init_script=NO_WEBRTC)
    sockets: list[str] = []

    def on_socket(ws: WebSocket) -> None:
        sockets.append(ws.url)

    page.on("websocket", on_socket)
    await open_dashboard(page, site)
    assert await page.evaluate("typeof window.RTCPeerConnection") == "undefined"
    await login(page, username)
    # Nine tiles: more MJPEG streams than a browser's six connections per host would carry.
    await choose_layout(page, 9)
    occupied = page.locator("section#wall div.tile[data-camera]:not([data-camera=''])")
    for _ in range(9):  # clear whatever the user's saved wall held, from the keyboard
        if not await occupied.count():
            break
        await occupied.first.press("Delete")
    await expect(occupied).to_have_count(0)
    chosen = ALL_CAMERA_IDS[:9]
    for camera in chosen:
        await page.locator(f'nav#hall-tree [data-camera-item="{camera}"]').first.click()
    placed = await settle(page, _sorted_cameras, sorted(chosen))
    assert placed == sorted(chosen), f"clicking nine cameras placed {placed}"

    await assert_decoding(page, chosen, timeout=30, mode="mjpeg")
    for camera in chosen:
        tile = page.locator(f'section#wall div.tile[data-camera="{camera}"]')
        await expect(tile).to_contain_text("MJPEG")

    async def measured_fps() -> list[int] | None:
        fps = [
            int(f or 0)
            for f in await page.eval_on_selector_all(WALL_TILES, "els => els.map(e => e.dataset.fps)")
        ]
        return fps if all(f >= 1 for f in fps) else None

    await wait_until(page, measured_fps, 10, "data-fps >= 1 on every MJPEG tile")

    async def viewers_counted() -> int | None:
        text = (await page.locator("#status-viewers").inner_text()).strip()
        return int(text) if text.isdigit() and int(text) >= len(chosen) else None

    await wait_until(page, viewers_counted, 10, f"#status-viewers counting the {len(chosen)} MJPEG viewers")
    OUTPUT_DIR.mkdir(exist_ok=True)
    await page.screenshot(path=OUTPUT_DIR / "dashboard-9-mjpeg-1366x768.png")
    mjpeg_sockets = [url for url in sockets if url.endswith("/mjpeg.ws")]
    assert len(mjpeg_sockets) >= 9, f"MJPEG WebSockets opened: {sockets}"


async def test_only_operators_acknowledge_and_it_is_audited(site: Site, new_page: PageFactory) -> None:
    viewer, viewer_api = await site.account("meizhou", "viewer")
    operator, operator_api = await site.account("meizhou", "operator")
    site.victim.kill()
    try:

        async def unacknowledged() -> list[dict[str, Any]] | None:
            res = await operator_api.get("/api/v1/alarms", params={"unacknowledged": "true"})
            assert res.status_code == 200, res.text
            body = res.json()
            listed = body["alarms"] if isinstance(body, dict) else body
            found = [a for a in listed if a["camera_id"] == VICTIM and a["kind"] == "offline"]
            return found or None

        deadline = time.monotonic() + WATCHDOG_BOUND
        alarms = await unacknowledged()
        while not alarms and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            alarms = await unacknowledged()
        assert alarms, f"no unacknowledged offline alarm for {VICTIM} within {WATCHDOG_BOUND:g} s"
        alarm_id = str(alarms[0]["id"])
        item = f'aside#alarms [data-alarm-id="{alarm_id}"]'

        # The viewer: sees the alarm and the video, has no ack or snapshot button, and the API agrees.
        watcher = await new_page()
        await open_dashboard(watcher, site)
        await login(watcher, viewer)
        await show_hall(watcher, "tax", 4)
        await assert_decoding(watcher, TAX[:3])
        await expect(watcher.locator(item)).to_have_count(1, timeout=10_000)
        await expect(watcher.locator('button[data-action="ack"]')).to_have_count(0)
        await expect(watcher.locator('button[data-action="snapshot"]')).to_have_count(0)
        refused = await viewer_api.post(f"/api/v1/alarms/{alarm_id}/ack")
        assert refused.status_code == 403, refused.text
        snapshot = await viewer_api.get(f"/api/v1/cameras/{TAX[0]}/snapshot.jpg")
        assert snapshot.status_code == 403, snapshot.status_code

        # The operator: snapshot buttons on the tiles, acknowledges with a click.
        page = await new_page()
        await open_dashboard(page, site)
        await login(page, operator)
        await show_hall(page, "tax", 4)
        await assert_decoding(page, TAX[:3])
        await expect(page.locator('section#wall div.tile button[data-action="snapshot"]')).to_have_count(4)
        await page.locator(f'{item} button[data-action="ack"]').click()
        await expect(page.locator(item)).to_have_attribute("data-acknowledged", "true", timeout=10_000)
        await expect(page.locator(f'{item} button[data-action="ack"]')).to_have_count(0)
        # Pushed to the viewer's page too.
        await expect(watcher.locator(item)).to_have_attribute("data-acknowledged", "true", timeout=10_000)

        res = await operator_api.get("/api/v1/audit", params={"action": "alarm_ack"})
        assert res.status_code == 200, res.text
        by = [r for r in res.json() if r["username"] == operator]
        assert by, f"no alarm_ack audit record by {operator}: {res.json()}"
    finally:
        if not site.victim.running:
            await asyncio.to_thread(site.victim.start)
        await site.wait_online([VICTIM])


async def test_sixteen_tiles_decode_and_fit_the_screen(site: Site, new_page: PageFactory) -> None:
    username, api = await site.account("xingning", "operator")
    saved = await api.put("/api/v1/layouts/current", json={"layout": 16, "tiles": ALL_CAMERA_IDS})
    assert saved.status_code in (200, 204), saved.text
    page = await new_page(1920, 1080)
    await open_dashboard(page, site)
    started = time.monotonic()
    await login(page, username)
    await expect(page.locator("section#wall")).to_have_attribute("data-layout", "16", timeout=10_000)
    assert await settle(page, wall_cameras, ALL_CAMERA_IDS) == ALL_CAMERA_IDS, (
        "the saved wall was not restored"
    )

    await assert_decoding(page, ALL_CAMERA_IDS, timeout=40, mode="webrtc")
    all_playing = time.monotonic() - started
    assert chromium_processes(), "no Chromium process found under this process"
    browser_cpu, service_cpu, window = await cpu_seconds(5)
    readings = await tiles(page)
    await assert_decoding(page, ALL_CAMERA_IDS, mode="webrtc")

    OUTPUT_DIR.mkdir(exist_ok=True)
    shots = []
    for width, height in ((1920, 1080), (1366, 768)):
        await page.set_viewport_size({"width": width, "height": height})
        await assert_decoding(page, ALL_CAMERA_IDS)
        path = OUTPUT_DIR / f"dashboard-16-{width}x{height}.png"
        await page.screenshot(path=path)
        shots.append(path.name)
        fit = await page.evaluate(
            """() => { const r = document.querySelector('section#wall').getBoundingClientRect();
            return {scrollWidth: document.documentElement.scrollWidth, innerWidth,
                    innerHeight, right: r.right, bottom: r.bottom}; }"""
        )
        assert fit["scrollWidth"] <= fit["innerWidth"], f"horizontal overflow at {width}x{height}: {fit}"
        assert fit["right"] <= width + 1 and fit["bottom"] <= height + 1, (
            f"wall cut off at {width}x{height}: {fit}"
        )

    fps = [int(t) for t in await page.eval_on_selector_all(WALL_TILES, "els => els.map(e => e.dataset.fps)")]
    _note(
        "16-tile wall",
        f"all 16 tiles decoding {all_playing:.1f} s after login; over {window:.1f} s Chromium used "
        f"{100 * browser_cpu / window:.0f} % of a core ({len(chromium_processes())} processes), the service "
        f"process {100 * service_cpu / window:.0f} %; tile fps {fps}; screenshots {', '.join(shots)}; "
        f"tiles: {json.dumps(readings, ensure_ascii=False)}",
    )


def _note(what: str, text: str) -> None:
    """Append a measurement to ``test-output/browser-report.txt``."""
    OUTPUT_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with (OUTPUT_DIR / "browser-report.txt").open("a", encoding="utf-8") as report:
        report.write(f"{stamp} {what}: {text}\n")


async def test_keyboard_alone_places_and_clears_a_camera_and_an_expired_session_returns_to_login(
    site: Site, new_page: PageFactory
) -> None:
    username, _ = await site.account("meizhou", "viewer")
    page = await new_page()
    await open_dashboard(page, site)
    await login(page, username)
    await choose_layout(page, 4)
    tile = page.locator('section#wall div.tile[data-tile="0"]')
    await tile.focus()
    await page.keyboard.press("Delete")
    await expect(tile).to_have_attribute("data-camera", "")

    # The tree is reachable and usable from the keyboard: focus a camera, press Enter.
    item = page.locator('nav#hall-tree [data-camera-item="police-1"]')
    await item.focus()
    assert await item.evaluate("e => e === document.activeElement"), "camera items take focus"
    await page.keyboard.press("Enter")
    placed = page.locator('section#wall div.tile[data-camera="police-1"]')
    await expect(placed).to_have_count(1)
    await assert_decoding(page, ["police-1"])
    await placed.focus()
    await page.keyboard.press("Delete")
    await expect(placed).to_have_count(0)

    # The session ends behind the page's back: the next request is refused, and the page
    # goes back to the login form with a message instead of breaking.
    await page.context.clear_cookies()
    await expect(page.locator("form#login")).to_be_visible(timeout=10_000)
    await expect(page.locator("#app")).to_be_hidden()
    await expect(page.locator("#login-error")).not_to_be_empty()
    assert not [t for t in await tiles(page) if t.get("status") == "playing"], "players stopped"
