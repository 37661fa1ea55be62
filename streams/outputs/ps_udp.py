"""The UDP link of a GB/T 28181 media session: RTP to the superior, RTCP both ways.

RTP goes from an even local port, connected to the superior's RTP port, so an
ICMP "port unreachable" (the superior closed its socket) comes back as an
error on the next send and ends the session. RTCP uses the next port, the one
the superior expects beside the port of our SDP answer (RFC 3550, 11):

- out: a sender report (:class:`~streams.formats.rtcp.SenderClock`) every few
  seconds to the superior's RTP port plus one, once something was sent;
- in: what the superior's host sends there. A BYE ends the session. Once it
  has sent RTCP, a superior silent for ``rtcp_timeout`` seconds has vanished
  (powered off, unplugged: nothing answers, no ICMP either), and the session
  ends. A superior that never sends RTCP is not held to it.

The session learns of either through ``on_gone``, called with the reason.
Errors on the RTCP socket (a superior without an RTCP port) are ignored.

Event loop only.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable

from streams.formats import rtcp
from streams.udp_pair import bind_pair

__all__ = ["DEFAULT_RTCP_TIMEOUT", "UdpLink"]

log = logging.getLogger(__name__)

DEFAULT_RTCP_TIMEOUT = 30.0
"""Seconds of RTCP silence after which a superior that sent RTCP before has vanished:
six report intervals, as RFC 3550 (6.3.5) lets a member time out after five."""


class _RtcpListener(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self._on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._on_datagram(data, addr)


class UdpLink(asyncio.DatagramProtocol):
    """See the module docstring."""

    def __init__(
        self,
        destination: tuple[str, int],
        clock: rtcp.SenderClock,
        *,
        send_timeout: float,
        rtcp_timeout: float,
        on_gone: Callable[[str], None],
    ) -> None:
        self._destination = destination
        self._clock = clock
        self._send_timeout = send_timeout
        self._rtcp_timeout = rtcp_timeout
        self._on_gone = on_gone
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._error: Exception | None = None
        self._resumed: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._next_report = 0.0
        self.rtcp_heard: float | None = None
        """``time.monotonic()`` of the superior's latest RTCP packet; None before the first."""
        self.reports_sent = 0

    async def open(self, bind_host: str) -> int:
        """Bind the port pair and start the RTCP timer; our RTP port. Raises OSError."""
        loop = asyncio.get_running_loop()

        async def open_rtp(port: int) -> asyncio.DatagramTransport:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: self, local_addr=(bind_host, port), remote_addr=self._destination
            )
            return transport

        async def open_rtcp(port: int) -> asyncio.DatagramTransport:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _RtcpListener(self._rtcp_received), local_addr=(bind_host, port)
            )
            return transport

        self._rtp, self._rtcp = await bind_pair(open_rtp, open_rtcp)
        self._tick()
        port: int = self._rtp.get_extra_info("sockname")[1]
        return port

    def error_received(self, exc: Exception) -> None:
        self._error = exc

    def pause_writing(self) -> None:
        self._resumed = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)
        self._resumed = None

    async def send(self, buffer: bytearray, starts: tuple[int, ...]) -> None:
        if self._error is not None:
            raise self._error
        transport = self._rtp
        assert transport is not None
        view = memoryview(buffer)
        for start, end in itertools.pairwise(starts):
            transport.sendto(view[start:end])
        if self._resumed is not None:
            async with asyncio.timeout(self._send_timeout):
                await self._resumed

    def _rtcp_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[0] != self._destination[0]:
            return
        try:
            items = rtcp.parse(data)
        except rtcp.BadRtcp as err:
            log.debug("PS session %d: not RTCP from %s:%d: %s", self._clock.ssrc, *addr[:2], err)
            return
        self.rtcp_heard = time.monotonic()
        if any(isinstance(item, rtcp.Bye) for item in items):
            self._on_gone("the superior sent RTCP BYE")

    def _tick(self) -> None:
        """Send a sender report when due; end the session when the superior fell silent."""
        now = time.monotonic()
        if self.rtcp_heard is not None and now - self.rtcp_heard > self._rtcp_timeout:
            self._on_gone(f"no RTCP from the superior for {self._rtcp_timeout:g} s")
            return
        if now >= self._next_report and self._rtcp is not None:
            report = self._clock.report(time.time(), now)
            if report is not None:
                host, port = self._destination
                self._rtcp.sendto(report, (host, port + 1))
                self.reports_sent += 1
                self._next_report = now + rtcp.REPORT_INTERVAL
        period = min(rtcp.REPORT_INTERVAL, self._rtcp_timeout / 4)
        self._timer = asyncio.get_running_loop().call_later(period, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
