"""GB/T 28181 media: a camera's video as MPEG-PS over RTP to a superior platform.

A :class:`PsSender` is one media session: it reads its own hub subscription,
so it starts with the GOP cache's keyframe at once, and sends each access
unit's PS unit (muxed once per camera by :class:`~streams.formats.ps_rtp.SharedPsUnits`)
as RTP packets under the session's SSRC, over one of the three transports an
INVITE may ask for:

* ``udp``: datagrams to the destination;
* ``tcp-active``: we connect to the destination, packets framed as RFC 4571;
* ``tcp-passive``: we listen (:attr:`PsSender.local_port` goes into the SDP
  answer) and take the first connection from the destination's host.

Backpressure is the hub's: the only queue is the subscription (bounded in
packets and in lag); while the socket cannot take more, the session stops
reading it, and the hub skips it forward to the next keyframe, as for any
viewer. A send that cannot complete within ``send_timeout``, a socket error,
a TCP connection the superior closed, or an ICMP error on the UDP socket ends
the session; over UDP so do the superior's RTCP BYE and, once it sent RTCP,
its RTCP silence (:mod:`~streams.outputs.ps_udp`, which also sends our sender
reports). :meth:`PsSender.wait` returns why, so signalling can send its BYE.

:class:`PsOutput` owns the sessions of the relay and one shared muxer per hub
(and sound); each live session holds a seat in the relay's viewer ledger
(:mod:`streams.viewers`) while it lives, so a superior platform's sessions count
against the same caps as every other viewer of the camera. Sound: a session opened
with the camera's audio hub, when that hub carries AAC or G.711 (the codecs GB/T
28181 puts in a program stream), also reads an audio subscription, interleaved with
the video in arrival order (:class:`~streams.outputs.interleave.Interleaved`); the
PSM and system header list the audio stream and each frame is a PES of stream id
0xC0 on the video's 90 kHz clock. Whether sound is carried is decided when the
session opens, from the audio hub's description then; frames of another description
later are left out. Sound of another codec (Opus) is not carried: the session sends
video only, and the log says so once per camera.

Event loop only; muxing and stamping are byte copies done inline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Literal, Protocol

from streams.formats.mpeg_ps import STREAM_TYPES, PsMuxer
from streams.formats.ps_rtp import RtpStamper, SharedPsUnits
from streams.formats.rtcp import SenderClock
from streams.hub import Hub, HubClosed
from streams.outputs.interleave import Interleaved
from streams.outputs.ps_udp import DEFAULT_RTCP_TIMEOUT, UdpLink
from streams.packets import CLOCK_RATE, AudioInfo, MediaPacket
from streams.viewers import Seat, ViewerLedger

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_RTCP_TIMEOUT",
    "DEFAULT_SEND_TIMEOUT",
    "PsOutput",
    "PsSender",
    "PsSession",
    "PsTransport",
]

log = logging.getLogger(__name__)

PsTransport = Literal["udp", "tcp-active", "tcp-passive"]
DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds to connect (tcp-active) or to be connected to (tcp-passive)."""
DEFAULT_SEND_TIMEOUT = 5.0
"""Seconds a send may wait for the socket to take it before the session ends."""


class _Link(Protocol):
    """Where a session's packets go: a connected socket of one of the transports."""

    async def send(self, buffer: bytearray, starts: tuple[int, ...]) -> None: ...

    def close(self) -> None: ...


class _TcpLink(_Link):
    def __init__(self, writer: asyncio.StreamWriter, send_timeout: float) -> None:
        self._writer = writer
        self._send_timeout = send_timeout

    async def send(self, buffer: bytearray, starts: tuple[int, ...]) -> None:
        self._writer.write(buffer)
        async with asyncio.timeout(self._send_timeout):
            await self._writer.drain()

    def close(self) -> None:
        self._writer.close()


class PsSession:
    """One GB/T 28181 media session's sockets and counters, whatever feeds it.

    :meth:`start` opens the socket (and for ``tcp-passive`` starts listening),
    then a task connects and runs :meth:`_feed` until it returns why it ended,
    a send fails or :meth:`stop` is called. :class:`PsSender` feeds it from a
    hub; :class:`~streams.outputs.ps_playback.PsPlayback` from recordings.
    """

    def __init__(
        self,
        destination: tuple[str, int],
        transport: PsTransport,
        ssrc: int,
        *,
        shared: SharedPsUnits | None = None,
        bind_host: str = "0.0.0.0",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        rtcp_timeout: float = DEFAULT_RTCP_TIMEOUT,
    ) -> None:
        self.destination = destination
        self.transport = transport
        self._stamper = RtpStamper(ssrc, framed=transport != "udp")
        self._clock = SenderClock(ssrc, CLOCK_RATE)
        self._rtcp_timeout = rtcp_timeout
        self._shared = shared or SharedPsUnits()
        self._bind_host = bind_host
        self._connect_timeout = connect_timeout
        self._send_timeout = send_timeout
        self._link: _Link | None = None
        self._server: asyncio.Server | None = None
        self._accepted: asyncio.Future[asyncio.StreamWriter] | None = None
        self._task: asyncio.Task[None] | None = None
        self._prepared = False
        self._connected = False
        self.local_port: int | None = None
        """Our port: the listening one for ``tcp-passive``, the sending one for ``udp``."""
        self.started: float | None = None
        """``time.monotonic()`` when :meth:`start` was called."""
        self.first_packet: float | None = None
        """``time.monotonic()`` when the first packet was handed to the socket."""
        self.packets = 0
        self.bytes = 0
        """RTP bytes sent (RFC 4571 length prefixes included)."""
        self.units = 0
        """Access units sent."""
        self.dropped = 0
        """Access units skipped because the receiver was too slow."""
        self.end_reason: str | None = None

    @property
    def ssrc(self) -> int:
        return self._stamper.ssrc

    async def prepare(self) -> None:
        """Open the socket (for ``tcp-passive``: listen), so that :attr:`local_port` is known,
        without sending yet. Idempotent. Raises OSError if the socket cannot be opened."""
        if self._prepared:
            return
        self._prepared = True
        loop = asyncio.get_running_loop()
        if self.transport == "udp":
            link = UdpLink(
                self.destination,
                self._clock,
                send_timeout=self._send_timeout,
                rtcp_timeout=self._rtcp_timeout,
                on_gone=self._gone,
            )
            self.local_port = await link.open(self._bind_host)
            self._link = link
        elif self.transport == "tcp-passive":
            self._accepted = loop.create_future()
            self._server = await asyncio.start_server(self._accept, self._bind_host, 0)
            self.local_port = self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        """Open the socket if :meth:`prepare` did not, and start sending. Raises OSError if the
        socket cannot be opened."""
        await self.prepare()
        if self._task is None and self.end_reason is None:
            self.started = time.monotonic()
            self._task = asyncio.create_task(self._run(), name=f"ps-sender-{self.ssrc}")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted = self._accepted
        host = writer.get_extra_info("peername")[0]
        if accepted is None or accepted.done() or host != self.destination[0]:
            log.warning("PS session %d: connection from %s refused", self.ssrc, host)
            writer.close()
            return
        accepted.set_result(writer)

    async def _connect(self) -> _Link:
        if self._link is not None:
            return self._link
        async with asyncio.timeout(self._connect_timeout):
            if self._accepted is not None:
                writer = await self._accepted
            else:
                _, writer = await asyncio.open_connection(*self.destination)
        if self._server is not None:
            self._server.close()
        self._link = _TcpLink(writer, self._send_timeout)
        return self._link

    async def _run(self) -> None:
        reason = "stopped"
        try:
            link = await self._connect()
            self._connected = True
            reason = await self._feed(link)
        except TimeoutError:
            reason = "send timed out" if self._connected else "not connected in time"
        except OSError as err:
            reason = f"send failed: {err}"
        finally:
            self._end(reason)

    async def _feed(self, link: _Link) -> str:
        """Send until the source ends; why it ended."""
        raise NotImplementedError

    async def _send(self, link: _Link, packet: MediaPacket) -> None:
        """One access unit, as this session's RTP packets."""
        unit = self._shared.unit(packet)
        buffer, starts = self._stamper.stamp(unit)
        await link.send(buffer, starts)
        self._clock.sent(unit.timestamp, self._stands_for(packet), len(starts) - 1, len(unit.data))
        if self.first_packet is None:
            self.first_packet = time.monotonic()
        self.units += 1
        self.packets += len(starts) - 1
        self.bytes += len(buffer)

    def _stands_for(self, packet: MediaPacket) -> float:
        """The instant (``time.monotonic()``) a unit's RTP timestamp stands for in the sender
        reports: when it is sent, unless a subclass knows better."""
        return time.monotonic()

    def _gone(self, reason: str) -> None:
        """The superior is gone (RTCP told): end now, whatever the task is waiting for."""
        self._end(reason)
        if self._task is not None:
            self._task.cancel()

    def _end(self, reason: str) -> None:
        if self.end_reason is not None:
            return
        self.end_reason = reason
        if self._server is not None:
            self._server.close()
        if self._link is not None:
            self._link.close()
        log.info(
            "PS session %d to %s:%d (%s) ended (%s): %d units, %d packets, %d bytes, %d dropped",
            self.ssrc,
            *self.destination,
            self.transport,
            reason,
            self.units,
            self.packets,
            self.bytes,
            self.dropped,
        )

    async def wait(self) -> str:
        """Wait for the session to end; why it ended."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)
        return self.end_reason or "not started"

    async def stop(self) -> None:
        """End the session and close its sockets. Idempotent."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._end("stopped")
        if self._server is not None:
            await self._server.wait_closed()


class PsSender(PsSession):
    """A session sending a hub's video (and its audio hub's sound) as it arrives; see the
    module docstring. With ``audio_hub``, a ``shared`` given must mux its sound (``PsMuxer(audio)``)."""

    def __init__(
        self,
        hub: Hub,
        destination: tuple[str, int],
        transport: PsTransport,
        ssrc: int,
        *,
        audio_hub: Hub | None = None,
        shared: SharedPsUnits | None = None,
        bind_host: str = "0.0.0.0",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        rtcp_timeout: float = DEFAULT_RTCP_TIMEOUT,
        queue_packets: int | None = None,
        on_end: Callable[[PsSender], None] | None = None,
    ) -> None:
        audio = None if audio_hub is None else audio_hub.audio
        super().__init__(
            destination,
            transport,
            ssrc,
            shared=shared or SharedPsUnits(PsMuxer(audio)),
            bind_host=bind_host,
            connect_timeout=connect_timeout,
            send_timeout=send_timeout,
            rtcp_timeout=rtcp_timeout,
        )
        self.hub = hub
        self.audio_hub = audio_hub
        self.audio = audio
        """The sound carried, as described when the session opened."""
        self._queue_packets = queue_packets
        self._on_end = on_end
        self.skips = 0
        """Times the hub skipped this session forward to a keyframe."""

    def _stands_for(self, packet: MediaPacket) -> float:
        return packet.received

    async def _feed(self, link: _Link) -> str:
        subscription = self.hub.subscribe(maxsize=self._queue_packets)
        try:
            sound = None if self.audio_hub is None else self.audio_hub.subscribe()
        except HubClosed:
            sound = None
        packets = Interleaved(subscription, sound)
        try:
            while True:
                packet = await packets.get()
                if not packet.is_audio or self.audio_hub is None or self.audio_hub.audio == self.audio:
                    await self._send(link, packet)
                self.dropped, self.skips = subscription.dropped, subscription.skips
        except HubClosed:
            return "camera stream ended"
        finally:
            self.dropped, self.skips = subscription.dropped, subscription.skips
            packets.close()

    def _end(self, reason: str) -> None:
        if self.end_reason is not None:
            return
        super()._end(reason)
        if self._on_end is not None:
            self._on_end(self)


class PsOutput:
    """Every GB/T 28181 media session of the relay, and the shared PS units of each hub they read."""

    def __init__(
        self,
        *,
        viewers: ViewerLedger | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        rtcp_timeout: float = DEFAULT_RTCP_TIMEOUT,
    ) -> None:
        self._viewers = viewers or ViewerLedger()
        self._connect_timeout = connect_timeout
        self._rtcp_timeout = rtcp_timeout
        self._senders: dict[PsSender, Seat] = {}
        self._shared: dict[tuple[Hub, AudioInfo | None], SharedPsUnits] = {}
        self._uncarried: set[Hub] = set()
        """Audio hubs whose sound the log already said cannot be carried."""

    def senders(self) -> list[PsSender]:
        return list(self._senders)

    def shared(self, hub: Hub, audio: AudioInfo | None = None) -> SharedPsUnits | None:
        """The hub's shared PS units (with that sound) while it has sessions (for figures and tests)."""
        return self._shared.get((hub, audio))

    async def open(
        self,
        camera_id: str,
        hub: Hub,
        destination: tuple[str, int],
        transport: PsTransport,
        ssrc: int,
        *,
        audio_hub: Hub | None = None,
        bind_host: str = "0.0.0.0",
        start: bool = True,
    ) -> PsSender:
        """A session sending ``hub``'s video (of camera ``camera_id``), and ``audio_hub``'s
        sound if it can be carried, started (or, with ``start=False``, only prepared: its
        socket open, nothing sent before :meth:`PsSender.start`). Raises
        :class:`~streams.errors.CapacityError` at a viewer cap, and OSError if its socket
        cannot be opened."""
        seat = self._viewers.admit(camera_id, "gb28181")
        audio = self._carried(audio_hub)
        shared = self._shared.get((hub, audio))
        if shared is None:
            shared = self._shared[hub, audio] = SharedPsUnits(PsMuxer(audio))
        sender = PsSender(
            hub,
            destination,
            transport,
            ssrc,
            audio_hub=audio_hub if audio is not None else None,
            shared=shared,
            bind_host=bind_host,
            connect_timeout=self._connect_timeout,
            rtcp_timeout=self._rtcp_timeout,
            on_end=self._ended,
        )
        self._senders[sender] = seat
        try:
            await (sender.start() if start else sender.prepare())
        except OSError:
            self._ended(sender)
            raise
        return sender

    def _carried(self, audio_hub: Hub | None) -> AudioInfo | None:
        """The sound of ``audio_hub`` a program stream can carry now, if any."""
        audio = None if audio_hub is None else audio_hub.audio
        if audio_hub is None or audio is None or audio.codec in STREAM_TYPES:
            return audio
        if audio_hub not in self._uncarried:
            self._uncarried.add(audio_hub)
            log.warning(
                "%s: %s sound cannot be carried in a GB/T 28181 program stream; its sessions send video only",
                audio_hub.name,
                audio.codec,
            )
        return None

    def _ended(self, sender: PsSender) -> None:
        seat = self._senders.pop(sender, None)
        if seat is not None:
            self._viewers.release(seat)
        if not any(s.hub is sender.hub and s.audio == sender.audio for s in self._senders):
            self._shared.pop((sender.hub, sender.audio), None)

    async def stop(self) -> None:
        """End every session. Idempotent."""
        for sender in list(self._senders):
            await sender.stop()
