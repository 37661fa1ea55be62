"""The superior platform's end of a GB/T 28181 media session, on real sockets of 127.0.0.1:
a UDP socket, a TCP listener (the sender connects: ``tcp-active`` on its side), or a TCP
client (it connects to a sender that listens: ``tcp-passive``). What arrives is kept whole
and read back as RTP packets (RFC 4571 framing over TCP) by :mod:`tests.streams.formats.ps_checks`."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from streams.outputs.ps_sender import PsTransport
from tests.streams.formats import ps_checks


class Receiver:
    """See the module docstring; ``port`` is where it listens (0 for ``tcp-passive``)."""

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []
        self.stream = bytearray()
        self.closed = asyncio.Event()
        self.resume = asyncio.Event()
        self.resume.set()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._reading: asyncio.Task[None] | None = None

    async def listen(self, transport: PsTransport, rcvbuf: int | None = None) -> None:
        loop = asyncio.get_running_loop()
        if transport == "udp":
            receiver = self

            class Collect(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
                    receiver.datagrams.append(data)

            self._udp, _ = await loop.create_datagram_endpoint(Collect, local_addr=("127.0.0.1", 0))
            self.port = self._udp.get_extra_info("sockname")[1]
        elif transport == "tcp-active":
            sock = socket.socket()
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind(("127.0.0.1", 0))
            self._server = await asyncio.start_server(self.read, sock=sock)
            self.port = sock.getsockname()[1]

    async def connect(self, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        self._reading = asyncio.create_task(self.read(reader, writer))

    async def read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.resume.wait()
        while chunk := await reader.read(65536):
            self.stream += chunk
        writer.close()
        self.closed.set()

    def packets(self) -> list[ps_checks.Rtp]:
        raw = self.datagrams or ps_checks.rfc4571_frames(bytes(self.stream))
        return [ps_checks.parse_rtp(p) for p in raw]

    async def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._udp is not None:
            self._udp.close()
