"""Fixtures and helpers for the dashboard tests in a real browser.

``browser`` is Debian's Chromium (``/usr/bin/chromium``) driven by Playwright's
async API, one per test session; ``site`` is the real service on 127.0.0.1 with
two centres and sixteen cameras in the eight halls: four real RTSP cameras
(GStreamer test servers, the fourth on a server of its own so a test can kill
it) and twelve small ``demo://`` cameras. Everything runs on pytest-asyncio's
session event loop: the service, the browser driver and the tests share it, so
nothing here may block that loop for long (the RTSP servers start in a thread).

The helpers (``login``, ``tiles``, ``wait_until``, ``assert_decoding``,
``cpu_seconds``) read the page through the DOM contract and the read-only
``window.hallwatch`` test hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Response,
    WebSocket,
    async_playwright,
)

from streams import IngestState
from tests.app_fixtures import USER_PASSWORD, RunningApp, serve_app
from tests.rtsp_fixtures import RtspServerUnavailable, RtspTestServer, check_gstreamer

T = TypeVar("T")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
"""Playwright adds ``--user-data-dir`` with a fresh temporary profile of its own (it refuses the flag)."""

INSTALL_HINT = "run scripts/install-test-deps.sh (as root): it installs Debian's chromium"
OUTPUT_DIR = Path(__file__).resolve().parents[2] / "test-output"
"""Screenshots and measurements of the browser tests (git-ignored)."""

CAMERA_SPEC = "640x360@25,800k,gop=25"
RTSP_CAMERAS = ("tax-1", "tax-2", "tax-3")
VICTIM = "tax-4"
"""The real camera on an RTSP server of its own: tests kill and restart it."""

CENTRE_NAMES = {"meizhou": "梅州市政务服务中心", "xingning": "兴宁市政务服务中心"}
HALLS = {
    "social-insurance": (
        "兴宁市社会保险基金管理局办事大厅",
        "市社会保险基金管理局",
        "兴宁市政务服务中心社保分厅",
    ),
    "employment": ("兴宁市公共就业服务中心", "市人力资源社会保障局", "兴宁市政务服务中心就业分厅"),
    "police": ("兴宁市公安局综合办证大厅", "市公安局", "兴宁市政务服务中心公安分厅"),
    "medical-insurance": ("兴宁市医疗保障事业管理中心服务大厅", "市医疗保障局", "兴宁市政务服务中心医保分厅"),
    "veterans": ("兴宁市退役军人服务中心", "市退役军人事务局", "兴宁市政务服务中心退役军人分厅"),
    "disabled-persons": ("兴宁市残疾人联合会服务大厅", "市残联", "兴宁市政务服务中心残联分厅"),
    "tax": ("国家税务总局兴宁市税务局第一税务分厅办税服务厅", "市税务局", "兴宁市政务服务中心税务分厅"),
    "legal-services": ("兴宁市公共法律服务中心", "市司法局", "兴宁市政务服务中心公共法律服务分厅"),
}
"""The plan's eight halls: name, supervising department and second plate, as in the embedded config."""
MEIZHOU_HALLS = ("tax", "social-insurance", "police")
CAMERA_NAMES = ("大厅全景", "窗口区", "取号区", "门口")
DEMO_CAMERAS = {
    "social-insurance": 2,
    "employment": 2,
    "police": 2,
    "medical-insurance": 2,
    "veterans": 2,
    "disabled-persons": 1,
    "legal-services": 1,
}
"""Twelve demo cameras: with the four real ones in ``tax``, sixteen for a full 16-tile wall."""


def _camera_ids() -> list[tuple[str, str, str, str]]:
    """(camera id, name, hall, url placeholder) for every camera; RTSP urls are filled in later."""
    cameras = [(f"tax-{n}", CAMERA_NAMES[n - 1], "tax", "") for n in range(1, 5)]
    for hall, count in DEMO_CAMERAS.items():
        for n in range(1, count + 1):
            camera_id = f"{hall}-{n}"
            url = f"demo://{camera_id}?size=320x180&fps=25&gop=25"
            cameras.append((camera_id, CAMERA_NAMES[n - 1], hall, url))
    return cameras


CAMERAS = _camera_ids()
ALL_CAMERA_IDS = [camera_id for camera_id, _, _, _ in CAMERAS]


def site_yaml(rtsp_urls: dict[str, str]) -> str:
    halls = "".join(
        f"  - id: {hall}\n    name: {name}\n    department: {dept}\n    plate: {plate}\n"
        for hall, (name, dept, plate) in HALLS.items()
    )
    cameras = "".join(
        f"  - id: {camera_id}\n    name: {name}\n    hall: {hall}\n    url: {url or rtsp_urls[camera_id]}\n"
        for camera_id, name, hall, url in CAMERAS
    )
    return f"""
webrtc:
  ice_host_addresses: ["127.0.0.1"]
  session_timeout: 3
ingest:
  connect_timeout: 1
  read_timeout: 1
  stall_timeout: 1.5
  offline_after: 3
  backoff_initial: 0.3
  backoff_max: 1
centres:
  - id: meizhou
    name: {CENTRE_NAMES["meizhou"]}
    halls: [{", ".join(MEIZHOU_HALLS)}]
  - id: xingning
    name: {CENTRE_NAMES["xingning"]}
    halls: all
halls:
{halls}cameras:
{cameras}"""


# -- the browser -------------------------------------------------------------------


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, with the flags that work on a loopback-only machine."""
    if not CHROMIUM.is_file():  # noqa: ASYNC240 (one stat before the session starts)
        pytest.fail(f"{CHROMIUM} is missing; {INSTALL_HINT}", pytrace=False)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS, timeout=30_000
        )
        try:
            yield chromium
        finally:
            await chromium.close()


PageFactory = Callable[..., Awaitable[Page]]


@dataclass
class PageLog:
    """What a page did and said, with seconds since it opened: console errors and warnings,
    uncaught exceptions, API answers (not the routine polls unless they failed), WebSockets."""

    opened: float = field(default_factory=time.monotonic)
    lines: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.lines.append(f"{time.monotonic() - self.opened:7.3f} {text}")

    def __str__(self) -> str:
        return "\n".join(self.lines[-40:]) or "(nothing)"


_logs: dict[int, PageLog] = {}
_POLLS = ("/api/v1/status", "/api/v1/cameras")


def page_log(page: Page) -> PageLog:
    return _logs.setdefault(id(page), PageLog())


def _watch(page: Page) -> None:
    log = page_log(page)

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type in ("error", "warning") or (msg.type == "info" and msg.text.startswith("camera ")):
            log.add(f"console.{msg.type}: {msg.text}")  # the players say why a mode ended

    def on_response(res: Response) -> None:
        path = res.url.split("?")[0]
        if "/api/" in path and (res.status >= 400 or not path.endswith(_POLLS)):
            log.add(f"{res.request.method} {res.url} -> {res.status}")

    def on_socket(ws: WebSocket) -> None:
        log.add(f"websocket {ws.url}")
        ws.on("close", lambda _: log.add(f"websocket closed {ws.url}"))

    page.on("console", on_console)
    page.on("pageerror", lambda err: log.add(f"pageerror: {err}"))
    page.on("response", on_response)
    page.on("websocket", on_socket)
    page.on("requestfailed", lambda req: log.add(f"requestfailed: {req.method} {req.url} {req.failure}"))


@pytest_asyncio.fixture(loop_scope="session")
async def new_page(browser: Browser) -> AsyncIterator[PageFactory]:
    """Factory: ``page = await new_page(width=1366, height=768)``, a fresh context (no cookies) each;
    every context it opened is closed at teardown."""
    async with _pages(browser) as factory:
        yield factory


UDP_BLOCKED_FLAG = "--webrtc-ip-handling-policy=disable_non_proxied_udp"
"""WebRTC may not use UDP except through a proxy (there is none): a network that blocks UDP.
The relay's ICE agent (aiortc) has no ICE-TCP, so WebRTC cannot connect at all."""


@pytest_asyncio.fixture(loop_scope="session")
async def new_page_without_udp(browser: Browser) -> AsyncIterator[PageFactory]:
    """Like ``new_page``, in a second Chromium launched with :data:`UDP_BLOCKED_FLAG`."""
    blocked = await browser.browser_type.launch(
        executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_FLAGS, UDP_BLOCKED_FLAG], timeout=30_000
    )
    try:
        async with _pages(blocked) as factory:
            yield factory
    finally:
        await blocked.close()


@contextlib.asynccontextmanager
async def _pages(browser: Browser) -> AsyncIterator[PageFactory]:
    contexts: list[BrowserContext] = []

    async def factory(width: int = 1366, height: int = 768, init_script: str | None = None) -> Page:
        context = await browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN")
        contexts.append(context)
        if init_script is not None:
            await context.add_init_script(init_script)
        page = await context.new_page()
        _watch(page)
        return page

    try:
        yield factory
    finally:
        await _close_contexts(contexts)


async def _close_contexts(contexts: list[BrowserContext]) -> None:
    for context in contexts:
        for page in context.pages:
            _logs.pop(id(page), None)
        with contextlib.suppress(Exception):
            await context.close()


# -- the service -------------------------------------------------------------------


@dataclass
class Site:
    """The running service and its real cameras."""

    app: RunningApp
    servers: dict[str, RtspTestServer]
    """The RTSP server of each real camera (``tax-1``..``tax-3`` share one)."""
    _created: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return self.app.base_url + "/"

    @property
    def victim(self) -> RtspTestServer:
        return self.servers[VICTIM]

    async def account(self, centre: str, role: str) -> tuple[str, httpx.AsyncClient]:
        """The user ``<role>-<centre>`` (created on first use) and an API client logged in as it."""
        username = f"{role}-{centre}"
        if username in self._created:
            return username, await self.app.login(username)
        client = await self.app.user(centre, role)
        self._created.add(username)
        return username, client

    def state(self, camera_id: str) -> IngestState:
        return self.app.manager.stats(camera_id).state

    async def wait_online(self, camera_ids: Iterable[str], timeout: float = 30) -> None:
        await self.app.wait_online(*camera_ids, within=timeout)


@contextlib.asynccontextmanager
async def rtsp_servers(*servers: RtspTestServer) -> AsyncIterator[None]:
    """Start the servers side by side (in threads, off the loop); stop them all at the end.
    Fails the test at once when GStreamer's RTSP server is not installed."""
    try:
        check_gstreamer()
    except RtspServerUnavailable as err:
        pytest.fail(str(err), pytrace=False)
    try:
        await asyncio.gather(*(asyncio.to_thread(server.start) for server in servers))
        yield
    finally:
        for server in servers:
            await asyncio.to_thread(server.stop)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def site() -> AsyncIterator[Site]:
    """The service with its sixteen cameras, all online."""
    shared = RtspTestServer({camera_id: CAMERA_SPEC for camera_id in RTSP_CAMERAS})
    victim = RtspTestServer({VICTIM: CAMERA_SPEC})
    async with rtsp_servers(shared, victim):
        servers = {camera_id: shared for camera_id in RTSP_CAMERAS} | {VICTIM: victim}
        urls = {camera_id: server.url(camera_id) for camera_id, server in servers.items()}
        async with serve_app(site_yaml(urls)) as app:
            running = Site(app, servers)
            await running.wait_online(ALL_CAMERA_IDS)
            yield running


# -- helpers -----------------------------------------------------------------------


def note(report: str, what: str, text: str) -> None:
    """Print a measurement and append it to ``test-output/<report>``."""
    OUTPUT_DIR.mkdir(exist_ok=True)
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {what}: {text}"
    print(line)
    with (OUTPUT_DIR / report).open("a", encoding="utf-8") as out:
        out.write(line + "\n")


async def open_dashboard(page: Page, site: Site) -> None:
    await page.goto(site.url, wait_until="domcontentloaded")


async def login(page: Page, username: str, password: str = USER_PASSWORD) -> None:
    """Fill ``form#login`` and wait for the centre view: ``#app`` visible, the form hidden, the
    user's saved wall fetched (``GET /api/v1/layouts/current``) and its tiles on the page."""
    form = page.locator("form#login")
    await form.wait_for(state="visible", timeout=10_000)
    await form.locator("input[name=username]").fill(username)
    await form.locator("input[name=password]").fill(password)
    try:
        # The wall is ready once the user's saved layout has been fetched (and restored).
        async with page.expect_response(_saved_layout, timeout=10_000) as saved:
            await form.locator("button[type=submit]").click()
        await (await saved.value).finished()
        await page.locator("#app").wait_for(state="visible", timeout=10_000)
        await form.wait_for(state="hidden", timeout=5_000)
        await page.wait_for_function(
            """() => { const wall = document.querySelector('section#wall');
                return wall && wall.querySelectorAll('div.tile').length === Number(wall.dataset.layout); }""",
            timeout=5_000,
        )
    except Exception as err:
        error = await page.locator("#login-error").all_inner_texts()
        raise AssertionError(
            f"login as {username} failed: #login-error={error}; page:\n{page_log(page)}"
        ) from err


def _saved_layout(response: Response) -> bool:
    return response.request.method == "GET" and response.url.endswith("/api/v1/layouts/current")


async def tiles(page: Page) -> list[dict[str, Any]]:
    """``window.hallwatch.tiles()``: index, camera, mode, state, framesDecoded, width, height per tile."""
    result: list[dict[str, Any]] = await page.evaluate("window.hallwatch.tiles()")
    return result


async def wait_until(
    page: Page, predicate: Callable[[], Awaitable[T | None]] | str, timeout: float, what: str = "condition"
) -> T:
    """Poll ``predicate`` (an async callable, or a JavaScript expression evaluated in ``page``)
    until it is truthy; return that value. Fails with the last value and the page's log."""
    deadline = time.monotonic() + timeout
    value: Any = None
    error: Exception | None = None
    while True:
        try:
            value = await (page.evaluate(predicate) if isinstance(predicate, str) else predicate())
            error = None
        except AssertionError:
            raise
        except Exception as err:  # the page may be between states (navigation, hook not ready yet)
            error = err
        if value and error is None:
            return value  # type: ignore[no-any-return]
        if time.monotonic() >= deadline:
            detail = f"error: {error}" if error is not None else f"last value: {value!r}"
            raise AssertionError(
                f"{what} not met within {timeout:g} s; {detail}\n"
                f"tiles: {await _tiles_or_error(page)}\npage log:\n{page_log(page)}"
            )
        await asyncio.sleep(0.2)


async def _tiles_or_error(page: Page) -> str:
    try:
        return json.dumps(await tiles(page), ensure_ascii=False)
    except Exception as err:
        return f"(window.hallwatch.tiles() failed: {err})"


async def assert_decoding(
    page: Page, cameras: Iterable[str], timeout: float = 20, mode: str | None = None
) -> list[dict[str, Any]]:
    """Wait until every tile showing one of ``cameras`` decodes: a picture size, the given ``mode``,
    and framesDecoded rising between two consecutive readings. A counter that restarts (a new
    connection) counts once it rises again; a frozen one never does. Returns the last readings."""
    wanted = set(cameras)
    previous: dict[str, int] = {}
    moving: set[str] = set()
    last: dict[str, dict[str, Any]] = {}

    async def all_moving() -> list[dict[str, Any]] | None:
        nonlocal last
        last = {t["camera"]: t for t in await tiles(page) if t.get("camera") in wanted}
        for camera, tile in last.items():
            frames = int(tile.get("framesDecoded") or 0)
            good = (tile.get("width") or 0) > 0 and (mode is None or tile.get("mode") == mode)
            if good and camera in previous and frames > previous[camera] > 0:
                moving.add(camera)
            elif not good:
                moving.discard(camera)
            previous[camera] = frames
        return list(last.values()) if moving >= wanted else None

    return await wait_until(
        page, all_moving, timeout, f"tiles of {sorted(wanted)} decoding{f' in {mode} mode' if mode else ''}"
    )


def chromium_processes() -> list[psutil.Process]:
    """The browser's process tree: the Chromium children of this process (through Playwright's driver)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "chrom" in proc.name().lower():
                found.append(proc)
    return found


def _cpu(proc: psutil.Process) -> float | None:
    try:
        times = proc.cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


async def cpu_seconds(window: float) -> tuple[float, float, float]:
    """CPU seconds used over ``window`` by (the Chromium processes, this process, the whole machine's
    cores in wall seconds). A process that exits during the window is not counted."""
    browser_procs = chromium_processes()
    me = psutil.Process()
    before = {proc.pid: _cpu(proc) for proc in browser_procs}
    mine = _cpu(me) or 0.0
    started = time.monotonic()
    await asyncio.sleep(window)  # a measuring window, not a synchronisation
    elapsed = time.monotonic() - started
    browser_cpu = 0.0
    for proc in browser_procs:
        after, first = _cpu(proc), before.get(proc.pid)
        if after is not None and first is not None:
            browser_cpu += after - first
    return browser_cpu, (_cpu(me) or 0.0) - mine, elapsed
