"""SIP over UDP and TCP on asyncio, towards one superior platform.

A transport delivers every whole message it receives to ``on_message(message,
source)`` and every piece it cannot use to ``on_garbage(reason, source)``. Over UDP one
datagram is one message; over TCP messages are framed by their ``Content-Length``
(a frame that cannot be delimited closes the connection, since nothing after it can
be trusted). ``on_closed`` is called once when a TCP connection ends. Event loop only.

Over UDP, answers go where the request came from, not to the configured superior
address: a request's top ``Via`` is stamped on arrival with ``received`` (and ``rport``
when the sender asked for it, RFC 3581), and an answer, which copies that ``Via``, is
sent to the address it names (RFC 3261 18.2.2). A superior that sends from another
port than it listens on still gets its answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import cast

from vms.gb28181.sip import MAX_MESSAGE, SipMessage, SipParseError, body_length, parse, split_head

log = logging.getLogger(__name__)

Address = tuple[str, int]
MessageHandler = Callable[[SipMessage, Address], None]
GarbageHandler = Callable[[str, Address], None]


class SipTransport:
    """What the platform client uses: send, its local address, close."""

    kind = "UDP"
    local: Address = ("0.0.0.0", 0)

    async def send(self, message: SipMessage) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class UdpTransport(SipTransport, asyncio.DatagramProtocol):
    kind = "UDP"

    def __init__(self, remote: Address, on_message: MessageHandler, on_garbage: GarbageHandler) -> None:
        self._remote = remote
        self._on_message = on_message
        self._on_garbage = on_garbage
        self._transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(
        cls, local: Address, remote: Address, on_message: MessageHandler, on_garbage: GarbageHandler
    ) -> UdpTransport:
        loop = asyncio.get_running_loop()
        protocol = cls(remote, on_message, on_garbage)
        await loop.create_datagram_endpoint(lambda: protocol, local_addr=local)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        self.local = transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        source = (str(addr[0]), int(addr[1]))
        if not data.strip():
            return  # a keepalive CRLF
        try:
            message = parse(data)
        except SipParseError as err:
            self._on_garbage(str(err), source)
            return
        if message.is_request:
            stamp_via(message, source)
        self._on_message(message, source)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error towards %s:%d: %s", *self._remote, exc)

    async def send(self, message: SipMessage) -> None:
        if self._transport is None or self._transport.is_closing():
            raise ConnectionError("the UDP socket is closed")
        to = self._remote if message.is_request else answer_address(message, self._remote)
        self._transport.sendto(message.to_bytes(), to)

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class TcpTransport(SipTransport):
    kind = "TCP"

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_message: MessageHandler,
        on_garbage: GarbageHandler,
        on_closed: Callable[[], None],
    ) -> None:
        self._reader, self._writer = reader, writer
        self._on_message, self._on_garbage, self._on_closed = on_message, on_garbage, on_closed
        self.local = writer.get_extra_info("sockname")[:2]
        peer = writer.get_extra_info("peername")
        self._peer: Address = (str(peer[0]), int(peer[1]))
        self._task = asyncio.create_task(self._read(), name=f"sip-tcp-{self._peer[0]}:{self._peer[1]}")

    @classmethod
    async def open(
        cls,
        local: Address,
        remote: Address,
        on_message: MessageHandler,
        on_garbage: GarbageHandler,
        on_closed: Callable[[], None],
    ) -> TcpTransport:
        """Connect (bounded by the caller's ``asyncio.timeout``)."""
        reader, writer = await asyncio.open_connection(
            remote[0], remote[1], local_addr=local if local[1] else None
        )
        return cls(reader, writer, on_message, on_garbage, on_closed)

    async def _read(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = await self._reader.read(65536)
                if not chunk:
                    return
                buffer = self._deliver(buffer + chunk)
        except (SipParseError, ConnectionError, OSError) as err:
            self._on_garbage(f"{err}; the connection is closed", self._peer)
        finally:
            self._writer.close()
            self._on_closed()

    def _deliver(self, buffer: bytes) -> bytes:
        """Hand over every whole message in ``buffer``; return the rest."""
        while True:
            buffer = buffer.lstrip(b"\r\n")
            parts = split_head(buffer)
            if parts is None:
                if len(buffer) > MAX_MESSAGE:
                    raise SipParseError("a message head longer than the largest message")
                return buffer
            head, rest = parts
            length = body_length(head)
            if length is None:
                raise SipParseError("a message over TCP has no Content-Length")
            if len(rest) < length:
                if len(head) + length > MAX_MESSAGE:
                    raise SipParseError(f"a message larger than {MAX_MESSAGE} bytes")
                return buffer
            whole = buffer[: len(buffer) - len(rest) + length]
            buffer = rest[length:]
            try:
                message = parse(whole, stream=True)
            except SipParseError as err:
                self._on_garbage(str(err), self._peer)
                continue
            self._on_message(message, self._peer)

    async def send(self, message: SipMessage) -> None:
        if self._writer.is_closing():
            raise ConnectionError("the TCP connection is closed")
        self._writer.write(message.to_bytes())
        await self._writer.drain()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


def stamp_via(request: SipMessage, source: Address) -> None:
    """Note in ``request``'s top ``Via`` the address it came from: ``received`` when it
    differs from the sent-by host or ``rport`` was asked for, and ``rport``'s value."""
    top, comma, others = (request.header("Via") or "").partition(",")
    protocol, host, _, params = _via(top)
    if not protocol:
        return
    asked = "rport" in params
    kept = [f"{k}={v}" if v else k for k, v in params.items() if k not in ("received", "rport")]
    if asked or host != source[0]:
        kept.append(f"received={source[0]}")
    if asked:
        kept.append(f"rport={source[1]}")
    request.set_header("Via", ";".join([top.split(";")[0].strip(), *kept]) + comma + others)


def answer_address(answer: SipMessage, default: Address) -> Address:
    """Where an answer goes over UDP: its top ``Via``'s ``received`` host (else its sent-by
    host) and ``rport`` (else its sent-by port); ``default`` if it has no Via."""
    protocol, host, port, params = _via((answer.header("Via") or "").partition(",")[0])
    if not protocol:
        return default
    rport = params.get("rport", "")
    return params.get("received") or host, int(rport) if rport.isdigit() else port


def _via(value: str) -> tuple[str, str, int, dict[str, str]]:
    """``(protocol, sent-by host, port (5060 if none), parameters)`` of one Via value;
    an empty protocol when it is not one."""
    head, *parts = [p.strip() for p in value.split(";")]
    protocol, _, sent_by = head.partition(" ")
    sent_by = sent_by.strip()
    host, colon, port = sent_by.rpartition(":")
    if not colon or not port.isdigit() or host.endswith(":"):
        host, port = sent_by, "5060"
    params = {k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in parts if p)}
    return (protocol if sent_by else ""), host.strip("[]"), int(port), params
