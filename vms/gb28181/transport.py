"""SIP over UDP and TCP on asyncio, towards one superior platform.

A transport delivers every whole message it receives to ``on_message(message,
source)`` and every piece it cannot use to ``on_garbage(reason, source)``. Over UDP one
datagram is one message; over TCP messages are framed by their ``Content-Length``
(a frame that cannot be delimited closes the connection, since nothing after it can
be trusted). ``on_closed`` is called once when a TCP connection ends. Event loop only.
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
        self._on_message(message, source)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error towards %s:%d: %s", *self._remote, exc)

    async def send(self, message: SipMessage) -> None:
        if self._transport is None or self._transport.is_closing():
            raise ConnectionError("the UDP socket is closed")
        self._transport.sendto(message.to_bytes(), self._remote)

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
