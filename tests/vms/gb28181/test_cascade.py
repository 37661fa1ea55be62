"""The GB/T 28181 cascade against a superior platform on real UDP and TCP sockets of 127.0.0.1.

The superior (:mod:`tests.vms.gb28181.superior`) has its own SIP handling. Media is out
of scope here: live INVITEs get a media starter that records what it is asked and ends
when told, so the signalling (SDP answer, ACK, BYE both ways, errors) is what is checked.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from streams import IngestState
from tests.vms.gb28181.superior import PASSWORD, REALM, SERVER_ID, Superior, build
from vms.config import Config
from vms.config_loader import parse_config
from vms.gb28181 import Cascade, MediaTarget

LOCAL_ID = "44148100002000000001"
HALLS = ["social", "tax", "police"]


def site(transport: str, port: int, *, cameras: int = 4, extra: str = "") -> Config:
    halls = "".join(f"  - {{id: {h}, name: 兴宁市{h}服务大厅}}\n" for h in HALLS)
    cams = "".join(
        f"  - {{id: cam{i}, name: 窗口{i}, hall: {HALLS[i % len(HALLS)]}, url: 'demo://c{i}'}}\n"
        for i in range(cameras)
    )
    return parse_config(
        f"""
centres:
  - {{id: xingning, name: 兴宁市政务服务中心, halls: all}}
  - {{id: meizhou, name: 梅州市政务服务中心, halls: [social, tax]}}
halls:
{halls}cameras:
{cams}gb28181:
  platforms:
    - name: meizhou
      server_id: "{SERVER_ID}"
      domain: "{REALM}"
      host: 127.0.0.1
      port: {port}
      transport: {transport}
      local_id: "{LOCAL_ID}"
      local_host: 127.0.0.1
      local_port: 0
      password: {PASSWORD}
      register_expiry: 3
      keepalive_interval: 0.3
      transaction_timeout: 0.4
      backoff_initial: 0.1
      backoff_max: 0.5
      centre: meizhou
      catalog_batch: 5
{extra}"""
    )


class RecordingMedia:
    """A media starter that records what it is asked; its sessions end when told."""

    def __init__(self) -> None:
        self.opened: list[tuple[str, MediaTarget]] = []
        self.sessions: list[Session] = []

    async def open(self, camera_id: str, target: MediaTarget) -> Session:
        self.opened.append((camera_id, target))
        session = Session()
        self.sessions.append(session)
        return session


class Session:
    local_port = 30000
    bytes_sent = 1234

    def __init__(self) -> None:
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()

    async def start(self) -> None:
        self.started.set()

    async def stop(self) -> None:
        self.stopped.set()


class Harness:
    def __init__(self, superior: Superior, cascade: Cascade, media: RecordingMedia, online: dict[str, bool]):
        self.superior, self.cascade, self.media, self.online = superior, cascade, media, online
        self.records: list[dict[str, Any]] = []

    @property
    def uri(self) -> str:
        return f"sip:{LOCAL_ID}@{REALM}"

    async def registered(self, within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not self.cascade.platforms[0].status.registered:
                await asyncio.sleep(0.02)


async def harness(transport: str, **kwargs: Any) -> AsyncIterator[Harness]:
    superior = Superior(transport)
    await superior.start()
    config = site(transport, superior.port, **kwargs)
    online = {camera.id: True for camera in config.cameras}
    media = RecordingMedia()
    records: list[dict[str, Any]] = []
    cascade = Cascade(
        config,
        online=lambda cid: online[cid],
        recording=lambda cid: False,
        media=media,
        record=lambda action, **fields: records.append({"action": action, **fields}),
    )
    h = Harness(superior, cascade, media, online)
    h.records = records
    cascade.start()
    try:
        yield h
    finally:
        await cascade.stop()
        await superior.stop()


@pytest.fixture(params=["udp", "tcp"])
async def sip(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async for h in harness(request.param, cameras=12):
        yield h


async def test_register_with_digest_then_refresh(sip: Harness) -> None:
    await sip.registered()
    first, second = sip.superior.registers[:2]
    assert "Authorization" not in first.headers and second.h("Authorization").startswith("Digest ")
    assert f'username="{LOCAL_ID}"' in second.h("Authorization")
    assert second.h("Expires") == "3"
    async with asyncio.timeout(5):  # refreshed before the 3 s run out
        while len(sip.superior.registers) < 4:
            await asyncio.sleep(0.05)
    refresh = sip.superior.registers[3]
    assert refresh.h("Call-ID") == first.h("Call-ID") and refresh.h("Authorization")
    assert int(refresh.h("CSeq").split()[0]) > int(second.h("CSeq").split()[0])
    status = sip.cascade.platforms[0].status
    assert status.registered and status.registrations == 1 and status.last_error is None


async def test_re_registers_when_keepalives_go_unanswered() -> None:
    async for h in harness("udp"):
        await h.registered()
        registrations = h.cascade.platforms[0].status.registrations
        h.superior.answering = False
        async with asyncio.timeout(5):
            while h.cascade.platforms[0].status.registered:
                await asyncio.sleep(0.02)
        status = h.cascade.platforms[0].status
        assert status.last_error is not None and "keepalives" in status.last_error
        h.superior.answering = True  # the superior is back
        await h.registered()
        assert h.cascade.platforms[0].status.registrations == registrations + 1


def query(cmd: str, sn: int, device: str = LOCAL_ID, encoding: str = "UTF-8") -> bytes:
    text = (
        f'<?xml version="1.0" encoding="{encoding}"?>\n'
        f"<Query><CmdType>{cmd}</CmdType><SN>{sn}</SN><DeviceID>{device}</DeviceID></Query>"
    )
    return text.encode("gb2312" if encoding == "GB2312" else "utf-8")


async def responses(h: Harness, cmd: str, count: int) -> list[str]:
    found = []
    while len(found) < count:
        msg = await h.superior.next_request("MESSAGE")
        text = msg.body.decode("gb2312")
        assert text.startswith('<?xml version="1.0" encoding="GB2312"?>')
        if f"<CmdType>{cmd}</CmdType>" in text:
            found.append(text)
    return found


async def test_catalog_across_messages_for_a_gb2312_query(sip: Harness) -> None:
    await sip.registered()
    call_id = sip.superior.request("MESSAGE", sip.uri, query("Catalog", 77, encoding="GB2312"))
    assert (await sip.superior.next_response(call_id)).status == 200
    # meizhou sees social and tax: the group, 2 halls and the 8 cameras in them = 11 items, 5 a message
    bodies = await responses(sip, "Catalog", 3)
    assert all("<SN>77</SN>" in b and "<SumNum>11</SumNum>" in b for b in bodies)
    assert [re.search(r'Num="(\d+)"', b).group(1) for b in bodies] == ["5", "5", "1"]  # type: ignore[union-attr]
    ids = [i for b in bodies for i in re.findall(r"<Item>\s*<DeviceID>(\d{20})</DeviceID>", b)]
    assert len(set(ids)) == 11 and all(i.startswith("44148100") for i in ids)
    cameras = [i for i in ids if i[10:13] == "131"]
    assert len(cameras) == 8 and sum(i[10:13] == "216" for i in ids) == 2
    text = "".join(bodies)
    assert "兴宁市social服务大厅" in text and "兴宁市police服务大厅" not in text  # the centre's halls only
    assert text.count("<Status>ON</Status>") == 8


async def test_device_info_and_status() -> None:
    async for h in harness("udp"):
        await h.registered()
        h.superior.request("MESSAGE", h.uri, query("DeviceInfo", 5))
        (info,) = await responses(h, "DeviceInfo", 1)
        assert "<Result>OK</Result>" in info and "<DeviceName>兴宁市政务服务分厅</DeviceName>" in info
        camera = h.cascade.directory(h.cascade.platforms[0]).camera_node("cam0")
        assert camera is not None
        h.online["cam0"] = False
        h.superior.request("MESSAGE", h.uri, query("DeviceStatus", 6, camera.gb_id))
        (status,) = await responses(h, "DeviceStatus", 1)
        assert f"<DeviceID>{camera.gb_id}</DeviceID>" in status and "<Online>OFFLINE</Online>" in status
        call_id = h.superior.request("MESSAGE", h.uri, query("DeviceInfo", 7, "44148100001310000000"))
        answer = await h.superior.next_response(call_id)
        assert answer.status == 404 and "no device" in answer.h("Warning")


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.put_nowait(data)


async def test_answers_over_udp_go_where_the_via_says() -> None:
    """A superior that sends from another port than it listens on gets its answer at the
    source port when it asks with ``rport`` (RFC 3581), else at the Via's sent-by port
    (RFC 3261 18.2.2); never at the configured superior address."""
    loop = asyncio.get_running_loop()
    async for h in harness("udp"):
        await h.registered()
        platform = h.cascade.platforms[0].contact
        sender, sending = await loop.create_datagram_endpoint(_Inbox, local_addr=("127.0.0.1", 0))
        listener, listening = await loop.create_datagram_endpoint(_Inbox, local_addr=("127.0.0.1", 0))
        try:
            listen_port = listener.get_extra_info("sockname")[1]
            for rport, inbox in ((";rport", sending), ("", listening)):
                call_id = f"via-{len(rport)}"
                sender.sendto(
                    build(
                        f"MESSAGE {h.uri} SIP/2.0",
                        [
                            ("Via", f"SIP/2.0/UDP 127.0.0.1:{listen_port}{rport};branch=z9hG4bK{call_id}"),
                            ("From", f"<sip:{SERVER_ID}@{REALM}>;tag=via"),
                            ("To", f"<{h.uri}>"),
                            ("Call-ID", call_id),
                            ("CSeq", "1 MESSAGE"),
                            ("Content-Type", "Application/MANSCDP+xml"),
                        ],
                        query("DeviceInfo", 9),
                    ),
                    platform,
                )
                async with asyncio.timeout(5):
                    answer = (await inbox.received.get()).decode()
                assert answer.startswith("SIP/2.0 200") and f"Call-ID: {call_id}" in answer
                if rport:
                    sender_port = sender.get_extra_info("sockname")[1]
                    assert f"rport={sender_port}" in answer and "received=127.0.0.1" in answer
            assert sending.received.empty() and listening.received.empty()
        finally:
            sender.close()
            listener.close()


async def test_catalog_subscription_notifies_a_camera_going_offline() -> None:
    async for h in harness("tcp"):
        await h.registered()
        call_id = h.superior.request(
            "SUBSCRIBE", h.uri, query("Catalog", 9), [("Event", "Catalog"), ("Expires", "600")]
        )
        answer = await h.superior.next_response(call_id)
        assert answer.status == 200 and answer.h("Expires") == "600" and ";tag=" in answer.h("To")
        h.online["cam0"] = False
        h.cascade.on_state("cam0", IngestState.ONLINE, IngestState.OFFLINE, "connection refused")
        h.cascade.on_state("cam2", IngestState.ONLINE, IngestState.OFFLINE, "hall not shared")
        notify = await h.superior.next_request("NOTIFY")
        body = notify.body.decode("gb2312")
        camera = h.cascade.directory(h.cascade.platforms[0]).camera_node("cam0")
        assert camera is not None
        assert notify.h("Call-ID") == call_id and notify.h("Event") == "Catalog"
        assert f"<DeviceID>{camera.gb_id}</DeviceID>" in body and "<Event>OFF</Event>" in body
        assert "<SumNum>1</SumNum>" in body
        with pytest.raises(TimeoutError):  # cam2 is in police, which meizhou does not see
            await h.superior.next_request("NOTIFY", within=0.5)


def offer(
    channel: str, proto: str = "RTP/AVP", setup: str = "", ssrc: str = "0100000001", codec: str = "PS"
) -> bytes:
    lines = [
        "v=0",
        f"o={channel} 0 0 IN IP4 127.0.0.1",
        "s=Play",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=video 40000 {proto} 96",
        "a=recvonly",
        f"a=rtpmap:96 {codec}/90000",
    ]
    lines += [f"a=setup:{setup}"] if setup else []
    lines += [f"y={ssrc}"]
    return ("\r\n".join(lines) + "\r\n").encode()


async def invite(h: Harness, channel: str, body: bytes) -> tuple[str, Any]:
    call_id = h.superior.request("INVITE", f"sip:{channel}@{REALM}", body, content_type="application/sdp")
    return call_id, await h.superior.next_response(call_id)


@pytest.mark.parametrize(
    ("transport", "proto", "setup", "ours"),
    [
        ("udp", "RTP/AVP", "", "udp"),
        ("tcp", "TCP/RTP/AVP", "passive", "tcp-active"),
        ("tcp", "TCP/RTP/AVP", "active", "tcp-passive"),
    ],
)
async def test_live_invite_answer_ack_and_bye_from_the_superior(
    transport: str, proto: str, setup: str, ours: str
) -> None:
    async for h in harness(transport):
        await h.registered()
        camera = h.cascade.directory(h.cascade.platforms[0]).camera_node("cam1")
        assert camera is not None
        call_id, answer = await invite(h, camera.gb_id, offer(camera.gb_id, proto, setup, "0100000042"))
        assert answer.status == 200, answer.first
        sdp = answer.body.decode()
        assert "a=rtpmap:96 PS/90000" in sdp and "a=sendonly" in sdp and "y=0100000042" in sdp
        assert f"m=video 30000 {proto} 96" in sdp
        if setup:
            assert f"a=setup:{'active' if setup == 'passive' else 'passive'}" in sdp
        assert h.media.opened == [("cam1", MediaTarget("127.0.0.1", 40000, ours, 100000042, 96, "127.0.0.1"))]  # type: ignore[arg-type]
        h.superior.send(_in_dialog(h, "ACK", call_id, answer).replace(b"2 ACK", b"1 ACK"))
        session = h.media.sessions[0]
        await asyncio.wait_for(session.started.wait(), 5)
        h.superior.send(_in_dialog(h, "BYE", call_id, answer))
        await asyncio.wait_for(session.stopped.wait(), 5)
        assert h.cascade.live.count() == 0
        (record,) = h.records
        assert record["action"] == "view" and record["username"] == "platform meizhou"
        assert record["camera_id"] == "cam1" and record["protocol"] == "gb28181" and record["bytes"] == 1234
        assert record["detail"]["end"] == "BYE from the platform" and record["centre_id"] == "meizhou"


def _in_dialog(h: Harness, method: str, call_id: str, answer: Any) -> bytes:
    via = "UDP" if h.superior.transport == "udp" else "TCP"
    return build(
        f"{method} sip:{LOCAL_ID}@{REALM} SIP/2.0",
        [
            ("Via", f"SIP/2.0/{via} 127.0.0.1:{h.superior.port};branch=z9hG4bK{method.lower()}{call_id[:6]}"),
            ("From", answer.h("From")),
            ("To", answer.h("To")),
            ("Call-ID", call_id),
            ("CSeq", f"2 {method}"),
        ],
    )


async def test_media_ending_sends_bye_and_errors_are_exact() -> None:
    async for h in harness("udp", extra="      max_sessions: 1\n"):
        await h.registered()
        directory = h.cascade.directory(h.cascade.platforms[0])
        cam0, cam1 = directory.camera_node("cam0"), directory.camera_node("cam1")
        assert cam0 is not None and cam1 is not None
        call_id, answer = await invite(h, cam0.gb_id, offer(cam0.gb_id))
        assert answer.status == 200
        h.superior.send(_in_dialog(h, "ACK", call_id, answer).replace(b"2 ACK", b"1 ACK"))
        await asyncio.wait_for(h.media.sessions[0].started.wait(), 5)
        _, busy = await invite(h, cam1.gb_id, offer(cam1.gb_id))
        assert busy.status == 486 and "1 live sessions" in busy.h("Warning")
        h.media.sessions[0].done.set_result("the superior stopped answering RTCP")
        bye = await h.superior.next_request("BYE")
        assert bye.h("Call-ID") == call_id
        async with asyncio.timeout(5):
            while not h.records:
                await asyncio.sleep(0.02)
        assert h.records[0]["detail"]["end"] == "the superior stopped answering RTCP"
        police = h.cascade._config.camera("cam2")  # a camera of a hall meizhou may not see
        assert police.hall == "police"
        unknown = "44148100001319999999"
        _, missing = await invite(h, unknown, offer(unknown))
        assert missing.status == 404 and "no channel" in missing.h("Warning")
        _, bad = await invite(h, cam1.gb_id, offer(cam1.gb_id, ssrc="12"))
        assert bad.status == 488 and "y=" in bad.h("Warning")
        _, h264 = await invite(h, cam1.gb_id, offer(cam1.gb_id, codec="H264"))
        assert h264.status == 415
        assert len(h.media.opened) == 1


async def test_malformed_sip_and_xml_are_logged_once_and_harmless(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "vms.gb28181")
    async for h in harness("udp"):
        await h.registered()
        for _ in range(3):
            h.superior.send(b"GARBAGE / HTTP/1.1\r\n\r\n")
        call_id = h.superior.request("MESSAGE", h.uri, b"<Query><CmdType>Catalog</CmdType><SN>x")
        bad = await h.superior.next_response(call_id)
        assert bad.status == 400
        call_id = h.superior.request("MESSAGE", h.uri, query("DeviceInfo", 3))
        assert (await h.superior.next_response(call_id)).status == 200
        assert h.cascade.platforms[0].status.malformed == 4
        lines = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
        assert len(lines) == 2 and all("127.0.0.1:" in line for line in lines)
