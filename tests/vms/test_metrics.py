"""``/metrics`` end to end: the real app, a demo camera, a dead RTSP camera, a real WebRTC viewer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from streams import StreamManager
from tests.app_fixtures import RunningApp, serve_app
from tests.whep_client import WhepClient
from vms.app import create_app
from vms.config_access import MetricsSettings
from vms.config_loader import ConfigError, load_config, parse_config
from vms.metrics import metrics_of

SECRET = "cam-Pa55word-9f3k"
TOKEN = "scrape-T0ken-7c1d"


def site(data_dir: Path, metrics: str = "") -> str:
    return f"""
server:
  data_dir: {data_dir}
{metrics}
webrtc:
  ice_host_addresses: ["127.0.0.1"]
ingest:
  connect_timeout: 1
  stall_timeout: 2
  backoff_initial: 0.5
  backoff_max: 2
halls:
  - id: tax
    name: 税务
  - id: legal-services
    name: 法律服务
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: demo://tax-1?size=320x180&gop=25
  - id: legal-1
    name: 窗口区
    hall: legal-services
    url: rtsp://127.0.0.1:9/x
    credentials:
      username: admin
      password: {SECRET}
"""


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[RunningApp]:
    async with serve_app(site(tmp_path)) as app:
        yield app


async def scrape(app: RunningApp, **headers: str) -> list[Sample]:
    res = await app.http.get("/metrics", headers=headers)
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("text/plain")
    return [s for family in text_string_to_metric_families(res.text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


async def poll(check: Callable[[list[Sample]], bool], app: RunningApp, within: float = 10) -> list[Sample]:
    deadline = time.monotonic() + within
    while True:
        samples = await scrape(app)
        if check(samples):
            return samples
        assert time.monotonic() < deadline, "the metrics did not get there in time"
        await asyncio.sleep(0.1)


async def test_camera_figures_move_while_video_flows(running: RunningApp) -> None:
    await running.wait_online("tax-1")
    first = await scrape(running)
    tax, legal = {"camera": "tax-1", "hall": "tax"}, {"camera": "legal-1", "hall": "legal-services"}
    assert value(first, "hallwatch_camera_up", **tax) == 1
    assert value(first, "hallwatch_camera_up", **legal) == 0
    states = {
        s.labels["state"]: s.value
        for s in first
        if s.name == "hallwatch_camera_state" and s.labels["camera"] == "tax-1"
    }
    assert states == {
        "starting": 0,
        "online": 1,
        "stalled": 0,
        "offline": 0,
        "disabled": 0,
        "idle": 0,
        "unowned": 0,
    }
    legal_states = [
        s for s in first if s.name == "hallwatch_camera_state" and s.labels["camera"] == "legal-1"
    ]
    assert (
        sum(s.value for s in legal_states) == 1
        and value(first, "hallwatch_camera_state", state="online", **legal) == 0
    )
    for counter in ("reconnects", "stalls", "dropped_packets"):
        assert value(first, f"hallwatch_camera_{counter}_total", **tax) >= 0
    bytes_before = value(first, "hallwatch_camera_inbound_bytes_total", **tax)
    packets_before = value(first, "hallwatch_camera_inbound_packets_total", **tax)

    later = await poll(
        lambda s: value(s, "hallwatch_camera_inbound_bytes_total", **tax) > bytes_before, running
    )
    assert value(later, "hallwatch_camera_inbound_packets_total", **tax) > packets_before
    assert value(later, "hallwatch_camera_fps", **tax) > 0
    assert value(later, "hallwatch_camera_inbound_bytes_total", **legal) == 0
    # The process collectors share the app's registry.
    assert any(s.name == "process_resident_memory_bytes" for s in later)
    assert any(s.name == "python_info" for s in later)


async def test_a_webrtc_viewer_is_counted(running: RunningApp) -> None:
    await running.wait_online("tax-1")
    webrtc = {"camera": "tax-1", "protocol": "webrtc"}
    assert value(await scrape(running), "hallwatch_viewers", **webrtc) == 0

    sessions: list[str] = []
    manager: StreamManager = running.manager

    async def offer(sdp: str) -> str:
        session = await manager.whep_offer("tax-1", sdp)
        sessions.append(session.id)
        return session.answer_sdp

    async with WhepClient(decode=False) as viewer:
        await viewer.connect(offer)
        assert await viewer.wait_frames(1, within=10)
        samples = await scrape(running)
        assert value(samples, "hallwatch_viewers", **webrtc) == 1
        assert value(samples, "hallwatch_viewers", camera="tax-1", protocol="mjpeg") == 0
        assert value(samples, "hallwatch_whep_sessions") == 1
        assert await running.manager.whep_close(sessions[0])
    await poll(lambda s: value(s, "hallwatch_viewers", **webrtc) == 0, running)


async def test_route_labels_are_templates_never_raw_paths(running: RunningApp) -> None:
    for path in ("/api/v1/cameras/abc123xyz", "/api/v1/probe/cameras/abc123xyz", "/abc123xyz/x.js"):
        await running.http.get(path)
    await running.http.request("BREWabc123xyz", "/healthz")
    res = await running.http.get("/metrics")
    assert "abc123xyz" not in res.text
    requests = [s for s in await scrape(running) if s.name == "hallwatch_http_requests_total"]
    routes = {s.labels["route"] for s in requests}
    assert {"/api/v1/cameras/{camera_id}", "/api/v1/probe/cameras/{camera_id}", "/metrics"} <= routes
    assert {s.labels["method"] for s in requests} <= {"GET", "other"}
    probe = [s for s in requests if s.labels["route"] == "/api/v1/probe/cameras/{camera_id}"]
    assert [s.labels["status"] for s in probe] == ["404"]
    durations = [
        s for s in await scrape(running) if s.name == "hallwatch_http_request_duration_seconds_count"
    ]
    assert {s.labels["route"] for s in durations} >= {"/api/v1/cameras/{camera_id}", "/metrics"}


async def test_no_credential_in_the_metrics(running: RunningApp) -> None:
    await running.http.get("/api/v1/cameras/legal-1")
    text = (await running.http.get("/metrics")).text
    assert SECRET not in text
    assert "rtsp://" not in text and "admin" not in text


async def test_bearer_token_when_configured(tmp_path: Path) -> None:
    config = site(tmp_path, f"metrics:\n  bearer_token: {TOKEN}\n  allowed_networks: []")
    async with serve_app(config) as app:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            res = await app.http.get("/metrics", headers=headers)
            assert res.status_code == 401
            assert res.headers["content-type"] == "application/problem+json"
            assert res.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN not in res.text
        samples = await scrape(app, Authorization=f"Bearer {TOKEN}")
        assert value(samples, "hallwatch_camera_up", camera="tax-1") in (0, 1)
        # Everything else stays without a login of this kind.
        assert (await app.http.get("/healthz")).status_code == 200


def test_each_app_has_its_own_registry(tmp_path: Path) -> None:
    config = parse_config(site(tmp_path), "test.yaml")
    first, second = create_app(config), create_app(config)
    a, b = metrics_of(first.state), metrics_of(second.state)
    assert a is not None and b is not None
    assert a.registry is not b.registry


# -- who may read the monitoring endpoints ------------------------------------------

OUTSIDE = ("203.0.113.5", 1234)


def from_address(app: RunningApp, client: tuple[str, int] = OUTSIDE) -> httpx.AsyncClient:
    """A client of the running app (same state, same lifespan) seen as coming from ``client``."""
    transport = httpx.ASGITransport(app=app.app, client=client)
    return httpx.AsyncClient(transport=transport, base_url="http://hallwatch.test")


async def test_outside_the_allowed_networks_nothing_is_named(running: RunningApp) -> None:
    await running.wait_online("tax-1")
    async with from_address(running) as outsider:
        for path in ("/metrics", "/api/v1/probe/cameras/tax-1", "/api/v1/probe/cameras/nope"):
            answer = await outsider.get(path)
            assert answer.status_code == 403, path
            assert answer.headers["content-type"] == "application/problem+json"
            for name in ("tax-1", "legal", "税务", "hallwatch_camera"):
                assert name not in answer.text
        # The same answer whatever the id: a probe tells nothing about which cameras exist.
        known = await outsider.get("/api/v1/probe/cameras/tax-1")
        unknown = await outsider.get("/api/v1/probe/cameras/nope")
        assert known.json() == unknown.json()
        # Health answers everyone: it names nothing.
        assert (await outsider.get("/healthz")).status_code == 200
        assert (await outsider.get("/readyz")).status_code in (200, 503)
    # A forwarded request is not a loopback one, even when the proxy is.
    async with from_address(running, ("127.0.0.1", 4321)) as proxied:
        answer = await proxied.get("/metrics", headers={"X-Forwarded-For": "198.51.100.20"})
        assert answer.status_code == 403
        assert (await proxied.get("/metrics")).status_code == 200
        assert (await proxied.get("/api/v1/probe/cameras/tax-1")).status_code == 200
    async with from_address(running, ("::1", 4321)) as local6:
        assert (await local6.get("/metrics")).status_code == 200


async def test_allowed_networks_and_the_token(tmp_path: Path) -> None:
    metrics = f"metrics:\n  bearer_token: {TOKEN}\n  allowed_networks: [127.0.0.1/32, 198.51.100.0/24]"
    async with serve_app(site(tmp_path, metrics)) as app:
        await app.wait_online("tax-1")
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        async with from_address(app) as outsider:
            for path in ("/metrics", "/api/v1/probe/cameras/tax-1"):
                refused = await outsider.get(path)
                assert refused.status_code == 401, path
                assert refused.headers["www-authenticate"].startswith("Bearer")
                wrong = await outsider.get(path, headers={"Authorization": "Bearer wrong"})
                assert wrong.status_code == 401
                assert (await outsider.get(path, headers=bearer)).status_code == 200
            assert (await outsider.get("/api/v1/probe/cameras/nope", headers=bearer)).status_code == 404
        async with from_address(app, ("198.51.100.77", 9)) as monitor:
            assert (await monitor.get("/metrics")).status_code == 200
            assert (await monitor.get("/api/v1/probe/cameras/tax-1")).status_code == 200
            # A wrong token is refused even from an allowed network: it is a mistake to report.
            assert (await monitor.get("/metrics", headers={"Authorization": "Bearer no"})).status_code == 401
        # A real socket from 127.0.0.2: loopback, but outside 127.0.0.1/32.
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=app.base_url, transport=transport, timeout=10) as other:
            assert (await other.get("/metrics")).status_code == 401
            assert (await other.get("/metrics", headers=bearer)).status_code == 200
        assert (await app.http.get("/metrics")).status_code == 200  # 127.0.0.1


def test_allowed_networks_are_checked_when_the_config_loads(tmp_path: Path) -> None:
    default = parse_config(site(tmp_path), "test.yaml").metrics.allowed_networks
    assert [str(n) for n in default] == ["127.0.0.0/8", "::1/128"]
    with pytest.raises(ConfigError):
        parse_config(site(tmp_path, "metrics:\n  allowed_networks: [not-a-network]"), "test.yaml")


def test_the_embedded_default_states_the_metrics_defaults() -> None:
    assert load_config(None).metrics == MetricsSettings()


async def test_event_loop_tasks_and_threads_are_counted(running: RunningApp) -> None:
    before = await scrape(running)
    assert value(before, "hallwatch_python_threads") >= 1
    tasks = value(before, "hallwatch_event_loop_tasks")
    assert tasks >= 1  # at least the server's own
    release = asyncio.Event()
    waiting = [asyncio.create_task(release.wait()) for _ in range(50)]
    try:
        more = value(await scrape(running), "hallwatch_event_loop_tasks")
    finally:
        release.set()
        await asyncio.gather(*waiting)
    assert more >= tasks + 50 - 10  # the 50 waiting, give or take a few short-lived ones
    later = await poll(lambda s: value(s, "hallwatch_event_loop_tasks") < more - 40, running)
    assert value(later, "hallwatch_event_loop_tasks") <= tasks + 10


def test_the_loop_tasks_are_left_out_off_the_loop(tmp_path: Path) -> None:
    metrics = metrics_of(create_app(parse_config(site(tmp_path), "test.yaml")).state)
    assert metrics is not None
    text = generate_latest(metrics.registry).decode()
    assert "\nhallwatch_event_loop_tasks " not in text  # no loop here, so no figure
    assert "\nhallwatch_python_threads " in text
