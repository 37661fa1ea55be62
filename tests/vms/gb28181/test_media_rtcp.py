"""A superior platform that vanishes ends its live GB/T 28181 session, and Hallwatch sends BYE.

The superior here has its own sockets on 127.0.0.1: an RTP port and, beside it, an RTCP
port. Over UDP it receives our sender reports there (parsed by the test's own code), and
its RTCP BYE, its RTCP silence after it has sent RTCP, or its RTP port closed (ICMP port
unreachable) ends the session; over TCP, its closing the connection does. Each time the
dialog sends BYE and the audit record says why.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from streams import IngestState, StreamManager
from tests.vms.gb28181.superior import Superior
from tests.vms.gb28181.test_cascade import Harness, _in_dialog, invite, offer, site
from vms.gb28181 import Cascade
from vms.gb28181.ps_media import PsMedia
from vms.relay import build_manager

RTCP_TIMEOUT = 1.0
SSRC = 100_000_077
NTP_EPOCH = 2_208_988_800


@dataclass
class Media:
    """The superior's media end: RTP and RTCP sockets (UDP), or a TCP listener."""

    rtp: list[tuple[float, bytes]] = field(default_factory=list)
    rtcp: list[tuple[float, bytes, tuple[str, int]]] = field(default_factory=list)
    rtp_socket: socket.socket | None = None
    rtcp_socket: socket.socket | None = None
    port: int = 0

    def open_udp(self) -> None:
        for _ in range(20):
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtp.bind(("127.0.0.1", 0))
            port = rtp.getsockname()[1]
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind(("127.0.0.1", port + 1))
            except OSError:
                rtp.close()
                rtcp.close()
                continue
            rtp.setblocking(False)
            rtcp.setblocking(False)
            self.rtp_socket, self.rtcp_socket, self.port = rtp, rtcp, port
            return
        raise OSError("no port pair")

    def poll(self) -> None:
        """Take what arrived on either socket."""
        now = time.time()
        for sock, rtcp in ((self.rtp_socket, False), (self.rtcp_socket, True)):
            while sock is not None and sock.fileno() >= 0:
                try:
                    data, addr = sock.recvfrom(65536)
                except BlockingIOError:
                    break
                if rtcp:
                    self.rtcp.append((now, data, addr))
                else:
                    self.rtp.append((now, data))

    def close(self) -> None:
        for sock in (self.rtp_socket, self.rtcp_socket):
            if sock is not None:
                sock.close()


@dataclass
class Live:
    h: Harness
    manager: StreamManager
    records: list[dict[str, Any]]
    call_id: str = ""
    answer: Any = None
    our_port: int = 0

    async def play(self, media_port: int, proto: str = "RTP/AVP", setup: str = "") -> None:
        """INVITE cam1 to ``media_port``, then ACK."""
        async with asyncio.timeout(15):
            while self.manager.hub("cam1").last_keyframe is None:
                await asyncio.sleep(0.05)
        camera = self.h.cascade.directory(self.h.cascade.platforms[0]).camera_node("cam1")
        assert camera is not None
        body = offer(camera.gb_id, proto, setup, ssrc="0100000077")
        body = body.replace(b"m=video 40000", f"m=video {media_port}".encode())
        self.call_id, self.answer = await invite(self.h, camera.gb_id, body)
        assert self.answer.status == 200, self.answer.first
        found = re.search(r"m=video (\d+) ", self.answer.body.decode())
        assert found is not None
        self.our_port = int(found[1])
        self.h.superior.send(_in_dialog(self.h, "ACK", self.call_id, self.answer).replace(b"2 ACK", b"1 ACK"))

    async def ended_with_bye(self, within: float = 10.0) -> str:
        """Wait for our BYE of the dialog and the audit record; why the session ended."""
        bye = await asyncio.wait_for(self.h.superior.next_request("BYE"), within)
        assert bye.h("Call-ID") == self.call_id
        async with asyncio.timeout(5):
            while not self.records:
                await asyncio.sleep(0.02)
        [record] = self.records
        reason: str = record["detail"]["end"]
        return reason


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    superior = Superior("udp")
    await superior.start()
    config = site("udp", superior.port, cameras=2)
    manager = build_manager(config)
    media = PsMedia(manager, rtcp_timeout=RTCP_TIMEOUT)
    records: list[dict[str, Any]] = []
    cascade = Cascade(
        config,
        online=lambda cid: manager.stats(cid).state is IngestState.ONLINE,
        recording=lambda cid: False,
        media=media,
        record=lambda action, **fields: records.append({"action": action, **fields}),
    )
    await manager.start()
    cascade.start()
    try:
        h = Harness(superior, cascade, None, {})  # type: ignore[arg-type]
        await h.registered()
        yield Live(h, manager, records)
    finally:
        await cascade.stop()
        await media.stop()
        await manager.stop()
        await superior.stop()


@pytest.fixture
def media() -> Iterator[Media]:
    opened = Media()
    opened.open_udp()
    yield opened
    opened.close()


async def receive(media: Media, condition: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        media.poll()
        if condition():
            return
        assert time.monotonic() < deadline, "not received in time"
        await asyncio.sleep(0.02)


def sender_report(data: bytes) -> tuple[int, float, int, int, int]:
    """SSRC, NTP time (as Unix time), RTP time, packet and octet counts of a compound packet
    that begins with a sender report and names its sender in an SDES CNAME."""
    first, kind, words = struct.unpack(">BBH", data[:4])
    assert (first >> 6, kind, words) == (2, 200, 6)
    ssrc, seconds, fraction, rtp_time, packets, octets = struct.unpack(">IIIIII", data[4:28])
    first, kind, _ = struct.unpack(">BBH", data[28:32])
    assert (first & 0x1F, kind) == (1, 202) and struct.unpack(">IB", data[32:37]) == (ssrc, 1)
    return ssrc, seconds - NTP_EPOCH + fraction / 2**32, rtp_time, packets, octets


def receiver_report(ssrc: int) -> bytes:
    return struct.pack(">BBHI", 0x81, 201, 7, 0x5EED) + struct.pack(">IIIIII", ssrc, 0, 0, 0, 0, 0)


async def test_sender_reports_reach_the_superior_and_its_rtcp_silence_ends_the_session(
    live: Live, media: Media
) -> None:
    await live.play(media.port)
    await receive(media, lambda: media.rtcp)
    arrived, data, sender = media.rtcp[0]
    assert sender == ("127.0.0.1", live.our_port + 1), "from our RTP port plus one"
    ssrc, wall, rtp_time, packets, octets = sender_report(data)
    assert ssrc == SSRC and abs(wall - arrived) < 0.5
    assert 0 < packets <= len(media.rtp) and octets == sum(len(p) - 12 for _, p in media.rtp[:packets])
    last = struct.unpack(">I", media.rtp[packets - 1][1][4:8])[0]
    assert 0 <= ((rtp_time - last) % 2**32) / 90_000 < 1.5, "RTP time at or after the last packet's"
    await asyncio.sleep(2 * RTCP_TIMEOUT)
    assert live.h.cascade.live.count() == 1, "a superior that never sent RTCP is not held to it"
    assert media.rtcp_socket is not None
    media.rtcp_socket.sendto(receiver_report(SSRC), ("127.0.0.1", live.our_port + 1))
    reported = time.monotonic()
    assert await live.ended_with_bye() == "no RTCP from the superior for 1 s"
    assert RTCP_TIMEOUT <= time.monotonic() - reported < RTCP_TIMEOUT + 2


async def test_an_rtcp_bye_from_the_superior_ends_the_session(live: Live, media: Media) -> None:
    await live.play(media.port)
    await receive(media, lambda: len(media.rtp) > 10)
    bye = struct.pack(">BBHI", 0x80, 201, 1, 0x5EED) + struct.pack(">BBHI", 0x81, 203, 1, 0x5EED)
    assert media.rtcp_socket is not None
    media.rtcp_socket.sendto(bye, ("127.0.0.1", live.our_port + 1))
    assert await live.ended_with_bye(within=3) == "the superior sent RTCP BYE"


async def test_a_closed_rtp_port_ends_the_session(live: Live, media: Media) -> None:
    await live.play(media.port)
    await receive(media, lambda: len(media.rtp) > 10)
    assert media.rtp_socket is not None
    media.rtp_socket.close()  # the next datagrams draw ICMP port unreachable
    reason = await live.ended_with_bye(within=3)
    assert reason.startswith("send failed") and "refused" in reason.lower(), reason


async def test_a_closed_tcp_connection_ends_the_session(live: Live) -> None:
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def take_some_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readexactly(50_000)
        writer.close()
        accepted.set_result(len(data))

    listener = await asyncio.start_server(take_some_then_close, "127.0.0.1", 0)
    try:
        await live.play(listener.sockets[0].getsockname()[1], "TCP/RTP/AVP", "passive")
        assert await asyncio.wait_for(accepted, 10) == 50_000
        assert (await live.ended_with_bye(within=5)).startswith("send failed")
    finally:
        listener.close()
        await listener.wait_closed()
