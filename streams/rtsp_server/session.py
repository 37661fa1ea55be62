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
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from streams.formats.rtp_template import Framing
from streams.hub import Hub, HubClosed, Subscription
from streams.packets import Codec
from streams.rtsp_server.access import RtspViewing, Verdict
from streams.rtsp_server.payloads import RtpTrack, SharedTemplates
from streams.specs import StreamName

log = logging.getLogger(__name__)

DEFAULT_WRITE_TIMEOUT = 10.0


class TcpSink:
    """Interleaved ``$`` frames on the RTSP connection."""

    kind = "tcp"
    framing: Framing = "interleaved"

    def __init__(self, writer: asyncio.StreamWriter, channel: int, write_timeout: float) -> None:
        self._writer = writer
        self.channel = channel
        self._write_timeout = write_timeout

    async def send(self, buffer: bytearray, starts: tuple[int, ...]) -> None:
        self._writer.write(buffer)
        async with asyncio.timeout(self._write_timeout):
            await self._writer.drain()

    def abort(self) -> None:
        self._writer.transport.abort()


class UdpSink:
    """Datagrams from the server's RTP socket to the client's RTP port."""

    kind = "udp"
    framing: Framing = "none"
    channel = 0

    def __init__(self, transport: asyncio.DatagramTransport, address: tuple[str, int]) -> None:
        self._transport = transport
        self.address = address

    async def send(self, buffer: bytearray, starts: tuple[int, ...]) -> None:
        view = memoryview(buffer)
        for start, end in itertools.pairwise(starts):
            self._transport.sendto(view[start:end], self.address)


Sink = TcpSink | UdpSink


@dataclass(slots=True)
class Track:
    hub: Hub
    codec: Codec
    rtp: RtpTrack
    sink: Sink
    shared: SharedTemplates


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
                buffer = track.rtp.stamp(template, packet.pts, track.sink.channel)
                await track.sink.send(buffer, template.starts)
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
