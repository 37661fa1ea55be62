"""One hub per camera: fans encoded packets out to subscribers.

The hub keeps a GOP cache (the packets since the last keyframe) so that a new
subscriber starts decoding at once instead of waiting for the camera's next
keyframe, and keeps timestamps monotonic across source reconnects. A camera's
audio, when it is relayed, has a hub of its own, where every frame is a keyframe;
it takes its timeline from the video hub (``timeline_of``), so that after a
reconnect both shift by the same offset and stay in step.

Every subscriber has a bounded queue, bounded in packets and in time: a
subscriber whose oldest queued live packet is more than ``max_lag`` seconds
old, or whose queue is full, is skipped forward to the next keyframe (its video
stays decodable) and the skipped packets are counted; publishing never waits
for anyone. The GOP-cache backlog a new subscriber starts with is exempt from
the time bound: it is old by design and meant to be sent at once.

Event loop only: ``publish`` and ``subscribe`` must be called on the loop that
owns the hub.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from streams.codecs import h264, h265
from streams.errors import StreamNotReady
from streams.packets import CLOCK_RATE, AudioInfo, MediaPacket, StreamInfo
from streams.reorder import DecodeClock

log = logging.getLogger(__name__)

DEFAULT_QUEUE_PACKETS = 256
DEFAULT_GOP_CACHE_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_LAG = 1.0
_DEFAULT_FRAME_TICKS = CLOCK_RATE // 25
_INFO_POLL = 0.05
_NO_B_FRAMES = {"Baseline", "Constrained Baseline"}
"""H.264 profiles without B slices: their frames always arrive in presentation order."""


class HubClosed(Exception):
    """The hub or the subscription was closed; no more packets will come."""


class Subscription:
    """A consumer's view of a hub: an async iterator of packets.

    Created by :meth:`Hub.subscribe`; call :meth:`close` (or use ``async with``)
    when done. ``backlog`` counts the packets still queued that were replayed from
    the GOP cache: consumers use it to hurry those to the live edge.
    """

    def __init__(self, hub: Hub, maxsize: int, max_lag: float) -> None:
        self._hub = hub
        self._queue: collections.deque[MediaPacket] = collections.deque()
        self._maxsize = maxsize
        self._max_lag = max_lag
        self._backlog = 0
        self._waiter: asyncio.Future[None] | None = None
        self._need_keyframe = True
        self._closed = False
        self.delivered = 0
        self.dropped = 0
        self.skips = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def _offer(self, packet: MediaPacket) -> None:
        if self._need_keyframe:
            if not packet.keyframe:
                if self.skips:  # waiting for the first keyframe is not a loss
                    self._drop(1)
                return
            self._need_keyframe = False
        elif len(self._queue) >= self._maxsize or self._lagging(packet):
            # Too far behind: throw the queue away and resume at the next keyframe.
            self._drop(len(self._queue))
            self._queue.clear()
            self._backlog = 0
            self.skips += 1
            if not packet.keyframe:
                self._need_keyframe = True
                self._drop(1)
                return
            self._need_keyframe = False
        self._queue.append(packet)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _lagging(self, packet: MediaPacket) -> bool:
        queue = self._queue
        return self._backlog == 0 and bool(queue) and packet.received - queue[0].received > self._max_lag

    def _resync(self) -> None:
        """The source restarted: what comes next is delivered from its first keyframe on."""
        self._need_keyframe = True

    def _drop(self, count: int) -> None:
        self.dropped += count
        self._hub.stats.dropped += count

    def _preload(self, packets: list[MediaPacket]) -> None:
        if packets and packets[0].keyframe:
            self._queue.extend(packets)
            self._backlog = len(packets)
            self._need_keyframe = False

    @property
    def backlog(self) -> int:
        """Queued packets that came from the GOP cache rather than live."""
        return self._backlog

    def _take(self) -> MediaPacket:
        self.delivered += 1
        if self._backlog:
            self._backlog -= 1
        return self._queue.popleft()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> MediaPacket | None:
        """The next queued packet, or None when the queue is empty."""
        if self._queue:
            return self._take()
        if self._closed:
            raise HubClosed
        return None

    def pending(self) -> int:
        """Packets queued and not yet taken."""
        return len(self._queue)

    async def get(self) -> MediaPacket:
        """Wait for the next packet. Raises :class:`HubClosed` once closed."""
        while True:
            if self._queue:
                return self._take()
            if self._closed:
                raise HubClosed
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def __aiter__(self) -> AsyncIterator[MediaPacket]:
        return self

    async def __anext__(self) -> MediaPacket:
        try:
            return await self.get()
        except HubClosed:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Leave the hub. Idempotent; a pending ``get`` raises HubClosed."""
        if not self._closed:
            self._closed = True
            self._queue.clear()
            self._backlog = 0
            self._hub._remove(self)
            self._wake()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class Hub:
    """Fan-out point of one camera. See the module docstring."""

    def __init__(
        self,
        name: str,
        *,
        queue_packets: int = DEFAULT_QUEUE_PACKETS,
        gop_cache_bytes: int = DEFAULT_GOP_CACHE_BYTES,
        max_lag: float = DEFAULT_MAX_LAG,
        timeline_of: Hub | None = None,
    ) -> None:
        self.name = name
        self._timeline_of = timeline_of
        self._queue_packets = queue_packets
        self._max_lag = max_lag
        self._gop_cache_bytes = gop_cache_bytes
        self._subscribers: list[Subscription] = []
        self._gop: list[MediaPacket] = []
        self._gop_bytes = 0
        self._offset = 0
        self._rebase = False
        self._last_pts: int | None = None
        self._decode_clock = DecodeClock()
        self._frame_ticks = _DEFAULT_FRAME_TICKS
        self._closed = False
        self.info: StreamInfo | None = None
        """The video stream's description, from its latest keyframe."""
        self.audio: AudioInfo | None = None
        """An audio hub's stream description, set by whoever publishes the audio."""
        self.stats = HubStats()
        self.on_subscribers: Callable[[int], None] | None = None
        """Called with the new subscriber count whenever someone joins or leaves: lets an
        on-demand producer (a transcoder) start with its first viewer and stop after its last."""

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def reorders(self) -> bool:
        """True once the stream was seen sending frames out of presentation order (B-frames):
        WebRTC cannot play it. (Decode times are stamped earlier, on every stream whose
        profile may reorder; see :mod:`streams.reorder`.)"""
        return self._decode_clock.reorders

    @property
    def last_keyframe(self) -> MediaPacket | None:
        """The most recent keyframe, if the GOP cache holds one."""
        return self._gop[0] if self._gop else None

    def discontinuity(self) -> None:
        """The source restarted: the next packet's timestamp continues the timeline.

        Also empties the GOP cache, whose packets belong to the old session, and has every
        subscriber wait for the new session's first keyframe: a frame of the new session
        that is not one refers to pictures its decoder never got.
        """
        self._rebase = True
        self._gop.clear()
        self._gop_bytes = 0
        for sub in self._subscribers:
            sub._resync()

    def publish(self, packet: MediaPacket) -> None:
        """Hand one access unit to every subscriber. Never blocks."""
        if self._closed:
            return
        if self._rebase:
            self._rebase = False
            if self._timeline_of is not None:
                self._offset = self._timeline_of._offset
            elif self._last_pts is not None:
                self._offset = self._last_pts + self._frame_ticks - packet.pts
        elif self._last_pts is not None:
            delta = packet.pts + self._offset - self._last_pts
            if 0 < delta < CLOCK_RATE:
                self._frame_ticks = delta
        packet = packet.shifted(self._offset)
        if not packet.is_audio:
            if packet.keyframe:
                self._describe(packet)
            packet = self._decode_clock.stamp(packet)
        self._last_pts = packet.pts if self._last_pts is None else max(self._last_pts, packet.pts)
        if packet.keyframe:
            self._gop = [packet]
            self._gop_bytes = len(packet.data)
        elif self._gop:
            self._gop.append(packet)
            self._gop_bytes += len(packet.data)
            if self._gop_bytes > self._gop_cache_bytes:
                log.warning("%s: GOP larger than %d bytes, not cached", self.name, self._gop_cache_bytes)
                self._gop.clear()
                self._gop_bytes = 0
        self.stats.add(packet)
        for sub in self._subscribers:
            sub._offer(packet)

    def _describe(self, keyframe: MediaPacket) -> None:
        """Read the keyframe's SPS: the stream's description, and whether it may reorder frames."""
        try:
            info = (h265 if keyframe.codec == "h265" else h264).stream_info(keyframe.data)
        except h264.BitstreamError as err:  # h265 raises the same error
            log.warning("%s: unreadable SPS: %s", self.name, err)
            info = None
        if info is not None and info != self.info:
            self.info = info
            self._decode_clock.may_reorder = info.profile not in _NO_B_FRAMES

    async def described(self, timeout: float) -> StreamInfo:  # noqa: ASYNC109 - bounds the wait only
        """The stream's description, waiting up to ``timeout`` seconds for a first keyframe.

        Waiting counts as demand: a subscription is held meanwhile, so an on-demand
        producer (a transcoder) starts. Raises :class:`StreamNotReady`.
        """
        if self.info is not None:
            return self.info
        deadline = time.monotonic() + timeout
        probe = self.subscribe(from_keyframe=False)
        try:
            while self.info is None:
                if time.monotonic() >= deadline:
                    raise StreamNotReady(f"{self.name} has sent no keyframe yet")
                await asyncio.sleep(_INFO_POLL)
            return self.info
        finally:
            probe.close()

    def subscribe(self, *, from_keyframe: bool = True, maxsize: int | None = None) -> Subscription:
        """Join the hub. With ``from_keyframe`` the GOP cache is queued first, so the
        first packet is the latest keyframe; otherwise delivery starts at the next one."""
        if self._closed:
            raise HubClosed
        sub = Subscription(self, maxsize or self._queue_packets, self._max_lag)
        if from_keyframe:
            sub._preload(self._gop)
        self._subscribers.append(sub)
        self._notify()
        return sub

    def _remove(self, sub: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(sub)
            self._notify()

    def _notify(self) -> None:
        if self.on_subscribers is not None:
            self.on_subscribers(len(self._subscribers))

    def close(self) -> None:
        """End every subscription. Idempotent."""
        self._closed = True
        for sub in list(self._subscribers):
            sub.close()


class HubStats:
    """Running figures of what a hub received: rates over a sliding window."""

    WINDOW = 5.0

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.keyframes = 0
        self.dropped = 0
        """Packets skipped by subscribers that fell behind (all subscribers, ever)."""
        self.last_packet: float | None = None
        self.keyframe_interval: float | None = None
        self._last_keyframe: float | None = None
        self._window: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, packet: MediaPacket) -> None:
        now = packet.received
        self.packets += 1
        self.bytes += len(packet.data)
        self.last_packet = now
        if packet.keyframe:
            self.keyframes += 1
            if self._last_keyframe is not None:
                self.keyframe_interval = now - self._last_keyframe
            self._last_keyframe = now
        window = self._window
        window.append((now, len(packet.data)))
        while window and window[0][0] < now - self.WINDOW:
            window.popleft()

    def rates(self, now: float | None = None) -> tuple[float, float]:
        """(frames per second, bits per second) over the last few seconds."""
        now = time.monotonic() if now is None else now
        recent = [(t, n) for t, n in self._window if t >= now - self.WINDOW]
        if len(recent) < 2:
            return 0.0, 0.0
        span = max(now - recent[0][0], 1e-3)
        return (len(recent) - 1) / span, sum(n for _, n in recent[1:]) * 8 / span
