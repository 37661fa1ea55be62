"""The RTSP server's UDP side: one RTP and one RTCP socket (an even/odd port pair) for every
client that plays over UDP.

Packets go from the RTP socket to each client's RTP port, sender reports
from the RTCP socket to its RTCP port. What clients send to either socket
(RTCP receiver reports and BYEs, NAT-opening packets) goes to ``on_heard``
with the sender's address and which socket heard it; the server decides whose
it is. Packets are only ever sent to the address of the client's own RTSP
connection.

Event loop only.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Callable

from streams.udp_pair import bind_pair

Heard = Callable[[bytes, tuple[str, int], bool], None]
"""Called with a datagram, its sender's address, and whether the RTCP socket heard it."""


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, on_heard: Heard, rtcp: bool) -> None:
        self._on_heard = on_heard
        self._rtcp = rtcp

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._on_heard(data, addr[:2], self._rtcp)


class UdpPorts:
    """See the module docstring."""

    def __init__(self, host: str, on_heard: Heard) -> None:
        self._host = host
        self._on_heard = on_heard
        self.rtp: asyncio.DatagramTransport | None = None
        self.rtcp: asyncio.DatagramTransport | None = None

    @property
    def ports(self) -> tuple[int, int]:
        assert self.rtp is not None and self.rtcp is not None
        return self.rtp.get_extra_info("sockname")[1], self.rtcp.get_extra_info("sockname")[1]

    async def start(self) -> None:
        """Bind an even port for RTP and the next one for RTCP. Raises OSError when no pair is free."""
        self.rtp, self.rtcp = await bind_pair(
            functools.partial(self._open, rtcp=False), functools.partial(self._open, rtcp=True)
        )

    async def _open(self, port: int, *, rtcp: bool) -> asyncio.DatagramTransport:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        transport, _protocol = await loop.create_datagram_endpoint(
            lambda: _Listener(self._on_heard, rtcp), local_addr=(self._host, port), family=family
        )
        return transport

    def close(self) -> None:
        for transport in (self.rtp, self.rtcp):
            if transport is not None:
                transport.close()
        self.rtp = self.rtcp = None
