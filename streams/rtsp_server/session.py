"""One RTSP client session: its tracks, where their packets go, and the pumps that send them.

A session is set up track by track (``SETUP``), then started (``PLAY``): each
track gets its own hub subscription, so video starts at the GOP cache's
keyframe like every other viewer's, and its own pump task, which copies each
access unit's shared packet template, writes the session's RTP header fields
into the copy and hands it to the track's transport:

- TCP interleaved: ``$`` frames on the client's RTSP connection, one write per
  access unit. The pump waits
  for the connection's send buffer to drain below its limit, so a client that
  reads slowly leaves its subscription's queue to fill, and the hub skips it to
  the next keyframe like any slow viewer; one that reads nothing for
  ``write_timeout`` seconds is disconnected.
- UDP: datagrams from the server's RTP port to the client's, a slice of the
  buffer each, never waiting.

After the first packet and every few seconds the pump also sends the track's
RTCP sender report (:mod:`streams.formats.rtcp`): on the odd interleaved
channel, or from the server's RTCP port to the client's. A sender report ties
the track's RTP clock to the wall clock through the instant its latest access
unit reached the relay; sound and picture arrive on the same clock, so a client
lines them up from the reports.

``stop`` (TEARDOWN, the connection gone, the keep-alive timeout, the relay
stopping) cancels and awaits the pumps, leaves the hubs and reports the
viewing once.

Event loop only; the session's tasks are owned and awaited by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from streams.formats.rtcp import REPORT_INTERVAL
from streams.formats.rtp_template import Framing
from streams.hub import Hub, HubClosed, Subscription
from streams.packets import Codec
from streams.rtsp_server.access import RtspViewing, Verdict
from streams.rtsp_server.payloads import RtpTrack, SharedTemplates
from streams.specs import StreamName

log = logging.getLogger(__name__)

DEFAULT_WRITE_TIMEOUT = 10.0


class TcpSink:
    """Interleaved ``$`` frames on the RTSP connection: RTP on ``channel``, RTCP on ``rtcp_channel``."""

    kind = "tcp"
    framing: Framing = "interleaved"

    def __init__(
        self, writer: asyncio.StreamWriter, channel: int, rtcp_channel: int, write_timeout: float
    ) -> None:
        self._writer = writer
        self.channel = channel
        self.rtcp_channel = rtcp_channel
        self._write_timeout = write_timeout

    async def send(self, buffer: bytearray, starts: tuple[int, ...]) -> None:
        self._writer.write(buffer)
        async with asyncio.timeout(self._write_timeout):
            await self._writer.drain()

    def send_rtcp(self, packet: bytes) -> None:
        self._writer.write(b"$" + bytes((self.rtcp_channel,)) + len(packet).to_bytes(2, "big") + packet)

    def abort(self) -> None:
        self._writer.transport.abort()


class UdpSink:
    """Datagrams from the server's RTP socket to the client's RTP port, and from its RTCP
    socket to the client's RTCP port."""

    kind = "udp"
    framing: Framing = "none"
    channel = 0

    def __init__(
        self,
        rtp: asyncio.DatagramTransport,
        rtcp: asyncio.DatagramTransport,
        address: tuple[str, int],
        rtcp_address: tuple[str, int],
    ) -> None:
        self._rtp = rtp
        self._rtcp = rtcp
        self.address = address
        self.rtcp_address = rtcp_address

    async def send(self, buffer: bytearray, starts: tuple[int, ...]) -> None:
        view = memoryview(buffer)
        for start, end in itertools.pairwise(starts):
            self._rtp.sendto(view[start:end], self.address)

    def send_rtcp(self, packet: bytes) -> None:
        self._rtcp.sendto(packet, self.rtcp_address)


Sink = TcpSink | UdpSink


@dataclass(slots=True)
class Track:
    hub: Hub
    codec: Codec
    rtp: RtpTrack
    sink: Sink
    shared: SharedTemplates
    control: str
    """The URL the client set the track up with, which ``RTP-Info`` names."""
    next_report: float = 0.0
    """``time.monotonic()`` after which the next sender report goes out."""

    def rtp_info(self) -> str:
        """The track's ``RTP-Info`` entry (RFC 2326, 12.33): what its first packet will carry."""
        return f"url={self.control};seq={self.rtp.next_sequence};rtptime={self.rtp.first_timestamp}"

    def report_due(self) -> None:
        """Send a sender report if one is due: after the first packet, then every
        :data:`~streams.formats.rtcp.REPORT_INTERVAL` seconds, randomized (RFC 3550, 6.2)."""
        now = time.monotonic()
        if now < self.next_report:
            return
        report = self.rtp.report.report(time.time(), now)
        if report is not None:
            self.sink.send_rtcp(report)
            self.next_report = now + REPORT_INTERVAL * random.uniform(0.5, 1.5)


class RtspSession:
    """See the module docstring."""

    def __init__(
        self,
        camera_id: str,
        stream: StreamName,
        verdict: Verdict,
        peer: str | None,
        on_stopped: Callable[[RtspSession], None],
    ) -> None:
        self.id = secrets.token_hex(8)
        self.camera_id = camera_id
        self.stream = stream
        self.verdict = verdict
        self.peer = peer
        self.started = time.time()
        self.last_seen = time.monotonic()
        self.tracks: dict[int, Track] = {}
        self.ended: float | None = None
        self.rtcp_reports = 0
        """RTCP reports heard from the client over UDP."""
        self.leaving: str | None = None
        """Why the client asked to leave outside RTSP (an RTCP BYE); the server then stops it."""
        self._on_stopped = on_stopped
        self._subscriptions: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def playing(self) -> bool:
        return bool(self._tasks)

    @property
    def transport(self) -> str:
        return next((t.sink.kind for t in self.tracks.values()), "tcp")

    @property
    def bytes_sent(self) -> int:
        return sum(t.rtp.octets_sent + 12 * t.rtp.packets_sent for t in self.tracks.values())

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self._subscriptions)

    def hubs(self) -> list[Hub]:
        return [t.hub for t in self.tracks.values()]

    def touch(self) -> None:
        self.last_seen = time.monotonic()

    def play(self) -> None:
        """Start sending every track set up. Raises :class:`HubClosed` if a hub closed."""
        if self.playing:
            return
        for index, track in sorted(self.tracks.items()):
            subscription = track.hub.subscribe()
            self._subscriptions.append(subscription)
            self._tasks.append(
                asyncio.create_task(self._pump(track, subscription), name=f"rtsp {self.camera_id} #{index}")
            )

    async def _pump(self, track: Track, subscription: Subscription) -> None:
        try:
            while True:
                packet = await subscription.get()
                template = track.shared.unit(packet).template(track.sink.framing)
                buffer = track.rtp.stamp(template, packet.pts, track.sink.channel, packet.received)
                await track.sink.send(buffer, template.starts)
                track.report_due()
        except HubClosed:
            self._finish("camera stream ended")
        except TimeoutError:
            log.info("RTSP session %s of %s: the client does not read; disconnected", self.id, self.camera_id)
            self._finish("the client does not read")
            if isinstance(track.sink, TcpSink):
                track.sink.abort()
        except (ConnectionError, OSError):
            self._finish("connection lost")

    def _finish(self, reason: str) -> None:
        """A pump ended the session from inside; ``stop`` still awaits the other pumps."""
        if self.ended is None:
            self._record(reason)

    async def stop(self, reason: str) -> None:
        """End the session. Idempotent."""
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.ended is None:
            self._record(reason)

    def _record(self, reason: str) -> None:
        self.ended = time.time()
        for subscription in self._subscriptions:
            subscription.close()
        log.info(
            "RTSP session %s of %s ended (%s): %d bytes, %d dropped",
            self.id,
            self.camera_id,
            reason,
            self.bytes_sent,
            self.dropped,
        )
        self._on_stopped(self)
        if self.verdict.on_end is not None:
            self.verdict.on_end(
                RtspViewing(
                    camera_id=self.camera_id,
                    stream=self.stream,
                    peer=self.peer,
                    transport=self.transport,
                    started=self.started,
                    ended=self.ended,
                    bytes_sent=self.bytes_sent,
                    reason=reason,
                )
            )
