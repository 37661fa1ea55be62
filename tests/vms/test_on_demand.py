"""Aggregating another Hallwatch: a camera that is a county instance's RTSP re-serve, pulled
with a user's API token as the Digest password, on demand. Two real apps: the upstream
counts its RTSP sessions, the downstream is idle (ready, no alarm) until someone watches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from streams import AnalysisOutput, IngestState, RtspServer
from tests.app_fixtures import RunningApp, serve_app
from tests.vms.test_live_ws import open_ws, receive_mse, ws_url
from tests.vms.test_rtsp_serve import token_of, until
from vms.config_loader import parse_config
from vms.relay import camera_spec

IDLE_TIMEOUT = 1.0

COUNTY = """
rtsp_server: {enabled: true, bind: 127.0.0.1, port: 0}
centres:
  - {id: xingning, name: 兴宁市政务服务中心, halls: all}
halls:
  - {id: tax, name: 第一税务分厅}
cameras:
  - {id: tax-1, name: 大厅全景, hall: tax, url: "demo://tax-1?size=320x180&gop=10"}
"""

CITY = """
ingest: {{connect_timeout: 1, backoff_initial: 0.5, backoff_max: 2}}
centres:
  - {{id: meizhou, name: 梅州市政务服务中心, halls: all}}
halls:
  - {{id: xingning-tax, name: 兴宁第一税务分厅}}
cameras:
  - id: xingning-tax-1
    name: 兴宁大厅全景
    hall: xingning-tax
    url: "{url}"
    credentials: {{username: "{user}", password: "{token}"}}
    on_demand: true
    idle_timeout: {idle}
"""


@pytest.fixture
async def instances() -> AsyncIterator[tuple[RunningApp, RunningApp]]:
    async with AsyncExitStack() as stack:
        county = await stack.enter_async_context(serve_app(COUNTY))
        await county.wait_online("tax-1")
        token = await token_of(await county.user("xingning", "viewer", "meizhou-centre"))
        rtsp: RtspServer = county.app.state.rtsp
        upstream = f"rtsp://127.0.0.1:{rtsp.port}/tax-1"
        site = CITY.format(url=upstream, user="meizhou-centre", token=token, idle=IDLE_TIMEOUT)
        city = await stack.enter_async_context(serve_app(site))
        yield county, city


def upstream_sessions(county: RunningApp) -> int:
    return county.manager.stats("tax-1").rtsp_viewers


async def eventually_idle(city: RunningApp, county: RunningApp, within: float) -> None:
    """Wait until the city's camera is idle and the county serves it no more."""

    async def idle() -> bool:
        state = city.manager.stats("xingning-tax-1").state
        return state is IngestState.IDLE and upstream_sessions(county) == 0

    await until(idle, "the upstream session outlived the idle timeout", within)


@pytest.mark.rtsp
async def test_a_city_instance_pulls_a_county_camera_only_while_watched(
    instances: tuple[RunningApp, RunningApp],
) -> None:
    county, city = instances
    await asyncio.sleep(0.5)
    assert upstream_sessions(county) == 0 and city.manager.stats("xingning-tax-1").sessions_opened == 0
    assert city.manager.output("xingning-tax-1", "analysis", AnalysisOutput) is None, (
        "diagnosis is the county's: it would keep the camera pulled"
    )
    ready = await city.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    viewer = await city.user("meizhou", "viewer")
    [camera] = (await viewer.get("/api/v1/cameras")).json()
    assert camera["live"]["state"] == "idle"

    async with (
        open_ws(city, ws_url(city, "xingning-tax-1"), viewer) as first,
        open_ws(city, ws_url(city, "xingning-tax-1"), viewer) as second,
    ):
        capture = await receive_mse(first, 5)
        await receive_mse(second, 3)
        assert capture.init is not None and capture.init["codec"].startswith("avc1.")
        assert upstream_sessions(county) == 1, "one upstream session for both viewers"
        assert city.manager.stats("xingning-tax-1").state is IngestState.ONLINE
    await eventually_idle(city, county, IDLE_TIMEOUT + 3)

    async with open_ws(city, ws_url(city, "xingning-tax-1"), viewer) as again:
        await receive_mse(again, 3)
        assert upstream_sessions(county) == 1
    await eventually_idle(city, county, IDLE_TIMEOUT + 3)
    assert city.manager.stats("xingning-tax-1").sessions_opened == 2
    assert city.app.state.alarms.alarms({"xingning-tax"}) == [], "idle is not offline"
    assert (await city.http.get("/readyz")).status_code == 200


def test_an_on_demand_camera_is_diagnosed_only_if_it_asks_and_its_idle_timeout_reaches_the_ingest() -> None:
    config = parse_config(
        CITY.format(url="rtsp://127.0.0.1:8554/tax-1", user="meizhou-centre", token="hw_x", idle=2.5)
        + """
  - {id: asks, name: 诊断, hall: xingning-tax, url: "rtsp://127.0.0.1:8554/tax-2", on_demand: true,
     analysis: {enabled: true}}
  - {id: pulled, name: 常规, hall: xingning-tax, url: "demo://pulled"}
""",
        "site.yaml",
    )
    on_demand, asks, pulled = config.cameras
    assert [config.analyses(c) for c in config.cameras] == [False, True, True]
    policy = camera_spec(config, on_demand).policy
    assert (policy.on_demand, policy.idle_timeout) == (True, 2.5)
    assert camera_spec(config, asks).policy.idle_timeout == 10.0
    assert not camera_spec(config, pulled).policy.on_demand
