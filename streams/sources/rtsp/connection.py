"""The RTSP wire: the control connection and the UDP port pair that RTP arrives on.

:class:`RtspConnection` frames RTSP 1.0 messages and ``$``-interleaved binary
frames on one TCP (or TLS) connection, numbers requests (CSeq), carries the
session id, answers a 401 once with credentials, answers the few requests a
server may send, and sends a best-effort TEARDOWN. :class:`UdpReceiver` binds
an RTP/RTCP port pair and queues RTP datagrams (bounded).

Event loop only: both belong to the ``packets()`` generator of one RTSP source.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import ssl
import time

from streams.errors import SourceAuthError, SourceError, SourceProtocolError, SourceUnreachable
from streams.redact import redact_text
from streams.sources.failures import (
    BAD_ANSWER,
    CLOSED,
    LOGIN_REFUSED,
    LOGIN_REQUIRED,
    LOGIN_SCHEME,
    LOST,
    NO_UDP_PORTS,
    NOT_RTSP,
    connect_reason,
    no_answer_reason,
)
from streams.sources.rtsp.auth import Authenticator, AuthUnsupported
from streams.udp_pair import bind_pair

log = logging.getLogger(__name__)

_USER_AGENT = "Hallwatch"
_MAX_HEADERS = 64
_MAX_BODY = 1024 * 1024
_TEARDOWN_TIMEOUT = 0.5
UDP_QUEUE_PACKETS = 4096
"""RTP datagrams (or early interleaved frames) kept while the reader is busy; newer ones are dropped."""
_UDP_RCVBUF = 2 * 1024 * 1024


class RtspMessage:
    """One RTSP response (``status`` > 0) or server request (``method`` set)."""

    __slots__ = ("body", "headers", "method", "reason", "status")

    def __init__(self, start: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.headers, self.body = headers, body
        self.status, self.method, self.reason = 0, "", ""
        parts = start.split(" ", 2)
        if parts[0].startswith("RTSP/") and len(parts) >= 2 and parts[1].isdigit():
            self.status = int(parts[1])
            self.reason = parts[2] if len(parts) > 2 else ""
        elif len(parts) == 3 and parts[2].startswith("RTSP/"):
            self.method = parts[0]
        else:
            raise SourceProtocolError(
                f"not an RTSP message: {redact_text(start[:60], [])!r}", public=NOT_RTSP
            )

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        lower = name.lower()
        return [v for k, v in self.headers if k.lower() == lower]

    @property
    def cseq(self) -> int:
        value = self.get("CSeq") or ""
        return int(value) if value.strip().isdigit() else -1


class RtspConnection:
    """The RTSP control connection: framing, CSeq, session and authentication."""

    def __init__(
        self, url: str, host: str, port: int, tls: bool, timeout: float, auth: Authenticator | None
    ) -> None:
        self.url, self._host, self._port, self._tls = url, host, port, tls
        self.timeout, self._auth = timeout, auth
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._cseq = 0
        self.session: str | None = None
        self.in_message = False
        """True while a frame or message is half read: the stream cannot be resynchronized."""

    async def open(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                self._reader, self._writer = await asyncio.open_connection(
                    self._host, self._port, ssl=ssl.create_default_context() if self._tls else None
                )
        except TimeoutError as err:
            raise SourceUnreachable(
                f"{self.url}: connect timed out after {self.timeout:g} s",
                public=connect_reason(err, self.timeout),
            ) from err
        except OSError as err:
            raise SourceUnreachable(
                f"{self.url}: cannot connect ({err.strerror or err})",
                public=connect_reason(err, self.timeout),
            ) from err

    @property
    def has_credentials(self) -> bool:
        return self._auth is not None

    @property
    def local_host(self) -> str:
        assert self._writer is not None
        return str(self._writer.get_extra_info("sockname")[0])

    @property
    def usable(self) -> bool:
        return (
            self._writer is not None
            and self._reader is not None
            and not self._writer.is_closing()
            and not self._reader.at_eof()
            and not self.in_message
        )

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def send(self, method: str, url: str, headers: dict[str, str] | None = None) -> int:
        """Write a request without waiting for its answer; return its CSeq."""
        assert self._writer is not None
        self._cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self._cseq}", f"User-Agent: {_USER_AGENT}"]
        if self.session is not None:
            lines.append(f"Session: {self.session}")
        if self._auth is not None and (value := self._auth.header(method, url)) is not None:
            lines.append(f"Authorization: {value}")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        try:
            self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        except OSError as err:
            raise SourceError(f"{self.url}: connection lost ({err})", public=LOST) from err
        return self._cseq

    async def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        frames: list[tuple[int, bytes, float]] | None = None,
    ) -> RtspMessage:
        """Send a request and return its answer, answering one 401 with credentials.

        Interleaved frames that arrive meanwhile go to ``frames`` (or are dropped).
        """
        for attempt in range(2):
            cseq = self.send(method, url, headers)
            try:
                async with asyncio.timeout(self.timeout):
                    reply = await self.wait_reply(cseq, frames)
            except TimeoutError as err:
                raise SourceUnreachable(
                    f"{self.url}: no answer to {method} within {self.timeout:g} s",
                    public=no_answer_reason(method, self.timeout),
                ) from err
            if reply.status != 401:
                return reply
            if self._auth is None:
                raise SourceAuthError(f"{self.url}: the camera requires credentials", public=LOGIN_REQUIRED)
            if attempt == 1:
                raise SourceAuthError(f"{self.url}: the camera refused the credentials", public=LOGIN_REFUSED)
            self.learn_challenge(reply)
        raise AssertionError("unreachable")

    def learn_challenge(self, reply: RtspMessage) -> None:
        assert self._auth is not None
        try:
            self._auth.learn(reply.get_all("WWW-Authenticate"))
        except AuthUnsupported as err:
            raise SourceAuthError(f"{self.url}: {err}", public=LOGIN_SCHEME) from err

    async def wait_reply(self, cseq: int, frames: list[tuple[int, bytes, float]] | None) -> RtspMessage:
        while True:
            item = await self.read_item()
            if isinstance(item, RtspMessage):
                if item.status and item.cseq == cseq:
                    return item
            elif frames is not None and len(frames) < UDP_QUEUE_PACKETS:
                frames.append((item[0], item[1], time.monotonic()))

    async def read_item(self) -> tuple[int, bytes] | RtspMessage:
        """The next interleaved frame ``(channel, data)`` or RTSP message (server requests are answered)."""
        assert self._reader is not None
        try:
            head = await self._reader.readexactly(4)
            self.in_message = True
            if head[0] == 0x24:  # "$": interleaved binary frame
                data = await self._reader.readexactly(int.from_bytes(head[2:4], "big"))
                self.in_message = False
                return head[1], data
            message = await self._read_message(head)
            self.in_message = False
        except asyncio.IncompleteReadError as err:
            raise SourceError(f"{self.url}: connection closed by the server", public=CLOSED) from err
        except asyncio.LimitOverrunError as err:
            raise SourceProtocolError(f"{self.url}: RTSP header line too long", public=BAD_ANSWER) from err
        except OSError as err:
            raise SourceError(f"{self.url}: connection lost ({err})", public=LOST) from err
        if message.method:
            self._answer(message)
        return message

    async def _read_message(self, head: bytes) -> RtspMessage:
        assert self._reader is not None
        start = (head + await self._reader.readuntil(b"\n")).decode("utf-8", "replace").strip()
        headers: list[tuple[str, str]] = []
        while True:
            line = (await self._reader.readuntil(b"\n")).decode("utf-8", "replace").strip()
            if not line:
                break
            if len(headers) >= _MAX_HEADERS:
                raise SourceProtocolError(f"{self.url}: too many RTSP header lines", public=BAD_ANSWER)
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        try:
            message = RtspMessage(start, headers, b"")
        except SourceProtocolError as err:
            raise SourceProtocolError(f"{self.url}: {err}", public=err.public) from err
        length_text = (message.get("Content-Length") or "0").strip()
        length = int(length_text) if length_text.isdigit() else -1
        if not 0 <= length <= _MAX_BODY:
            raise SourceProtocolError(f"{self.url}: RTSP body of {length} bytes", public=BAD_ANSWER)
        if length:
            message.body = await self._reader.readexactly(length)
        return message

    def _answer(self, request: RtspMessage) -> None:
        assert self._writer is not None
        status = "200 OK" if request.method in ("OPTIONS", "GET_PARAMETER") else "501 Not Implemented"
        self._writer.write(f"RTSP/1.0 {status}\r\nCSeq: {request.cseq}\r\n\r\n".encode())

    async def teardown(self, url: str) -> None:
        """Best effort: send TEARDOWN and wait briefly for its answer."""
        if self.session is None or not self.usable:
            return
        try:
            cseq = self.send("TEARDOWN", url)
            async with asyncio.timeout(min(_TEARDOWN_TIMEOUT, self.timeout)):
                await self.wait_reply(cseq, None)
        except (SourceError, TimeoutError, OSError) as err:
            log.debug("%s: TEARDOWN not confirmed: %s", self.url, err)


class UdpReceiver(asyncio.DatagramProtocol):
    """An RTP/RTCP port pair; RTP datagrams wait in a bounded queue (newest dropped when full).

    Receivers of one session's tracks may share ``arrived``, so one wait serves them all.
    """

    def __init__(self, arrived: asyncio.Event | None = None) -> None:
        self.queue: collections.deque[tuple[bytes, float]] = collections.deque()
        self.arrived = arrived or asyncio.Event()
        self.overflow = 0
        self.port = 0
        self._transports: list[asyncio.BaseTransport] = []

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if len(self.queue) >= UDP_QUEUE_PACKETS:
            self.overflow += 1
            return
        self.queue.append((data, time.monotonic()))
        self.arrived.set()

    async def open(self, host: str) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        async def open_rtp(port: int) -> asyncio.DatagramTransport:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_RCVBUF)
                sock.bind((host, port))
                transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)
            except BaseException:
                sock.close()
                raise
            return transport

        async def open_rtcp(port: int) -> asyncio.DatagramTransport:
            transport, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=(host, port)
            )
            return transport

        try:
            rtp, rtcp = await bind_pair(open_rtp, open_rtcp)
        except OSError as err:
            raise SourceError("no free UDP port pair for RTP", public=NO_UDP_PORTS) from err
        self._transports += [rtp, rtcp]
        self.port = rtp.get_extra_info("sockname")[1]

    def close(self) -> None:
        for transport in self._transports:
            transport.close()
        self._transports.clear()
