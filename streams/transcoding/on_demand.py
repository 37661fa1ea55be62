"""The on-demand worker shared by the transcoders: one blocking pipeline per source hub,
run in a thread only while its output hub has subscribers.

:class:`OnDemandWorker` sits on a source :class:`~streams.hub.Hub` and owns an
output hub. The output hub's first subscriber starts the worker, whoever
subscribes (:meth:`OnDemandWorker.subscribe`, or an output handed the hub
itself); the worker stops by itself once the output hub has had no subscriber
for ``idle_timeout`` seconds, and the next subscriber starts it again. However
many viewers, there is one worker per source. What the worker does to each
packet is the subclass's :class:`Stage` (:meth:`OnDemandWorker._open_stage`),
made afresh for every run: the video transcoder (:mod:`streams.transcoding.transcoder`) and
the audio transcoder (:mod:`streams.transcoding.audio_transcoder`) differ only there.

Threads: the public API, the output hub and every counter belong to the event
loop. The stage blocks, so it runs in one thread per running worker, which
alone touches it. Source packets go to it through a bounded queue of
``queue_packets``: when it is full, what it holds is thrown away and feeding
resumes at the next source keyframe (counted in ``dropped``; every audio frame
is a keyframe). Output packets come back with ``loop.call_soon_threadsafe``. The
thread signals its exit the same way, even when it fails, so
:meth:`OnDemandWorker.stop` never hangs; a failed worker is restarted after
``restart_delay`` if anyone still watches. After each run the output hub is
marked discontinuous: its cached packets are stale and its timeline continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

from streams.hub import Hub, HubClosed, Subscription
from streams.packets import MediaPacket

__all__ = ["DEFAULT_QUEUE_PACKETS", "DEFAULT_RESTART_DELAY", "OnDemandWorker", "Stage", "StageResult"]

log = logging.getLogger(__name__)

DEFAULT_QUEUE_PACKETS = 50
"""Source packets waiting for the worker, at most (two seconds of 25 fps video)."""
DEFAULT_RESTART_DELAY = 1.0
"""Seconds before a failed worker is restarted for the subscribers still waiting."""

_IDLE_POLL = 0.1
"""Seconds between checks of the output hub's subscriber count."""
_EXIT_TIMEOUT = 5.0
"""Seconds :meth:`OnDemandWorker.stop` waits for a worker busy in a codec call."""
_STOP = None
"""Queue item telling the worker thread to exit."""

_Item = tuple[MediaPacket, bool] | None
"""A source packet and whether the stage must start afresh with it, or :data:`_STOP`."""


class StageResult(Protocol):
    """What one source packet produced."""

    @property
    def packets(self) -> list[MediaPacket]: ...

    @property
    def errors(self) -> int:
        """Packets the stage's codecs rejected."""
        ...


class Stage(Protocol):
    """The blocking work of one run, used by its worker thread only."""

    name: str

    def process(self, packet: MediaPacket, resync: bool) -> StageResult:
        """Turn one source packet into output packets; ``resync``: start afresh (a gap)."""
        ...

    def close(self) -> None: ...


class OnDemandWorker:
    """A stage run over a source hub while the output hub is watched. See the module docstring."""

    _kind = "worker"
    """Names the worker in logs."""
    _thread_prefix = "worker"
    """Its thread is named ``"<prefix> <name>"``."""

    def __init__(
        self,
        source: Hub,
        *,
        name: str,
        idle_timeout: float = 2.0,
        queue_packets: int = DEFAULT_QUEUE_PACKETS,
        restart_delay: float = DEFAULT_RESTART_DELAY,
    ) -> None:
        if idle_timeout < 0 or queue_packets < 1:
            raise ValueError("idle_timeout must not be negative and queue_packets must be positive")
        self.name = name
        self._source = source
        self._idle_timeout = idle_timeout
        self._queue_packets = queue_packets
        self._restart_delay = restart_delay
        self._output = Hub(name)
        self._output.on_subscribers = self._on_subscribers
        self._run: _Run | None = None
        self._stopped = False
        self.starts = 0
        """How many times the worker started."""
        self.frames_in = 0
        """Source packets handed to the worker (less those thrown away while queued)."""
        self.frames_out = 0
        """Packets published on the output hub."""
        self.dropped = 0
        """Source packets thrown away because the worker fell behind (or to reach a keyframe)."""
        self.decode_errors = 0
        """Packets the stage's decoder or encoder rejected."""
        self.failures = 0
        """Workers that ended by an unexpected error."""

    def _open_stage(self) -> Stage:
        """A fresh stage for a new run; called on the event loop as the run starts."""
        raise NotImplementedError

    async def start(self) -> None:
        """Nothing to do: the worker starts with the output hub's first subscriber."""

    def statistics(self) -> dict[str, int | float | bool | str | None]:
        return {
            "running": self.running,
            "starts": self.starts,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "dropped": self.dropped,
            "decode_errors": self.decode_errors,
            "failures": self.failures,
        }

    @property
    def output(self) -> Hub:
        """The output hub; its first subscriber starts the worker."""
        return self._output

    @property
    def running(self) -> bool:
        """True from the start of a worker until its thread has ended (or, after a
        failure, until it is restarted or given up)."""
        return self._run is not None

    @property
    def worker_thread(self) -> threading.Thread | None:
        """The running worker's thread, if any (for tests and diagnostics)."""
        return None if self._run is None else self._run.thread

    def subscribe(self, *, from_keyframe: bool = True, maxsize: int | None = None) -> Subscription:
        """A subscription of the output hub; starts the worker if it is not running.

        Raises :class:`~streams.hub.HubClosed` once stopped or once the source hub closed.
        """
        if self._stopped:
            raise HubClosed
        return self._output.subscribe(from_keyframe=from_keyframe, maxsize=maxsize)

    async def stop(self) -> None:
        """Stop the worker and end every subscription. Idempotent."""
        self._stopped = True
        while (run := self._run) is not None:
            if run.task is not None:
                run.task.cancel()
                await asyncio.wait([run.task])
            if self._run is run:
                self._run = None
        self._output.close()

    # Event loop side ------------------------------------------------------

    def _on_subscribers(self, count: int) -> None:
        run = self._run
        if count and not self._stopped and (run is None or run.ending):
            self._start()

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        run = _Run(self._source.subscribe(), self._queue_packets)
        try:
            stage = self._open_stage()
            run.thread = threading.Thread(
                target=_work,
                args=(run, stage, lambda result: loop.call_soon_threadsafe(self._deliver, run, result)),
                name=f"{self._thread_prefix} {self.name}",
                daemon=True,
            )
            run.thread.start()
        except BaseException:
            run.source.close()
            raise
        self.starts += 1
        self._run = run
        run.task = asyncio.create_task(self._live(run), name=f"{self._kind} {self.name}")
        log.info("%s: %s started", self.name, self._kind)

    async def _live(self, run: _Run) -> None:
        """One run's owner: serve it, then close the output if the source is gone, or
        restart a failed worker for the subscribers still waiting."""
        try:
            source_closed = await self._serve(run)
            # The cached packets are stale now: the next viewer must wait for fresh
            # ones rather than see them, and the timeline continues from here.
            self._output.discontinuity()
            if run.failed:
                self.failures += 1
            if source_closed:
                self._output.close()  # nothing more will come
            elif run.failed and not self._stopped and self._output.subscriber_count:
                await asyncio.sleep(self._restart_delay)
                if self._run is run and not self._stopped and self._output.subscriber_count:
                    self._start()  # the new run replaces this one
        finally:
            if self._run is run:
                self._run = None

    async def _serve(self, run: _Run) -> bool:
        """Feed the worker until idle, source closed, worker exit or cancellation; then end
        the worker. Returns whether the source hub closed."""
        feed = asyncio.create_task(self._feed(run))
        idle = asyncio.create_task(self._watch_idle())
        exited = asyncio.create_task(run.exited.wait())
        tasks = {feed, idle, exited}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Tell the thread to exit before any await, so that even a second
            # cancellation cannot leave it waiting on its queue.
            run.ending = True
            for task in tasks:
                task.cancel()
            run.source.close()
            _drain(run.queue)
            run.queue.put_nowait(_STOP)
            ended = asyncio.ensure_future(self._reap(run, tasks))
            try:
                await asyncio.shield(ended)
            except asyncio.CancelledError:
                await asyncio.wait([ended])
                raise
        return not feed.cancelled() and feed.exception() is None

    async def _feed(self, run: _Run) -> None:
        """Hand every source packet to the worker; returns when the source hub closes."""
        sub = run.source
        async for packet in sub:
            resync = sub.skips != run.skips  # the hub skipped us forward to this keyframe
            run.skips = sub.skips
            self._offer(run, packet, resync)

    def _offer(self, run: _Run, packet: MediaPacket, resync: bool) -> None:
        if run.need_keyframe:
            if not packet.keyframe:
                self.dropped += 1
                return
            resync = True
        try:
            run.queue.put_nowait((packet, resync))
        except queue.Full:
            # The worker fell behind: what it holds is stale; resume at the next keyframe.
            stale = _drain(run.queue)
            self.frames_in -= stale
            self.dropped += stale + 1
            run.need_keyframe = True
            level = logging.DEBUG if run.warned else logging.WARNING
            log.log(level, "%s: %s falling behind, skipping to the next keyframe", self.name, self._kind)
            run.warned = True
            if packet.keyframe:
                run.queue.put_nowait((packet, True))
                run.need_keyframe = False
                self.frames_in += 1
            return
        run.need_keyframe = False
        self.frames_in += 1

    async def _watch_idle(self) -> None:
        """Return once the output hub has had no subscriber for ``idle_timeout`` seconds."""
        loop = asyncio.get_running_loop()
        idle_since: float | None = None
        while True:
            now = loop.time()
            if self._output.subscriber_count:
                idle_since = None
            elif idle_since is None:
                idle_since = now
            if idle_since is not None and now - idle_since >= self._idle_timeout:
                return
            await asyncio.sleep(_IDLE_POLL)

    async def _reap(self, run: _Run, tasks: set[asyncio.Task[Any]]) -> None:
        """Wait for a run's tasks and its worker thread to end (told to stop already)."""
        await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled() and (err := task.exception()) is not None:
                log.error("%s: %s task failed", self.name, self._kind, exc_info=err)
        try:
            async with asyncio.timeout(_EXIT_TIMEOUT):
                await run.exited.wait()
        except TimeoutError:
            log.warning("%s: %s thread busy for %g s, left to finish", self.name, self._kind, _EXIT_TIMEOUT)
            return
        if run.thread is not None:
            await asyncio.to_thread(run.thread.join)  # it has sent its last word: returns at once
        log.info("%s: %s stopped", self.name, self._kind)

    def _deliver(self, run: _Run, result: StageResult | None) -> None:
        """Called on the loop by the worker: its output for one source packet, or its exit."""
        if result is None:
            run.exited.set()
            return
        self.decode_errors += result.errors
        if run.ending or self._run is not run:
            return
        for packet in result.packets:
            self._output.publish(packet)
        self.frames_out += len(result.packets)


class _Run:
    """One life of the worker, from first demand to idle. ``failed`` is written by the
    worker thread before it signals its exit, and read on the loop after."""

    def __init__(self, source: Subscription, queue_packets: int) -> None:
        self.source = source
        self.queue: queue.Queue[_Item] = queue.Queue(queue_packets)
        self.thread: threading.Thread | None = None
        self.task: asyncio.Task[None] | None = None
        self.exited = asyncio.Event()
        self.ending = False
        self.failed = False
        self.need_keyframe = False  # the source subscription starts at a keyframe
        self.skips = 0
        self.warned = False


def _drain(items: queue.Queue[_Item]) -> int:
    """Empty a queue (only the loop puts, so it stays empty until the next put)."""
    count = 0
    with contextlib.suppress(queue.Empty):
        while True:
            items.get_nowait()
            count += 1
    return count


# Worker thread side -----------------------------------------------------------


def _work(run: _Run, stage: Stage, deliver: Callable[[StageResult | None], object]) -> None:
    """The worker thread: take packets until told to stop; always signal the exit."""
    try:
        while (item := run.queue.get()) is not _STOP:
            packet, resync = item
            result = stage.process(packet, resync)
            if result.packets or result.errors:
                deliver(result)
    except Exception:
        log.exception("%s: worker failed", stage.name)
        run.failed = True
    finally:
        stage.close()
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            deliver(None)
