"""The GB/T 28181 cascade against an independent SIP implementation: SIPp plays the superior.

The real app runs with a superior platform for each test, each at a port of 127.0.0.1 of
its own; once the demo cameras are online, a test starts SIPp at its platform's port with
a scenario of ``sipp/`` (:mod:`tests.vms.gb28181.sipp_runner`), and the platform, which has
been trying to register all along, registers with it. The scenario checks what it receives with
its own regexp, ``strcmp`` and ``verifyauth`` actions, and SIPp's exit code says
whether every call passed. Its message trace is then read back with Python's XML parser
for what a regexp cannot check. For live play the test's own sockets take the media
SIPp's INVITE asks for, and FFmpeg's ``ffprobe -f mpeg`` reads the program stream the
RTP payloads carry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from streams.outputs.ps_sender import PsTransport
from tests.app_fixtures import RunningApp, serve_app
from tests.streams.formats import ps_checks
from tests.streams.outputs.ps_receiver import Receiver
from tests.vms.gb28181.sipp_runner import Sipp, free_port, sipp
from vms.gb28181 import Cascade
from vms.gb28181.platform import PlatformStatus

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVER_ID = "44140000002000000001"
DOMAIN = "4414000000"
LOCAL_ID = "44148100002000000001"
PASSWORD = "sipp-cascade-password"
CHANNEL = "44148100001320000007"
"""cam1's channel ID, fixed in the config, so that the test knows it without asking."""
HALLS = {"social": "兴宁市社保服务大厅", "tax": "兴宁市税务服务大厅", "police": "兴宁市公安服务大厅"}
CAMERAS = {"cam0": "social", "cam1": "tax", "cam2": "police", "cam3": "social"}
"""Meizhou sees social and tax: three of these cameras, in two halls, under one group."""
SHARED = [camera for camera, hall in CAMERAS.items() if hall != "police"]


@dataclass(frozen=True)
class Superior:
    """One superior platform of the site, played by SIPp in one test."""

    transport: str
    keepalive: float = 60.0
    password: str = PASSWORD
    port: int = 0


PLATFORMS = {
    "register-udp": Superior("udp", keepalive=0.5),
    "register-tcp": Superior("tcp", keepalive=0.5),
    "wrong-password": Superior("udp", password="not-the-password"),
    "catalog-udp": Superior("udp"),
    "catalog-tcp": Superior("tcp"),
    "play-udp": Superior("udp"),
    "play-tcp-active": Superior("tcp"),
    "play-tcp-passive": Superior("tcp"),
}
"""A platform per test, each at a port of its own: each test's SIPp gets a fresh registration."""


def camera_name(camera_id: str) -> str:
    return f"窗口{camera_id[-1]}"


def site(superiors: dict[str, Superior]) -> str:
    halls = "".join(f"  - {{id: {h}, name: {name}}}\n" for h, name in HALLS.items())
    cameras = "".join(
        f"  - {{id: {c}, name: {camera_name(c)}, hall: {h}, url: 'demo://{c}?gop=25&loop_seconds=2'}}\n"
        for c, h in CAMERAS.items()
    )
    platforms = "".join(
        f"""    - name: {name}
      server_id: "{SERVER_ID}"
      domain: "{DOMAIN}"
      host: 127.0.0.1
      port: {s.port}
      transport: {s.transport}
      local_id: "{LOCAL_ID}"
      local_host: 127.0.0.1
      local_port: 0
      password: {s.password}
      register_expiry: 3600
      keepalive_interval: {s.keepalive}
      transaction_timeout: 1
      backoff_initial: 0.2
      backoff_max: 0.5
      centre: meizhou
      catalog_batch: 4
      encoding: UTF-8
"""
        for name, s in superiors.items()
    )
    return f"""
centres:
  - {{id: xingning, name: 兴宁市政务服务中心, halls: all}}
  - {{id: meizhou, name: 梅州市政务服务中心, halls: [social, tax]}}
halls:
{halls}cameras:
{cameras}gb28181:
  channel_ids: {{cam1: "{CHANNEL}"}}
  platforms:
{platforms}"""


@dataclass
class Site:
    app: RunningApp
    superiors: dict[str, Superior]

    def status(self, name: str) -> PlatformStatus:
        cascade: Cascade = self.app.app.state.gb28181
        (platform,) = [p for p in cascade.platforms if p.settings.name == name]
        return platform.status


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hallwatch() -> AsyncIterator[Site]:
    """The app with every test's superior platform, its shared cameras online."""
    superiors: dict[str, Superior] = {}
    for name, superior in PLATFORMS.items():
        port = free_port(superior.transport, taken=[s.port for s in superiors.values()])
        superiors[name] = dataclasses.replace(superior, port=port)
    async with serve_app(site(superiors)) as app:
        await app.wait_online(*SHARED)
        yield Site(app, superiors)


def manscdp(body: bytes) -> ET.Element:
    """A MANSCDP body parsed by Python's XML parser (by the encoding its declaration names)."""
    return ET.fromstring(body)


def register_keys(nonce: str) -> dict[str, str]:
    return {"realm": DOMAIN, "nonce": nonce, "username": LOCAL_ID, "password": PASSWORD}


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_challenged_registration_then_a_keepalive(
    hallwatch: Site, transport: str, tmp_path: Path
) -> None:
    name = f"register-{transport}"
    nonce = secrets.token_hex(8)
    port = hallwatch.superiors[name].port
    async with sipp(tmp_path, "register", transport, port, calls=2, keys=register_keys(nonce)) as run:
        await run.passed()
    assert hallwatch.status(name).registrations == 1
    first, second, keepalive = run.messages()[:3]
    assert first.first == f"REGISTER sip:{SERVER_ID}@{DOMAIN} SIP/2.0" and not first.header("Authorization")
    authorization = second.header("Authorization")
    assert f'username="{LOCAL_ID}"' in authorization and f'nonce="{nonce}"' in authorization
    assert second.header("Call-ID") == first.header("Call-ID") and second.header("Expires") == "3600"
    assert keepalive.first == f"MESSAGE sip:{SERVER_ID}@{DOMAIN} SIP/2.0"
    document = manscdp(keepalive.body)
    assert document.tag == "Notify" and document.findtext("CmdType") == "Keepalive"
    assert document.findtext("DeviceID") == LOCAL_ID and document.findtext("Status") == "OK"


async def test_a_wrong_password_fails_the_digest_and_is_not_registered(
    hallwatch: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "vms.gb28181")
    port = hallwatch.superiors["wrong-password"].port
    keys = register_keys(secrets.token_hex(8))
    async with sipp(tmp_path, "register", "udp", port, calls=1, keys=keys) as run:
        assert await run.exit_code() == 1, run.report()
    status = hallwatch.status("wrong-password")
    assert not status.registered and status.registrations == 0
    assert 'strcmp verdict:"false"' in run.report(), "SIPp's verifyauth refused the digest"
    assert [m.first for m in run.messages(received=False)] == [
        "SIP/2.0 401 Unauthorized",
        "SIP/2.0 403 Forbidden",
    ]
    assert "platform wrong-password: REGISTER refused: 403 Forbidden" in caplog.messages


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_catalog_query_answered_across_messages(
    hallwatch: Site, transport: str, tmp_path: Path
) -> None:
    port = hallwatch.superiors[f"catalog-{transport}"].port
    keys = {"domain": DOMAIN, "server_id": SERVER_ID, "username": LOCAL_ID, "sn": "17", "sumnum": "6"}
    async with sipp(tmp_path, "catalog", transport, port, calls=4, keys=keys) as run:
        await run.passed()
    register, answer, *responses = run.messages()
    assert register.first.startswith("REGISTER ")
    assert answer.first == "SIP/2.0 200 OK" and answer.header("Call-ID").startswith("catalog-")
    documents = [manscdp(m.body) for m in responses]
    assert [(d.findtext("SN"), d.findtext("SumNum")) for d in documents] == [("17", "6"), ("17", "6")]
    assert [d.find("DeviceList").get("Num") for d in documents] == ["4", "2"]  # type: ignore[union-attr]
    items = {item.findtext("DeviceID") or "": item for d in documents for item in d.iter("Item")}
    assert len(items) == 6 and all(re.fullmatch(r"441481\d{14}", i) for i in items)
    kinds = {k: [item for i, item in items.items() if i[10:13] == k] for k in ("215", "216", "131", "132")}
    (group,) = kinds["215"]
    halls = {h.findtext("Name"): h for h in kinds["216"]}
    assert set(halls) == {HALLS["social"], HALLS["tax"]}
    assert all(h.findtext("ParentID") == group.findtext("DeviceID") for h in halls.values())
    cameras = {c.findtext("Name"): c for c in kinds["131"] + kinds["132"]}
    assert set(cameras) == {camera_name(c) for c in SHARED}, "the police hall's camera is not shared"
    assert cameras[camera_name("cam1")].findtext("DeviceID") == CHANNEL
    for camera_id in SHARED:
        camera, hall = cameras[camera_name(camera_id)], halls[HALLS[CAMERAS[camera_id]]]
        assert camera.findtext("ParentID") == hall.findtext("DeviceID")
        assert camera.findtext("Status") == "ON" and camera.findtext("CivilCode") == "441481"


async def answered_port(run: Sipp) -> int:
    """The port of the lower platform's SDP answer, as SIPp's trace shows it."""
    async with asyncio.timeout(10):
        while True:
            for message in run.messages():
                found = re.search(rb"m=video (\d+) ", message.body)
                if message.first == "SIP/2.0 200 OK" and found:
                    return int(found.group(1))
            await asyncio.sleep(0.05)


def units(data: bytes) -> list[tuple[bool, list[tuple[int, bytes]]]]:
    """Each access unit of a program stream (a pack header and what follows up to the next):
    whether its H.264 holds an IDR picture, and its packets (stream id, bytes)."""
    found: list[tuple[bool, list[tuple[int, bytes]]]] = []
    video = b""
    for stream_id, packet in ps_checks.ps_packets(data):
        if stream_id == ps_checks.PACK:
            found.append((False, []))
            video = b""
        found[-1][1].append((stream_id, packet))
        if stream_id == ps_checks.VIDEO:
            video += packet[9 + packet[8] :]
            idr = any(nal and nal[0] & 0x1F == 5 for nal in video.split(b"\x00\x00\x01")[1:])
            found[-1] = (idr, found[-1][1])
    return found


@pytest.mark.parametrize("media", ["udp", "tcp-active", "tcp-passive"])
async def test_live_play_sends_ps_that_ffmpeg_reads(
    hallwatch: Site, media: PsTransport, tmp_path: Path
) -> None:
    superior = hallwatch.superiors[f"play-{media}"]
    receiver = Receiver()
    await receiver.listen(media)
    ssrc = "0100000042"
    keys = {
        "domain": DOMAIN,
        "server_id": SERVER_ID,
        "channel": CHANNEL,
        "ssrc": ssrc,
        "rtp_port": str(receiver.port or 9),  # an end that connects offers the discard port
        "proto": "RTP/AVP" if media == "udp" else "TCP/RTP/AVP",
    }
    ours = {"tcp-active": "passive", "tcp-passive": "active"}.get(media)  # the superior's end
    variables = {"setup_line": f"a=setup:{ours}"} if ours else {}
    try:
        async with sipp(
            tmp_path, "play", superior.transport, superior.port, calls=2, keys=keys, variables=variables
        ) as run:
            if media == "tcp-passive":
                await receiver.connect(await answered_port(run))
            await run.passed()
        cascade: Cascade = hallwatch.app.app.state.gb28181
        async with asyncio.timeout(5):
            while cascade.live.count():
                await asyncio.sleep(0.05)
    finally:
        await receiver.close()
    (invite,) = [m for m in run.messages(received=False) if m.first.startswith("INVITE ")]
    assert (b"a=setup:" in invite.body) == bool(ours) and b"\r\n\r\n" not in invite.body
    (answer,) = [m for m in run.messages() if m.first == "SIP/2.0 200 OK" and m.body]
    if ours:
        assert f"a=setup:{media.removeprefix('tcp-')}" in answer.body.decode()
    rtp = receiver.packets()
    last = max(i for i, packet in enumerate(rtp) if packet.marker)
    data, _ = ps_checks.reassemble(rtp[: last + 1], int(ssrc))
    path = tmp_path / "received.ps"
    path.write_bytes(data)
    probed = ps_checks.ffprobe_video(path)
    assert probed["codec_name"] == "h264" and (int(probed["width"]), int(probed["height"])) == (640, 360)
    assert int(probed["nb_read_frames"]) >= 40, "two seconds at 25 fps and the GOP cache"
    found = units(data)
    assert found[0][0], "the session starts at a keyframe"
    assert sum(idr for idr, _ in found) >= 2
    for idr, packets in found:
        ids = [stream_id for stream_id, _ in packets]
        assert ids[0] == ps_checks.PACK and ids[-1] == ps_checks.VIDEO
        if idr:
            assert ids[:4] == [ps_checks.PACK, ps_checks.SYSTEM, ps_checks.PSM, ps_checks.VIDEO]
            assert ps_checks.psm_streams(packets[2][1]) == [(0x1B, ps_checks.VIDEO)], "H.264 in the map"
