"""Aggregating another Hallwatch over WHEP: a camera whose url is a county instance's WHEP
endpoint, pulled with an API token, on demand. Two real apps on loopback; the county counts
its WebRTC sessions and says how each ended, the city's viewers decode what they get."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from streams import IngestState, WhepSession
from tests.app_fixtures import RunningApp, serve_app
from tests.vms.test_live_ws import open_ws, receive_mse, ws_url
from tests.vms.test_rtsp_serve import token_of, until
from vms.config_loader import ConfigError, parse_config

IDLE_TIMEOUT = 1.0

COUNTY = """
webrtc: {ice_host_addresses: [127.0.0.1]}
centres:
  - {id: xingning, name: 兴宁市政务服务中心, halls: all}
halls:
  - {id: tax, name: 第一税务分厅}
cameras:
  - {id: tax-1, name: 大厅全景, hall: tax, url: "demo://tax-1?size=320x180&gop=10"}
"""

CITY = """
webrtc: {{ice_host_addresses: [127.0.0.1]}}
ingest: {{connect_timeout: 2, backoff_initial: 0.5, backoff_max: 2}}
centres:
  - {{id: meizhou, name: 梅州市政务服务中心, halls: all}}
halls:
  - {{id: xingning-tax, name: 兴宁第一税务分厅}}
cameras:
  - id: xingning-tax-1
    name: 兴宁大厅全景
    hall: xingning-tax
    url: "{url}"
    token: "{token}"
    on_demand: true
    idle_timeout: {idle}
  - id: refused
    name: 错误令牌
    hall: xingning-tax
    url: "{url}"
    token: "hw_not-a-token"
"""


@pytest.fixture
async def instances() -> AsyncIterator[tuple[RunningApp, RunningApp, list[str]]]:
    """County, city, and how each of the county's WebRTC sessions ended."""
    async with AsyncExitStack() as stack:
        county = await stack.enter_async_context(serve_app(COUNTY))
        await county.wait_online("tax-1")
        ended: list[str] = []

        def on_end(session: WhepSession) -> None:
            ended.append(session.end_reason or "")

        county.manager.add_session_listener(on_end)
        token = await token_of(await county.user("xingning", "viewer", "meizhou-centre"))
        endpoint = county.base_url.replace("http://", "whep://", 1) + "/api/v1/cameras/tax-1/whep"
        city = await stack.enter_async_context(
            serve_app(CITY.format(url=endpoint, token=token, idle=IDLE_TIMEOUT))
        )
        yield county, city, ended


def upstream_sessions(county: RunningApp) -> int:
    return county.manager.stats("tax-1").webrtc_viewers


async def test_a_city_instance_pulls_a_county_camera_over_whep_only_while_watched(
    instances: tuple[RunningApp, RunningApp, list[str]], tmp_path: Path
) -> None:
    county, city, ended = instances
    await asyncio.sleep(0.5)
    assert upstream_sessions(county) == 0 and city.manager.stats("xingning-tax-1").sessions_opened == 0
    assert city.manager.stats("xingning-tax-1").state is IngestState.IDLE

    viewer = await city.user("meizhou", "viewer")
    async with (
        open_ws(city, ws_url(city, "xingning-tax-1"), viewer) as first,
        open_ws(city, ws_url(city, "xingning-tax-1"), viewer) as second,
    ):
        capture = await receive_mse(first, 5)
        await receive_mse(second, 3)
        assert upstream_sessions(county) == 1, "one upstream session for both viewers"
        stats = city.manager.stats("xingning-tax-1")
        assert stats.state is IngestState.ONLINE and stats.codec == "h264"
        assert (stats.width, stats.height) == (320, 180)
    assert capture.init["codec"].startswith("avc1.") and capture.init["transcoded"] is False
    frames = capture.decode(tmp_path / "whep.mp4")
    assert len(frames) >= 5
    assert {(f.width, f.height) for f in frames} == {(320, 180)}

    async def idle() -> bool:
        state = city.manager.stats("xingning-tax-1").state
        return state is IngestState.IDLE and upstream_sessions(county) == 0

    await until(idle, "the upstream session outlived the idle timeout", IDLE_TIMEOUT + 3)
    assert ended == ["closed by request"], "the source DELETEs its session"
    assert city.manager.stats("xingning-tax-1").sessions_opened == 1


async def test_a_wrong_token_leaves_the_camera_offline_with_the_reason(
    instances: tuple[RunningApp, RunningApp, list[str]],
) -> None:
    county, city, _ = instances

    async def refused() -> bool:
        return city.manager.stats("refused").state is IngestState.OFFLINE

    await until(refused, "a refused token must make the camera offline", 5)
    assert city.manager.stats("refused").last_error == "the WHEP server refused the API token (401)"
    assert upstream_sessions(county) == 0


@pytest.mark.parametrize(
    ("camera", "expected"),
    [
        ('url: "https://county:8443/api/v1/cameras/a/whep"', "instead of https:// (wheps for HTTPS"),
        ('url: "whep://viewer:pw@county:8000/w"', "write token: ... (the upstream's API token)"),
        ('url: "whep:///w"', "the whep URL has no host"),
        ('url: "whep://county:8000/w"\n    credentials: {username: a, password: b}', "write token: ..."),
        ('url: "rtsp://county/tax-1"\n    token: "hw_x"', "token is only used by whep:// and wheps://"),
        ('url: "wheps://county/w"\n    audio: true', "audio is not pulled over WHEP"),
    ],
)
def test_whep_camera_configuration_errors_name_the_line_and_the_fix(camera: str, expected: str) -> None:
    site = "\n".join(["halls: [{id: h, name: H}]", "cameras:", "  - id: c", "    name: C", "    hall: h"])
    site += f"\n    {camera}\n"
    with pytest.raises(ConfigError) as error:
        parse_config(site, "site.yaml")
    text = str(error.value)
    assert expected in text and text.startswith(("site.yaml:3:", "site.yaml:6:")), text
    assert "pw@" not in text
