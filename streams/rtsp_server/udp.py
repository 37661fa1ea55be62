"""The RTSP server's UDP side: one RTP and one RTCP socket (an even/odd port pair) for every
client that plays over UDP.

Packets go from the RTP socket to each client's RTP port. What clients send to
either socket (RTCP receiver reports, NAT-opening packets) only tells the server
that they are still there: :class:`UdpPorts` calls ``on_heard`` with the
sender's address. Packets are only ever sent to the address of the client's own
RTSP connection.

Event loop only.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

_PAIR_ATTEMPTS = 20


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, on_heard: Callable[[tuple[str, int]], None]) -> None:
        self._on_heard = on_heard

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._on_heard(addr[:2])


class UdpPorts:
    """See the module docstring."""

    def __init__(self, host: str, on_heard: Callable[[tuple[str, int]], None]) -> None:
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
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        for _ in range(_PAIR_ATTEMPTS):
            rtp, _protocol = await loop.create_datagram_endpoint(
                lambda: _Listener(self._on_heard), local_addr=(self._host, 0), family=family
            )
            port = rtp.get_extra_info("sockname")[1]
            if port % 2 == 0:
                try:
                    rtcp, _protocol = await loop.create_datagram_endpoint(
                        lambda: _Listener(self._on_heard), local_addr=(self._host, port + 1), family=family
                    )
                except OSError:
                    pass
                else:
                    self.rtp, self.rtcp = rtp, rtcp
                    return
            rtp.close()
        raise OSError("no free even/odd UDP port pair for RTP and RTCP")

    def close(self) -> None:
        for transport in (self.rtp, self.rtcp):
            if transport is not None:
                transport.close()
        self.rtp = self.rtcp = None
