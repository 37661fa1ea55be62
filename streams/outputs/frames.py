"""Decoded pictures of one camera stream, decoded once for everyone who needs pixels.

A :class:`FrameSource` sits on a stream's :class:`~streams.hub.Hub`. Its first
consumer (MJPEG, picture analysis) starts it: it subscribes to the hub and decodes
in a worker thread; after its last consumer leaves it stops and leaves the hub.

Each consumer says what it needs when it subscribes:

- every frame, at most ``max_fps`` a second (MJPEG);
- keyframes only, at most ``max_fps`` a second (analysis every few seconds).

The source decodes only what its consumers need: while every consumer wants
keyframes only, it decodes by itself each keyframe that some consumer is ready
to take and never feeds the packets between them to a decoder; as soon as one consumer wants every frame, it
resubscribes from the hub's GOP cache and decodes every packet. A consumer gets
the latest frame, never a queue of stale ones (a slow consumer skips frames and
holds no one back): :meth:`FrameSubscription.next` waits for a frame newer than
the one it returned last.

Every decode of a camera, including a snapshot's decode of the latest keyframe
while the source is idle (:meth:`FrameSource.keyframe_picture`), runs in a worker
thread, one at a time per source; ``decodes_running`` and ``decodes_peak`` show it.
Keyframe decodes also take one of :data:`KEYFRAME_DECODE_SLOTS` shared by all cameras.

Event loop only, but for the decoding itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from streams.hub import Hub, HubClosed, Subscription
from streams.outputs.base import OUTPUTS, Statistic, StreamContext
from streams.outputs.decoder import Frame, NoPicture, PacketDecoder, decode_keyframe
from streams.packets import MediaPacket

__all__ = ["FrameSource", "FrameSubscription", "TimedFrame", "in_thread"]

log = logging.getLogger(__name__)

_MAX_BATCH = 64
"""Packets handed to the decoder thread in one call when it has fallen behind."""
KEYFRAME_DECODE_SLOTS = 2
"""Keyframes decoded at once across all cameras: sixteen cameras analysed together queue
their decodes instead of decoding (and holding a 1080p decoder's memory) all at once."""


class PerLoopSemaphore:
    """A semaphore of ``slots``, one per event loop: an asyncio semaphore binds itself to the
    loop it first waits on, and tests run many loops in one process. Call it for the running
    loop's."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def __call__(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._by_loop.get(loop)
        if semaphore is None:
            semaphore = self._by_loop[loop] = asyncio.Semaphore(self.slots)
        return semaphore


keyframe_slots = PerLoopSemaphore(KEYFRAME_DECODE_SLOTS)
"""The running loop's semaphore of :data:`KEYFRAME_DECODE_SLOTS`."""


_P = ParamSpec("_P")
_T = TypeVar("_T")


async def in_thread(func: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run blocking ``func`` in the default executor.

    A thread cannot be interrupted: if the caller is cancelled, this waits for the
    thread to finish before re-raising, so that a semaphore slot or a codec the
    caller holds is really free once the caller has unwound.
    """
    future = asyncio.get_running_loop().run_in_executor(None, functools.partial(func, *args, **kwargs))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: the caller no longer wants it
        raise


@dataclass(frozen=True, slots=True)
class TimedFrame:
    """A decoded picture and when it was taken."""

    frame: Frame
    pts: int | None
    """Presentation time in the hub's 90 kHz timeline."""
    decoded_at: float
    """``time.monotonic()`` when decoding it finished."""
    seq: int
    """Increases with every frame the source publishes: "newer" means a greater ``seq``."""
    keyframe: bool


class FrameSubscription:
    """One consumer of a :class:`FrameSource`; made by :meth:`FrameSource.subscribe`."""

    def __init__(
        self, source: FrameSource, run: _Run, *, keyframes_only: bool, max_fps: float | None
    ) -> None:
        self._source = source
        self._run = run
        self.keyframes_only = keyframes_only
        self._interval = 0.0 if max_fps is None else 1.0 / max_fps
        self._seen = -1
        self._next_at = 0.0
        self._closed = False

    @property
    def latest(self) -> TimedFrame | None:
        """The newest frame this consumer may have (a keyframe, if it wants only those)."""
        run = self._run
        return run.latest_keyframe if self.keyframes_only else run.latest

    async def next(self) -> TimedFrame:
        """The latest frame, once it is newer than the one returned last and at most
        ``max_fps`` times a second. Raises :class:`HubClosed` when no more will come."""
        loop = asyncio.get_running_loop()
        while True:
            if self._closed or self._run.ended:
                raise HubClosed
            timed = self.latest
            if timed is not None and timed.seq > self._seen:
                delay = self._next_at - loop.time()
                if delay <= 0:
                    self._seen = timed.seq
                    self._next_at = loop.time() + self._interval
                    return timed
                await asyncio.sleep(delay)
            else:
                await self._run.changed.wait()

    def due_soon(self, now: float) -> bool:
        """Whether a frame arriving at loop time ``now`` would be taken: it is at most a quarter
        of the ``max_fps`` interval early (keyframes a camera sends at that interval arrive a
        little early or late)."""
        return self._next_at - now <= self._interval / 4

    async def close(self) -> None:
        """Leave the source (which stops after its last consumer). Idempotent."""
        if not self._closed:
            self._closed = True
            await self._source._leave(self)

    async def __aenter__(self) -> FrameSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _Run:
    """One life of a source, from its first consumer to its last."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.latest: TimedFrame | None = None
        self.latest_keyframe: TimedFrame | None = None
        self.changed = asyncio.Event()
        """Replaced by a fresh event, after being set, whenever a frame is published."""
        self.ended = False
        self.task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class FrameSource:
    """The shared decoder of one camera stream. See the module docstring."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._consumers: list[FrameSubscription] = []
        self._run: _Run | None = None
        self._decoding = asyncio.Lock()
        self._keyframe_cache: tuple[MediaPacket, Frame] | None = None
        self._seq = 0
        self._stopped = False
        # Counters, for statistics and tests.
        self.starts = 0
        self.packets_received = 0
        self.packets_skipped = 0
        """Packets taken from the hub and not decoded: non-key packets in keyframes-only mode."""
        self.frames_decoded = 0
        self.keyframes_decoded = 0
        self.decode_errors = 0
        self.decodes_running = 0
        self.decodes_peak = 0
        self.on_demand_decodes = 0
        """Calls of :meth:`keyframe_picture` (snapshots while idle)."""

    @property
    def name(self) -> str:
        return f"{self._hub.name}/frames"

    @property
    def running(self) -> bool:
        run = self._run
        return run is not None and not run.ended

    @property
    def consumer_count(self) -> int:
        return len(self._consumers)

    @property
    def keyframes_only(self) -> bool:
        """True while every consumer wants keyframes only (and there is one)."""
        return bool(self._consumers) and all(c.keyframes_only for c in self._consumers)

    @property
    def latest(self) -> TimedFrame | None:
        """The newest frame of the running source; None while it does not run."""
        run = self._run
        return run.latest if run is not None and not run.ended else None

    def subscribe(self, *, keyframes_only: bool = False, max_fps: float | None = None) -> FrameSubscription:
        """Become a consumer, starting the source if it is idle. Raises :class:`HubClosed`
        once the hub or the source is closed."""
        if max_fps is not None and not max_fps > 0:
            raise ValueError(f"max_fps must be positive, not {max_fps}")
        if self._stopped:
            raise HubClosed
        run = self._run
        if run is None or run.ended:
            run = self._start()
        consumer = FrameSubscription(self, run, keyframes_only=keyframes_only, max_fps=max_fps)
        self._consumers.append(consumer)
        return consumer

    async def keyframe_picture(self, keyframe: MediaPacket) -> Frame:
        """The picture of ``keyframe``, decoded in a thread (one decode at a time with the
        running source) and kept until asked for another keyframe. Raises :class:`NoPicture`.

        For a snapshot while the source is idle; while it runs, :attr:`latest` is newer."""
        self.on_demand_decodes += 1
        return await self._keyframe_picture(keyframe)

    async def _keyframe_picture(self, keyframe: MediaPacket) -> Frame:
        async with self._decoding:
            cached = self._keyframe_cache
            if cached is not None and cached[0] is keyframe:
                return cached[1]
            async with keyframe_slots():
                frame = await self._decode(decode_keyframe, keyframe)
            self.frames_decoded += 1
            self._keyframe_cache = (keyframe, frame)
            return frame

    def _start(self) -> _Run:
        run = _Run(self._hub.subscribe())
        run.task = asyncio.create_task(self._drive(run), name=f"frames {self._hub.name}")
        self._run = run
        self.starts += 1
        log.info("%s: frame source started", self._hub.name)
        return run

    async def _leave(self, consumer: FrameSubscription) -> None:
        if consumer in self._consumers:
            self._consumers.remove(consumer)
        if not self._consumers:
            await self._stop_run()

    async def _stop_run(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        run.sub.close()
        if run.task is not None:
            run.task.cancel()
            await asyncio.wait([run.task])
        log.info("%s: frame source stopped", self._hub.name)

    async def _drive(self, run: _Run) -> None:
        try:
            await self._decode_loop(run)
        except HubClosed:
            pass
        except Exception:
            log.exception("%s: frame source failed", self._hub.name)
        finally:
            run.ended = True
            run.sub.close()
            run.wake()

    async def _decode_loop(self, run: _Run) -> None:
        """Decode what the consumers need until the hub closes (raising :class:`HubClosed`)."""
        decoder: PacketDecoder | None = None
        while True:
            batch = await _take_batch(run.sub)
            self.packets_received += len(batch)
            if self.keyframes_only:
                decoder = None
                keyframes = [packet for packet in batch if packet.keyframe]
                wanted = keyframes and self._keyframe_due()
                self.packets_skipped += len(batch) - (1 if wanted else 0)
                if wanted:
                    await self._decode_one_keyframe(run, keyframes[-1])
                continue
            if decoder is None:
                # Switched to every frame: start again at the cached GOP, not at the next keyframe.
                decoder = PacketDecoder(self._hub.name)
                if run.latest is not None:
                    self.packets_skipped += len(batch)
                    run.sub.close()
                    run.sub = self._hub.subscribe()
                    continue
            async with self._decoding:
                result = await self._decode(decoder.decode, batch)
            self.frames_decoded += result.frames
            self.decode_errors += result.errors
            self.packets_skipped += result.skipped
            if result.keyframe is not None and result.keyframe is not result.frame:
                self._publish(run, result.keyframe, keyframe=True)
            if result.frame is not None:
                self._publish(run, result.frame, keyframe=bool(result.frame.key_frame))

    def _keyframe_due(self) -> bool:
        now = asyncio.get_running_loop().time()
        return any(consumer.due_soon(now) for consumer in self._consumers)

    async def _decode_one_keyframe(self, run: _Run, keyframe: MediaPacket) -> None:
        try:
            frame = await self._keyframe_picture(keyframe)
        except NoPicture as err:
            self.decode_errors += 1
            log.debug("%s: %s", self._hub.name, err)
            return
        self._publish(run, frame, keyframe=True)

    async def _decode(self, func: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        self.decodes_running += 1
        self.decodes_peak = max(self.decodes_peak, self.decodes_running)
        try:
            return await in_thread(func, *args, **kwargs)
        finally:
            self.decodes_running -= 1

    def _publish(self, run: _Run, frame: Frame, *, keyframe: bool) -> None:
        self._seq += 1
        timed = TimedFrame(frame, frame.pts, time.monotonic(), self._seq, keyframe)
        run.latest = timed
        if keyframe:
            run.latest_keyframe = timed
            self.keyframes_decoded += 1
        run.wake()

    async def start(self) -> None:
        """Nothing to do: the source starts with its first consumer."""

    def statistics(self) -> dict[str, Statistic]:
        return {
            "running": self.running,
            "consumers": self.consumer_count,
            "keyframes_only": self.keyframes_only,
            "decodes_running": self.decodes_running,
            "decodes_peak": self.decodes_peak,
            "packets_received": self.packets_received,
            "packets_skipped": self.packets_skipped,
            "frames_decoded": self.frames_decoded,
            "decode_errors": self.decode_errors,
            "on_demand_decodes": self.on_demand_decodes,
            "starts": self.starts,
        }

    async def stop(self) -> None:
        """Stop decoding and end every consumer's :meth:`~FrameSubscription.next`. Idempotent."""
        self._stopped = True
        self._consumers.clear()
        await self._stop_run()


async def _take_batch(sub: Subscription) -> list[MediaPacket]:
    """The next packet, and those queued behind it (up to a batch)."""
    batch = [await sub.get()]
    while len(batch) < _MAX_BATCH and (packet := sub.get_nowait()) is not None:
        batch.append(packet)
    return batch


@OUTPUTS.register("frames")
def _frames(context: StreamContext) -> FrameSource:
    return FrameSource(context.hub)
