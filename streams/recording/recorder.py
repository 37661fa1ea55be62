"""The recorder: a stream output that writes a camera's own encoded stream to segment files.

One :class:`Recorder` per recorded camera stream (registered in
:data:`~streams.outputs.base.OUTPUTS` as ``"recorder"``), however many viewers
watch: it subscribes to the stream's hub, and to its audio hub when the camera
relays AAC, so it shares the one upstream session. Packets go through the
:class:`~streams.recording.segmenter.Segmenter` (never decoded) to the
:class:`~streams.recording.writer.SegmentWriter` thread.

The recorder does not wake for every packet: every ``poll_interval`` seconds it
takes what its subscriptions queued meanwhile, sound and picture merged in
timestamp order, and hands the steps to the writer thread in one flush (see
:mod:`streams.recording.writer`). Per packet, a task wake-up and a thread
hand-off cost more than cutting the packet into the file: waking every 0.2 s
rather than per packet took recording 16 cameras from 10.6 % of a core to 5.6 %,
every 0.5 s to 4.5 % (``bench/record.py --overhead``). What a ``kill -9`` loses is
what waited in memory: at most ``poll_interval``; a power cut, also what was not
synced yet (``sync_interval``).

In a cluster, only the camera's owner records it; an owner that lost its lease without
knowing yet (a frozen process, woken) writes nothing more once ``context.holds()`` says
so, and a segment whose close fails because the new owner recovered it is not a fault.

No packet for ``idle_timeout`` seconds (the camera went offline) closes the open
segment; the next one starts at the next keyframe. A writer that falls behind
(its queue is full) makes the recorder close the segment and start the next at
the next keyframe; the packets in between are counted in ``dropped``.

Failures: a write that fails (disk full, read-only) closes the segment at its
last complete fragment and emits :class:`~streams.recording.events.RecordingFailed`
once; the recorder then tries a new segment at most every ``retry_interval``
seconds and, once writing has worked again for :data:`RESUME_AFTER` seconds (not
merely opening a file: on a disk just full, the few bytes a failed write gave
back take a new head), emits :class:`~streams.recording.events.RecordingResumed`. The service never stops
for it.

Why a writer thread rather than aiofiles: ``bench/record.py --writers`` (16
cameras of 4 Mbit/s, 25 fps, one fragment per access unit, 2 cores) measured
0.55 % of a core per camera with the thread against 0.75-0.86 % with aiofiles
(0.2 % for the publishers alone), and the same event-loop lag (p99 2 ms); see
``bench/README.md``.

Event loop only (the writer thread reports back through ``call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from streams.hub import HubClosed, Subscription
from streams.outputs.base import OUTPUTS, Statistic, StreamContext
from streams.packets import MediaPacket
from streams.recording.events import (
    RecordingFailed,
    RecordingResumed,
    SegmentClosed,
    SegmentInfo,
    SegmentOpened,
)
from streams.recording.layout import SegmentMetadata, failure_reason
from streams.recording.segmenter import Data, Segmenter, Step
from streams.recording.writer import DEFAULT_MAX_PENDING, SegmentWriter
from streams.specs import RecordingSpec

__all__ = ["Recorder"]

log = logging.getLogger(__name__)

DEFAULT_RETRY_INTERVAL = 3.0
DEFAULT_IDLE_TIMEOUT = 2.0
DEFAULT_POLL_INTERVAL = 0.5
RESUME_AFTER = 1.0
"""Seconds a new segment must take data, after a failure, before recording counts as resumed."""


class Recorder:
    """Continuous recording of one camera stream. See the module docstring."""

    def __init__(
        self,
        context: StreamContext,
        spec: RecordingSpec,
        *,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_pending: int = DEFAULT_MAX_PENDING,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        self.context = context
        self.spec = spec
        self._retry_interval = retry_interval
        self._idle_timeout = idle_timeout
        self._poll_interval = poll_interval
        self._segmenter = Segmenter(spec.directory, spec.segment_seconds)
        self._writer = SegmentWriter(
            self.name,
            context.spec.id,
            context.stream,
            sync_interval=spec.sync_interval,
            on_opened=self._on_opened,
            on_closed=self._on_closed,
            on_failed=self._on_failed,
            max_pending=max_pending,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._failed = False
        self._retry_at = 0.0
        self._trial: tuple[float, int] | None = None
        """Since a failure: when a new segment opened, and the bytes written by then."""
        self.segments = 0
        self.errors = 0
        self.dropped = 0
        self.last_error: str | None = None
        self.last_segment: SegmentInfo | None = None

    @property
    def name(self) -> str:
        return f"{self.context.name}/recorder"

    @property
    def recording(self) -> bool:
        """True while a segment is open and writing works."""
        return bool(self._tasks) and not self._failed and self._segmenter.open

    async def start(self) -> None:
        if self._tasks:
            return
        self._writer.start()
        video = self.context.hub.subscribe()
        audio = None if self.context.audio_hub is None else self.context.audio_hub.subscribe()
        self._tasks.append(asyncio.create_task(self._record(video, audio), name=self.name))

    async def stop(self) -> None:
        """Close the open segment (a :class:`SegmentClosed` follows) and stop. Idempotent."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tasks:
            self._put_all(self._segmenter.cut())
        await self._writer.stop()
        # The writer's last reports were scheduled on the loop before its thread ended: let them run.
        await asyncio.sleep(0)

    def statistics(self) -> dict[str, Statistic]:
        start = self._segmenter.start
        return {
            "recording": self.recording,
            "failed": self._failed,
            "segments": self.segments,
            "bytes_written": self._writer.bytes_written,
            "errors": self.errors,
            "last_error": self.last_error,
            "dropped": self.dropped,
            "gaps": self._segmenter.gaps,
            "segment_start": None if start is None else start.isoformat(),
        }

    # -- packets ------------------------------------------------------------------

    async def _record(self, video: Subscription, audio: Subscription | None) -> None:
        audio_hub = self.context.audio_hub
        last = time.monotonic()
        with contextlib.ExitStack() as stack:
            for subscription in (video, audio):
                if subscription is not None:
                    stack.callback(subscription.close)
            while True:
                await asyncio.sleep(self._poll_interval)
                try:
                    pictures = _drain(video)
                    sounds = [] if audio is None else [p for p in _drain(audio) if p.codec == "aac"]
                except HubClosed:
                    return
                now = time.monotonic()
                if not pictures:
                    if now - last >= self._idle_timeout and self._segmenter.open:
                        self._put_all(self._segmenter.cut())  # the camera went quiet: end the segment
                    continue
                last = now
                if not self.context.holds():  # another instance records this camera now
                    if self._segmenter.open:
                        log.warning("%s: this instance lost the camera: its segment ends here", self.name)
                        self._put_all(self._segmenter.cut())
                    continue
                if self._failed and now < self._retry_at:
                    continue
                description = None if audio_hub is None else audio_hub.audio
                for packet in _in_order(pictures, sounds):
                    if packet.codec == "aac":
                        self._put_audio(packet)
                    else:
                        self._put_all(self._segmenter.video(packet, description))
                self._writer.flush()
                if self._trial is not None:
                    self._check_resumed(now)

    def _put_audio(self, packet: MediaPacket) -> None:
        if self._failed and self._trial is None:
            return
        step = self._segmenter.audio(packet)
        if step is not None and not self._writer.put(step):
            self.dropped += 1

    def _put_all(self, steps: list[Step]) -> None:
        for step in steps:
            if self._writer.put(step):
                continue
            # The writer fell behind: end the segment here, start again at the next keyframe.
            self.dropped += 1
            if isinstance(step, Data) and self._segmenter.open:
                log.warning("%s: the disk does not keep up, skipping to the next keyframe", self.name)
                self._put_all(self._segmenter.cut())
            return

    # -- reports from the writer thread ---------------------------------------------

    def _on_opened(self, path: Path, meta: SegmentMetadata) -> None:
        spec, stream = self.context.spec, self.context.stream
        self.context.emit(SegmentOpened(spec.id, stream, path, meta.start, meta.codec, meta.audio))
        if self._failed:
            self._trial = (time.monotonic(), self._writer.bytes_written)

    def _check_resumed(self, now: float) -> None:
        """After a failure: resumed once a new segment took data for :data:`RESUME_AFTER` seconds."""
        assert self._trial is not None
        opened, written = self._trial
        if now - opened >= RESUME_AFTER and self._writer.bytes_written > written:
            self._trial = None
            self._failed = False
            log.warning("%s: recording again", self.name)
            self.context.emit(RecordingResumed(self.context.spec.id, self.context.stream))

    def _on_closed(self, info: SegmentInfo) -> None:
        self.segments += 1
        self.last_segment = info
        self.context.emit(SegmentClosed(info))

    def _on_failed(self, err: OSError) -> None:
        if not self.context.holds():
            # Its segment was taken over (and recovered) by the camera's new owner: no fault here.
            log.warning("%s: the segment being closed belongs to the camera's new owner: %s", self.name, err)
            self._segmenter.cut()
            return
        self.errors += 1
        reason = failure_reason(err)
        self.last_error = reason
        self._retry_at = time.monotonic() + self._retry_interval
        self._trial = None
        self._segmenter.cut()  # the writer closed the file already
        if not self._failed:
            self._failed = True
            log.error("%s: recording stopped: %s (%s)", self.name, reason, err)
            self.context.emit(RecordingFailed(self.context.spec.id, self.context.stream, reason))


@OUTPUTS.register("recorder", owner_only=True)
def _recorder(context: StreamContext) -> Recorder | None:
    """The recorder of the configured stream; a camera without a sub-stream records its main stream."""
    recording = context.spec.recording
    if recording is None:
        return None
    wanted = recording.stream if context.spec.sub_source is not None else "main"
    return Recorder(context, recording) if context.stream == wanted else None


def _drain(packets: Subscription) -> list[MediaPacket]:
    """What a subscription has queued; :class:`HubClosed` once it is closed."""
    out: list[MediaPacket] = []
    while (packet := packets.get_nowait()) is not None:
        out.append(packet)
    return out


def _in_order(pictures: list[MediaPacket], sounds: list[MediaPacket]) -> list[MediaPacket]:
    """Pictures and sounds merged by timestamp (both on the stream's 90 kHz timeline), a
    picture first where they tie: sound is written into the segment its time belongs to."""
    if not sounds:
        return pictures
    return sorted(
        pictures + sounds, key=lambda p: (p.pts if p.codec == "aac" else p.decode_ts, p.codec == "aac")
    )
