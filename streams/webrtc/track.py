"""The media track of one WebRTC viewer: a hub subscription as encoded H.264 packets.

aiortc's RTP sender calls :meth:`HubTrack.recv` in a loop. Each call returns
the next access unit as an ``av.Packet`` (timestamp in 1/90000), which aiortc's
H.264 packetizer splits into RTP payloads without decoding or encoding.

The subscription is taken on the first ``recv``, once the connection is up, so
the first packet is the hub's latest keyframe and the GOP-cache backlog is
current. The backlog goes out at once; :class:`~streams.timeline.LiveTimeline`
compresses its timestamps so the viewer lands at the live edge.

Event loop only.
"""

from __future__ import annotations

import fractions
import logging
import time
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from streams.hub import Hub, HubClosed, Subscription
from streams.packets import CLOCK_RATE
from streams.timeline import LiveTimeline

log = logging.getLogger(__name__)

TIME_BASE = fractions.Fraction(1, CLOCK_RATE)


class HubTrack(MediaStreamTrack):
    """A video track fed by one hub subscription. ``stop()`` closes the subscription."""

    kind = "video"

    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self._hub = hub
        self._subscription: Subscription | None = None
        self._timeline = LiveTimeline()
        self.frames = 0
        self.bytes = 0
        self.first_sent: float | None = None
        self.last_sent: float | None = None

    @property
    def dropped(self) -> int:
        """Packets the hub skipped for this viewer because it fell behind."""
        return self._subscription.dropped if self._subscription is not None else 0

    @property
    def skips(self) -> int:
        return self._subscription.skips if self._subscription is not None else 0

    @property
    def backlog_frames(self) -> int:
        """Frames sent with compressed timestamps to reach the live edge."""
        return self._timeline.compressed

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        if self._subscription is None:
            try:
                self._subscription = self._hub.subscribe()
            except HubClosed as err:
                self.stop()
                raise MediaStreamError from err
        try:
            media = await self._subscription.get()
        except HubClosed as err:
            self.stop()
            raise MediaStreamError from err
        now = time.monotonic()
        packet = av.Packet(media.data)
        packet.pts = packet.dts = self._timeline.next_pts(media, now)
        packet.time_base = TIME_BASE
        self.frames += 1
        self.bytes += len(media.data)
        if self.first_sent is None:
            self.first_sent = now
        self.last_sent = now
        return packet

    def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
        super().stop()
