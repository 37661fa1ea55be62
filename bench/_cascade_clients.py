"""The cascade benchmark's clients: RTSP re-serve readers and GB/T 28181 live sessions.

Both run in a viewer process (``_viewers.py``) beside its WebRTC and MSE viewers
and look like them to the benchmark: a ``units`` tracker that :meth:`take` empties
at each window, ``join`` and ``close``.

* :class:`RtspViewer` speaks RTSP to the relay's re-serve: ``DESCRIBE`` (answering
  the Digest challenge with an API token as the password), ``SETUP`` of the video
  track over TCP interleaved, ``PLAY``; then it reads the ``$`` frames and hands
  each RTP packet's sequence number, timestamp, marker and payload to
  :class:`~_units.RtpUnits`, exactly what the lean WebRTC viewer does with the
  packets aiortc gives it. Nothing is decoded; RTCP is not sent (over TCP the
  relay does not ask for it).
* :class:`GbSession` is one live session of the superior platform
  (``tests/vms/gb28181/superior.py``, one per process, which the service
  registers with): ``INVITE`` with a UDP port of 127.0.0.1 in its SDP offer,
  ``ACK``, and at the end ``BYE``. :class:`PsUnits` counts the RTP packets that
  arrive: an access unit per marker bit, complete when no sequence number was
  missing, and the test camera's clock SEI is looked for in the unit's first
  packet (the PS pack and PES headers come first; the SEI precedes the slice).
  Its datagrams are not depacketized further: PS is not demuxed.

Event loop of a viewer process. GB sessions are opened and closed one at a time
(:data:`_SIP_TURN`): the test superior matches responses to calls in one queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import re
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from _units import RtpUnits, UnitTracker, read_clock

from tests.vms.gb28181.superior import REALM, Superior

CHANNEL_ID = "44148100001310000001"
"""The bench camera's fixed GB/T 28181 channel ID (``gb28181.channel_ids``)."""
_RCVBUF = 4 * 1024 * 1024
_PS_PACK = b"\x00\x00\x01\xba"
_PS_SYSTEM = b"\x00\x00\x01\xbb"
_RTP = struct.Struct(">BBHII")


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


@dataclass
class RtspOptions:
    """Where the re-serve listens and whose token answers its Digest challenge."""

    port: int
    username: str
    token: str


class RtspViewer:
    """One RTSP re-serve client over TCP interleaved; see the module docstring."""

    def __init__(self, options: RtspOptions, camera: str) -> None:
        self.camera = camera
        self.units = RtpUnits()
        self._options = options
        self._url = f"rtsp://127.0.0.1:{options.port}/{camera}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._cseq = 0
        self._challenge: dict[str, str] = {}
        self.error: str | None = None

    async def join(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._options.port)
            with contextlib.suppress(OSError):
                sock = self._writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            status, headers, body = await self._request("DESCRIBE", self._url, {"Accept": "application/sdp"})
            if status == 401:
                self._challenge = dict(re.findall(r'(\w+)="([^"]*)"', headers.get("www-authenticate", "")))
                status, headers, body = await self._request(
                    "DESCRIBE", self._url, {"Accept": "application/sdp"}
                )
            if status != 200:
                raise RuntimeError(f"RTSP DESCRIBE answered {status}")
            video = body.split("m=video", 1)[1] if "m=video" in body else body
            control = re.search(r"a=control:(\S+)", video)
            track = f"{self._url}/{control[1] if control else 'trackID=0'}"
            status, headers, _ = await self._request(
                "SETUP", track, {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"}
            )
            if status != 200:
                raise RuntimeError(f"RTSP SETUP answered {status}")
            session = headers.get("session", "").split(";")[0]
            status, _, _ = await self._request("PLAY", self._url, {"Session": session, "Range": "npt=0-"})
            if status != 200:
                raise RuntimeError(f"RTSP PLAY answered {status}")
        self._task = asyncio.create_task(self._read(), name=f"rtsp viewer {self.camera}")

    def _authorization(self, method: str, uri: str) -> str:
        realm, nonce = self._challenge["realm"], self._challenge["nonce"]
        ha1 = _md5(f"{self._options.username}:{realm}:{self._options.token}")
        response = _md5(f"{ha1}:{nonce}:{_md5(f'{method}:{uri}')}")
        return (
            f'Digest username="{self._options.username}", realm="{realm}", nonce="{nonce}", '
            f'uri="{uri}", response="{response}"'
        )

    async def _request(self, method: str, uri: str, extra: dict[str, str]) -> tuple[int, dict[str, str], str]:
        assert self._reader is not None and self._writer is not None
        self._cseq += 1
        headers = {"CSeq": str(self._cseq), **extra}
        if self._challenge:
            headers["Authorization"] = self._authorization(method, uri)
        head = f"{method} {uri} RTSP/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._writer.write((head + "\r\n").encode())
        lines = (await self._reader.readuntil(b"\r\n\r\n")).decode("utf-8", "replace").split("\r\n")
        answer = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            answer[name.strip().lower()] = value.strip()
        length = int(answer.get("content-length", "0"))
        body = (await self._reader.readexactly(length)).decode("utf-8", "replace") if length else ""
        return int(lines[0].split()[1]), answer, body

    async def _read(self) -> None:
        reader, units = self._reader, self.units
        assert reader is not None
        try:
            while True:
                head = await reader.readexactly(4)
                if head[0] != 0x24:  # an RTSP message (none is expected while playing)
                    await reader.readuntil(b"\r\n\r\n")
                    continue
                packet = await reader.readexactly(int.from_bytes(head[2:4], "big"))
                if head[1] == 0 and len(packet) > 12:
                    units.packet(
                        int.from_bytes(packet[2:4], "big"),
                        int.from_bytes(packet[4:8], "big"),
                        bool(packet[1] & 0x80),
                        packet[12:],
                    )
        except (asyncio.IncompleteReadError, ConnectionError) as err:
            self.error = f"{type(err).__name__}: {err}"

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class PsUnits(UnitTracker):
    """Access units of PS over RTP, counted on the marker bit; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self._seq: int | None = None
        self._ok = False
        self._starting = True
        self._clock: int | None = None
        self._key = False
        self.first_packet: float | None = None
        self.first_key: bool | None = None

    def packet(self, data: bytes) -> None:
        if self.first_packet is None:
            self.first_packet = time.monotonic()
            self.first_key = _PS_SYSTEM in data[12:200]
        seq = int.from_bytes(data[2:4], "big")
        if self._seq is not None:
            missing = (seq - self._seq - 1) & 0xFFFF
            if missing >= 0x8000:
                return
            if missing:
                self.lost += missing
                self._ok = False
        self._seq = seq
        if self._starting:
            payload = data[12:]
            self._starting = False
            self._ok = payload.startswith(_PS_PACK)
            self._key = _PS_SYSTEM in payload[:200]
            self._clock = read_clock(payload)
        if data[1] & 0x80:
            self._starting = True
            if self._ok:
                self.unit(self._clock, self._key, time.monotonic(), time.time_ns())
            else:
                self.incomplete += 1


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, units: PsUnits) -> None:
        self._units = units

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._units.packet(data)


class Cascade:
    """The superior platform of one viewer process, and the order of its SIP calls."""

    def __init__(self) -> None:
        self.superior = Superior("udp")
        self.turn = asyncio.Lock()

    async def start(self) -> int:
        await self.superior.start()
        return self.superior.port

    async def registered(self, timeout: float) -> None:
        """Until the service's REGISTER carried an answer to the challenge."""
        async with asyncio.timeout(timeout):
            while not any(m.h("Authorization") for m in self.superior.registers):
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        await self.superior.stop()


class GbSession:
    """One live GB/T 28181 session of the superior; see the module docstring."""

    def __init__(self, cascade: Cascade, camera: str) -> None:
        self.camera = camera
        self.units = PsUnits()
        self._cascade = cascade
        self._transport: asyncio.DatagramTransport | None = None
        self._call: tuple[str, Any] | None = None
        self.invited: float | None = None
        self.acked: float | None = None

    async def join(self, timeout: float) -> None:
        from tests.vms.gb28181.test_cascade import _in_dialog, offer

        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Receiver(self.units), local_addr=("127.0.0.1", 0)
        )
        with contextlib.suppress(OSError):
            sock = self._transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        port = self._transport.get_extra_info("sockname")[1]
        ssrc = f"0{random.randrange(10**9):09d}"
        body = offer(CHANNEL_ID, ssrc=ssrc).replace(b"m=video 40000", f"m=video {port}".encode())
        superior = self._cascade.superior
        async with self._cascade.turn:
            self.invited = time.monotonic()
            call_id = superior.request(
                "INVITE", f"sip:{CHANNEL_ID}@{REALM}", body, content_type="application/sdp"
            )
            answer = await superior.next_response(call_id, within=timeout)
            if answer.status != 200:
                raise RuntimeError(f"INVITE answered {answer.first}")
            self._call = (call_id, answer)
            superior.send(_in_dialog(_Dialog(superior), "ACK", call_id, answer).replace(b"2 ACK", b"1 ACK"))
            self.acked = time.monotonic()

    async def close(self) -> None:
        from tests.vms.gb28181.test_cascade import _in_dialog

        call, self._call = self._call, None
        if call is not None:
            superior = self._cascade.superior
            async with self._cascade.turn:
                superior.send(_in_dialog(_Dialog(superior), "BYE", *call))
                with contextlib.suppress(TimeoutError):
                    await superior.next_response(call[0], within=3.0)
        if self._transport is not None:
            self._transport.close()
            self._transport = None


@dataclass
class _Dialog:
    """What ``_in_dialog`` of the cascade tests reads from its harness: the superior."""

    superior: Any


async def first_packet(cascade: Cascade, camera: str, timeout: float) -> dict[str, Any]:
    """One session, timed: INVITE sent and ACK sent to the first RTP packet and the first complete unit."""
    session = GbSession(cascade, camera)
    try:
        await session.join(timeout)
        deadline = time.monotonic() + timeout
        units = session.units
        while units.first_unit is None and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        assert session.invited is not None and session.acked is not None
        first = units.first_packet
        return {
            "invite": None if first is None else first - session.invited,
            "ack": None if first is None else first - session.acked,
            "answer": session.acked - session.invited,
            "unit": None if units.first_unit is None else units.first_unit - session.invited,
            "key": units.first_key,
        }
    finally:
        await session.close()
