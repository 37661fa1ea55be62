"""WHEP offers over HTTP, as an attacker would send them: offers that never connect,
offers without DTLS or ICE parameters. Real app, demo camera, real aiortc peers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.app_fixtures import RunningApp, serve_app
from tests.whep_client import WhepClient
from vms.config_loader import ConfigError, parse_config
from vms.relay import relay_settings

WHEP = "/api/v1/cameras/tax-1/whep"
SDP = {"content-type": "application/sdp"}

CONFIG = """
webrtc:
  ice_host_addresses: ["127.0.0.1"]
  max_viewers_per_camera: 3
  max_viewers_per_user_per_camera: 4
  pending_timeout: 30
ingest:
  connect_timeout: 1
  stall_timeout: 2
centres:
  - id: meizhou
    name: 梅州市政务服务中心
halls:
  - id: tax
    name: 兴宁市税务局办税服务厅
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: demo://tax-1?size=320x180&gop=25
"""


@pytest.fixture
async def running() -> AsyncIterator[RunningApp]:
    async with serve_app(CONFIG) as app:
        await app.wait_online("tax-1")
        yield app


async def test_one_user_with_unconnected_offers_cannot_take_a_camera(running: RunningApp) -> None:
    """Issue 9, item 5: offers that never connect held the camera at its cap (3)."""
    mallory = await running.user("meizhou", "viewer", "mallory")
    alice = await running.user("meizhou", "viewer", "alice")
    pending: list[WhepClient] = []
    try:
        refused: httpx.Response | None = None
        for _ in range(10):  # offer, never apply the answer: the session never connects
            client = WhepClient(decode=False)
            pending.append(client)
            res = await mallory.post(WHEP, content=await client.create_offer(), headers=SDP)
            if res.status_code != 201:
                refused = res
                break
        # Another user still gets the camera (201, not 503), and plays it.
        async with WhepClient(decode=True) as viewer:
            await viewer.connect_http(alice, WHEP)
            assert await viewer.wait_frames(5, within=10)
            assert viewer.connected_at is not None
        # Mallory was stopped by her own cap, with a clear answer.
        assert refused is not None
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"]
        assert refused.headers["content-type"] == "application/problem+json"
        assert "4 viewer sessions (WebRTC 4) of camera tax-1" in refused.json()["detail"]
        assert len(pending) == 5, "four pending sessions, the fifth refused"
    finally:
        for client in pending:
            await client.close()


def _without(offer: str, attribute: str) -> str:
    stripped = re.sub(rf"^a={attribute}:.*\r\n", "", offer, flags=re.MULTILINE)
    assert stripped != offer
    return stripped


@pytest.mark.parametrize(
    ("attribute", "detail"),
    [
        ("fingerprint", "no DTLS fingerprint (a=fingerprint) for its video m-line"),
        ("setup", "no usable DTLS role (a=setup"),
        ("ice-ufrag", "no ICE username fragment (a=ice-ufrag) for its video m-line"),
        ("ice-pwd", "no ICE password (a=ice-pwd) for its video m-line"),
    ],
)
async def test_offers_without_dtls_or_ice_parameters_are_400(
    running: RunningApp, attribute: str, detail: str
) -> None:
    """Issue 9, item 6: an offer without a=fingerprint was answered 201."""
    admin = await running.admin("meizhou")
    async with WhepClient(decode=False) as client:
        offer = _without(await client.create_offer(), attribute)
        res = await admin.post(WHEP, content=offer, headers=SDP)
    assert res.status_code == 400, res.text
    assert res.headers["content-type"] == "application/problem+json"
    assert detail in res.json()["detail"]
    assert running.manager.webrtc.session_count() == 0


async def test_session_level_dtls_and_ice_parameters_are_enough(running: RunningApp) -> None:
    """The same attributes at the session level (before the first m-line) are valid SDP."""
    admin = await running.admin("meizhou")

    async def hoist(http: httpx.AsyncClient, url: str, offer: str) -> httpx.Response:
        lines = offer.split("\r\n")
        moved = [line for line in lines if re.match(r"a=(fingerprint|ice-ufrag|ice-pwd):", line)]
        rest = [line for line in lines if line not in moved]
        first_m = next(i for i, line in enumerate(rest) if line.startswith("m="))
        return await http.post(url, content="\r\n".join(rest[:first_m] + moved + rest[first_m:]), headers=SDP)

    async with WhepClient(decode=False) as viewer:
        res = await hoist(admin, WHEP, await viewer.create_offer())
        assert res.status_code == 201, res.text
        await viewer.apply_answer(res.text)
        assert await viewer.wait_frames(5, within=10)


def test_the_webrtc_caps_are_settings_that_reach_the_relay() -> None:
    config = parse_config(
        CONFIG.replace(
            "  pending_timeout: 30\n",
            "  pending_timeout: 2.5\n  max_viewers_per_user: 9\n  max_pending_per_camera: 3\n"
            "  max_pending_per_user: 5\n  max_pending_total: 7\n  max_remote_candidates: 6\n"
            "  ice_remote_networks: [10.0.0.0/8, 'fd00::/8']\n",
        ),
        "test.yaml",
    )
    settings = relay_settings(config)
    assert (
        settings.max_viewers_per_camera,
        settings.max_viewers_per_user,
        settings.max_viewers_per_user_per_camera,
        settings.max_pending_per_camera,
        settings.max_pending_per_user,
        settings.max_pending_total,
        settings.pending_timeout,
        settings.max_remote_candidates,
        list(settings.ice_remote_networks),
    ) == (3, 9, 4, 3, 5, 7, 2.5, 6, ["10.0.0.0/8", "fd00::/8"])
    with pytest.raises(ConfigError, match="ice_remote_networks"):
        parse_config(
            CONFIG.replace("  pending_timeout: 30\n", "  ice_remote_networks: [somewhere]\n"), "x.yaml"
        )
