"""A superior platform for tests, on real UDP and TCP sockets of 127.0.0.1.

Its SIP handling is its own and minimal (a head split on CRLF, headers in a dict,
Content-Length framing over TCP): it shares no code with the parser under test. It
challenges REGISTER with a digest and checks the answer with its own MD5, answers
keepalives while ``answering`` is set, and keeps every request it receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

REALM = "4414000000"
PASSWORD = "cascade-password-12345"
SERVER_ID = "44140000002000000001"


@dataclass
class Msg:
    first: str
    headers: dict[str, str]
    body: bytes
    source: tuple[str, int] = ("", 0)

    @property
    def method(self) -> str:
        return self.first.split(" ")[0]

    @property
    def status(self) -> int:
        return int(self.first.split(" ")[1]) if self.first.startswith("SIP/2.0") else 0

    def h(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


def parse(raw: bytes) -> Msg:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("utf-8").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    return Msg(lines[0], headers, body)


def build(first: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    text = first + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return (text + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


@dataclass
class Superior:
    transport: str
    answering: bool = True
    registers: list[Msg] = field(default_factory=list)
    requests: asyncio.Queue[Msg] = field(default_factory=lambda: asyncio.Queue(1000))
    responses: asyncio.Queue[Msg] = field(default_factory=lambda: asyncio.Queue(1000))
    port: int = 0
    _udp: asyncio.DatagramTransport | None = None
    _server: asyncio.Server | None = None
    _writer: asyncio.StreamWriter | None = None
    _peer: tuple[str, int] | None = None
    _nonce: str = field(default_factory=lambda: secrets.token_hex(8))
    _readers: set[asyncio.Task[None]] = field(default_factory=set)
    on_request: Callable[[Msg], None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.transport == "udp":
            superior = self

            class _Protocol(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
                    superior._peer = (str(addr[0]), int(addr[1]))
                    superior._received(data, superior._peer)

            self._udp, _ = await loop.create_datagram_endpoint(_Protocol, local_addr=("127.0.0.1", 0))
            self.port = self._udp.get_extra_info("sockname")[1]
        else:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._writer is not None:
            self._writer.close()
        for task in list(self._readers):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        peer = writer.get_extra_info("peername")
        task = asyncio.current_task()
        assert task is not None
        self._readers.add(task)
        buffer = b""
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                buffer += chunk
                while b"\r\n\r\n" in buffer:
                    head, _, rest = buffer.partition(b"\r\n\r\n")
                    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
                    if len(rest) < length:
                        break
                    self._received(head + b"\r\n\r\n" + rest[:length], (peer[0], peer[1]))
                    buffer = rest[length:]
        self._readers.discard(task)

    def send(self, raw: bytes) -> None:
        if self._udp is not None:
            assert self._peer is not None
            self._udp.sendto(raw, self._peer)
        else:
            assert self._writer is not None
            self._writer.write(raw)

    def answer(
        self, request: Msg, status: int, reason: str, extra: list[tuple[str, str]] | None = None
    ) -> None:
        headers = [(k, request.h(k)) for k in ("Via", "From", "To", "Call-ID", "CSeq")]
        self.send(build(f"SIP/2.0 {status} {reason}", headers + (extra or [])))

    def _received(self, raw: bytes, source: tuple[str, int]) -> None:
        msg = parse(raw)
        msg.source = source
        if msg.first.startswith("SIP/2.0"):
            self.responses.put_nowait(msg)
            return
        if msg.method == "REGISTER":
            self._register(msg)
            return
        if msg.method == "MESSAGE" and b"<CmdType>Keepalive</CmdType>" in msg.body:
            if self.answering:
                self.answer(msg, 200, "OK")
            return
        if msg.method in ("MESSAGE", "NOTIFY", "BYE"):
            self.answer(msg, 200, "OK")
        self.requests.put_nowait(msg)

    def _register(self, msg: Msg) -> None:
        if not self.answering:
            return
        self.registers.append(msg)
        auth = msg.h("Authorization")
        if not auth:
            self.answer(
                msg,
                401,
                "Unauthorized",
                [("WWW-Authenticate", f'Digest realm="{REALM}", nonce="{self._nonce}"')],
            )
            return
        fields = dict(re.findall(r'(\w+)="?([^",]+)"?', auth))
        ha1 = md5(f"{fields['username']}:{REALM}:{PASSWORD}")
        expected = md5(f"{ha1}:{self._nonce}:{md5('REGISTER:' + fields['uri'])}")
        if fields["response"] == expected:
            self.answer(msg, 200, "OK", [("Expires", msg.h("Expires"))])
        else:
            self.answer(msg, 403, "Forbidden")

    async def next_request(self, method: str, within: float = 5.0) -> Msg:
        async with asyncio.timeout(within):
            while True:
                msg = await self.requests.get()
                if msg.method == method:
                    return msg

    async def next_response(self, call_id: str, within: float = 5.0) -> Msg:
        async with asyncio.timeout(within):
            while True:
                msg = await self.responses.get()
                if msg.h("Call-ID") == call_id and msg.status >= 200:
                    return msg

    def request(
        self,
        method: str,
        uri: str,
        body: bytes = b"",
        extra: list[tuple[str, str]] | None = None,
        content_type: str = "Application/MANSCDP+xml",
    ) -> str:
        """Send a request to the lower platform; returns its Call-ID."""
        call_id = secrets.token_hex(8)
        via = "SIP/2.0/UDP" if self.transport == "udp" else "SIP/2.0/TCP"
        headers = [
            ("Via", f"{via} 127.0.0.1:{self.port};branch=z9hG4bK{secrets.token_hex(6)}"),
            ("From", f"<sip:{SERVER_ID}@{REALM}>;tag={secrets.token_hex(4)}"),
            ("To", f"<{uri}>"),
            ("Call-ID", call_id),
            ("CSeq", f"1 {method}"),
            ("Contact", f"<sip:{SERVER_ID}@127.0.0.1:{self.port}>"),
            ("Max-Forwards", "70"),
        ] + (extra or [])
        if body:
            headers.append(("Content-Type", content_type))
        self.send(build(f"{method} {uri} SIP/2.0", headers, body))
        return call_id
