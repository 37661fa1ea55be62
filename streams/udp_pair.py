"""An even/odd pair of UDP ports, RTP on the even one and RTCP on the next (RFC 3550, 11).

Peers find our RTCP port as our RTP port plus one (RTSP's ``server_port``,
GB/T 28181's SDP answer), so the two sockets are bound together: an RTP socket
on a free port, kept if the port is even and the next one can be bound too,
otherwise closed and tried again.

Event loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["bind_pair"]

_ATTEMPTS = 20

Opener = Callable[[int], Awaitable[asyncio.DatagramTransport]]
"""Binds a datagram endpoint to a local port (0: any) and returns its transport."""


async def bind_pair(
    open_rtp: Opener, open_rtcp: Opener
) -> tuple[asyncio.DatagramTransport, asyncio.DatagramTransport]:
    """The RTP and RTCP transports on an even port and the next. Raises OSError when no pair is free."""
    for _ in range(_ATTEMPTS):
        rtp = await open_rtp(0)
        port: int = rtp.get_extra_info("sockname")[1]
        if port % 2 == 0:
            try:
                rtcp = await open_rtcp(port + 1)
            except OSError:
                pass
            else:
                return rtp, rtcp
        rtp.close()
    raise OSError("no free even/odd UDP port pair for RTP and RTCP")
