"""A small RTSP client for tests, written from RFC 2326, 2617 and 3550 alone: requests with
Digest answered by hand, TCP interleaved frames and UDP datagrams collected with their
arrival times, and RTP and RTCP sender reports parsed by its own code (not the server's)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import struct
import time
from dataclasses import dataclass, field
from typing import cast

NTP_EPOCH = 2_208_988_800


@dataclass(frozen=True)
class Rtp:
    seq: int
    timestamp: int
    ssrc: int
    payload: int
    """Payload bytes (the header is 12 bytes: no CSRC, no extension)."""


@dataclass(frozen=True)
class SenderReport:
    ssrc: int
    wall: float
    """The NTP timestamp as Unix time."""
    rtp_time: int
    packets: int
    octets: int
    cname: str


def parse_rtp(packet: bytes) -> Rtp:
    first, _marker_pt, seq, timestamp, ssrc = struct.unpack(">BBHII", packet[:12])
    assert first >> 6 == 2 and first & 0x3F == 0, "RTP version 2 without padding, extension or CSRC"
    return Rtp(seq, timestamp, ssrc, len(packet) - 12)


def parse_sender_report(packet: bytes) -> SenderReport:
    """A compound packet that starts with a sender report and has an SDES CNAME."""
    first, kind, words = struct.unpack(">BBH", packet[:4])
    assert (first >> 6, kind, words) == (2, 200, 6 + 6 * (first & 0x1F))
    ssrc, seconds, fraction, rtp_time, packets, octets = struct.unpack(">IIIIII", packet[4:28])
    at = 4 * (words + 1)
    first, kind, words = struct.unpack(">BBH", packet[at : at + 4])
    assert (first >> 6, first & 0x1F, kind) == (2, 1, 202) and len(packet) == at + 4 * (words + 1)
    chunk_ssrc, item, length = struct.unpack(">IBB", packet[at + 4 : at + 10])
    assert (chunk_ssrc, item) == (ssrc, 1)
    cname = packet[at + 10 : at + 10 + length].decode()
    return SenderReport(ssrc, seconds - NTP_EPOCH + fraction / 2**32, rtp_time, packets, octets, cname)


def receiver_report(ssrc: int, about: int) -> bytes:
    """An RR with one report block about ``about``."""
    block = struct.pack(">IIIIII", about, 0, 0, 0, 0, 0)
    return struct.pack(">BBHI", 0x81, 201, 7, ssrc) + block


def bye(ssrc: int) -> bytes:
    """An RR without report blocks, then a BYE (RFC 3550 requires a report first)."""
    return struct.pack(">BBHI", 0x80, 201, 1, ssrc) + struct.pack(">BBHI", 0x81, 203, 1, ssrc)


@dataclass
class Arrivals:
    """What came on one track: RTP packets and sender reports, in order, with arrival times."""

    rtp: list[tuple[float, Rtp]] = field(default_factory=list)
    reports: list[tuple[float, SenderReport, int]] = field(default_factory=list)
    """Each report with the number of RTP packets of the track received before it."""


class Client:
    """One RTSP connection, as a user with a password."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.base = f"rtsp://127.0.0.1:{port}"
        self._port = port
        self._user, self._password = user, password
        self._cseq = 0
        self._nonce: str | None = None
        self.session: str | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self._port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def request(self, method: str, url: str, **headers: str) -> tuple[int, dict[str, str], str]:
        status, head, body = await self._send(method, url, headers)
        if status == 401:
            found = re.search(r'nonce="([^"]+)"', head.get("www-authenticate", ""))
            assert found is not None
            self._nonce = found.group(1)
            status, head, body = await self._send(method, url, headers)
        if "session" in head:
            self.session = head["session"].split(";")[0]
        return status, head, body

    async def _send(self, method: str, url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
        assert self.reader is not None and self.writer is not None
        self._cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self._cseq}"]
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        if self.session is not None:
            lines.append(f"Session: {self.session}")
        if self._nonce is not None:
            lines.append(f"Authorization: {self._digest(method, url)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        raw = (await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)).decode()
        head = {}
        for line in raw.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name:
                head[name.strip().lower()] = value.strip()
        length = int(head.get("content-length", "0"))
        body = (await self.reader.readexactly(length)).decode() if length else ""
        return int(raw.split(" ")[1]), head, body

    def _digest(self, method: str, url: str) -> str:
        ha1 = hashlib.md5(f"{self._user}:Hallwatch:{self._password}".encode()).hexdigest()
        ha2 = hashlib.md5(f"{method}:{url}".encode()).hexdigest()
        response = hashlib.md5(f"{ha1}:{self._nonce}:{ha2}".encode()).hexdigest()
        fields = f'username="{self._user}", realm="Hallwatch", nonce="{self._nonce}", uri="{url}"'
        return f'Digest {fields}, response="{response}"'

    async def read_interleaved(self, tracks: dict[int, Arrivals], until: float) -> None:
        """Collect ``$`` frames (RTP on channel 2n, RTCP on 2n+1 for track n) until ``until``
        (``time.monotonic()``)."""
        assert self.reader is not None
        while time.monotonic() < until:
            head = await asyncio.wait_for(self.reader.readexactly(4), 5)
            assert head[:1] == b"$", head
            data = await self.reader.readexactly(int.from_bytes(head[2:], "big"))
            track = tracks[head[1] // 2]
            if head[1] % 2 == 0:
                track.rtp.append((time.time(), parse_rtp(data)))
            else:
                track.reports.append((time.time(), parse_sender_report(data), len(track.rtp)))


class UdpTrack(asyncio.DatagramProtocol):
    """A client's RTP or RTCP socket of one track, filling its :class:`Arrivals`."""

    def __init__(self, arrivals: Arrivals, rtcp: bool) -> None:
        self.arrivals = arrivals
        self.rtcp = rtcp
        self.senders: set[tuple[str, int]] = set()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.senders.add(addr[:2])
        if self.rtcp:
            report = parse_sender_report(data)
            self.arrivals.reports.append((time.time(), report, len(self.arrivals.rtp)))
        else:
            self.arrivals.rtp.append((time.time(), parse_rtp(data)))


async def udp_pair(arrivals: Arrivals) -> tuple[UdpTrack, UdpTrack, int]:
    """An RTP and an RTCP socket on two consecutive ports; the RTP port."""
    loop = asyncio.get_running_loop()
    for _ in range(20):
        rtp_transport, rtp = await loop.create_datagram_endpoint(
            lambda: UdpTrack(arrivals, False), local_addr=("127.0.0.1", 0)
        )
        port = rtp_transport.get_extra_info("sockname")[1]
        try:
            _, rtcp = await loop.create_datagram_endpoint(
                lambda: UdpTrack(arrivals, True), local_addr=("127.0.0.1", port + 1)
            )
        except OSError:
            rtp_transport.close()
            continue
        return rtp, rtcp, port
    raise OSError("no port pair")
