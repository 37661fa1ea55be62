"""Pictures of one camera: JPEG snapshots and MJPEG streams.

A :class:`PictureOutput` sits on a camera's :class:`~streams.hub.Hub`.

- Snapshots decode the hub's latest keyframe only when asked, and reuse the JPEG
  until the hub has a newer keyframe.
- MJPEG decodes the camera once, however many viewers: the first viewer starts
  one decoder task that subscribes to the hub and decodes every packet; the
  newest frame is encoded as JPEG at most ``max_fps`` times a second, only while
  some viewer is waiting for a new one, and that one JPEG is shared by all
  viewers. Each viewer takes the latest JPEG (a slow viewer skips frames and
  never holds the others back). When the last viewer leaves, the decoder stops
  and leaves the hub. If decoding falls behind, the hub skips the decoder's
  subscription forward to the next keyframe.

Event loop only. Decoding, scaling and JPEG encoding run in worker threads
(:mod:`streams.outputs.decoder`); snapshot work and MJPEG encoding are bounded by a
semaphore shared across cameras, so a burst of requests cannot start unbounded
threads. Each camera's packet decoding runs in at most one thread at a time.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import ParamSpec, TypeVar

from streams.hub import Hub, HubClosed, Subscription
from streams.outputs.base import OUTPUTS, StreamContext
from streams.outputs.decoder import Frame, NoPicture, PacketDecoder, frame_to_jpeg, keyframe_to_jpeg
from streams.packets import MediaPacket

__all__ = [
    "DEFAULT_EXECUTOR_SLOTS",
    "MJPEG_BOUNDARY",
    "MJPEG_CONTENT_TYPE",
    "NoPicture",
    "PictureOutput",
    "default_executor_slots",
    "mjpeg_part",
]

log = logging.getLogger(__name__)

MJPEG_BOUNDARY = "hallwatch-mjpeg-frame"
"""Multipart boundary of MJPEG responses (never occurs inside a JPEG part's headers)."""
MJPEG_CONTENT_TYPE = f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}"
"""``Content-Type`` of an MJPEG response body made of :func:`mjpeg_part` parts."""

DEFAULT_EXECUTOR_SLOTS = 2
"""Picture jobs (snapshot, MJPEG encode) running at once across all cameras, by default."""

_MAX_BATCH = 64
"""Packets handed to the decoder thread in one call when it has fallen behind."""

_P = ParamSpec("_P")
_T = TypeVar("_T")

_default_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def default_executor_slots() -> asyncio.Semaphore:
    """The semaphore shared by every :class:`PictureOutput` built without one.

    One per event loop: an asyncio semaphore binds itself to the loop it first
    waits on, and tests run many loops in one process.
    """
    loop = asyncio.get_running_loop()
    slots = _default_slots.get(loop)
    if slots is None:
        slots = _default_slots[loop] = asyncio.Semaphore(DEFAULT_EXECUTOR_SLOTS)
    return slots


def mjpeg_part(jpeg: bytes, boundary: str = MJPEG_BOUNDARY) -> bytes:
    """One part of a ``multipart/x-mixed-replace`` MJPEG body."""
    head = f"--{boundary}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
    return b"".join((head.encode("ascii"), jpeg, b"\r\n"))


async def _in_thread(func: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
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


class _DecoderRun:
    """One life of a camera's shared MJPEG decoder, from first viewer to last."""

    def __init__(self, sub: Subscription, name: str) -> None:
        self.sub = sub
        self.decoder = PacketDecoder(name)
        self.latest: Frame | None = None
        self.fresh = asyncio.Event()
        """Set when ``latest`` holds a frame that has not been published yet."""
        self.ended = False
        self.task: asyncio.Task[None] | None = None


class PictureOutput:
    """Snapshots and MJPEG of one camera. See the module docstring.

    ``jpeg_quality`` is OpenCV's 1–100 scale; ``max_width`` scales pictures down
    (keeping the aspect ratio) when the camera is wider; ``executor_slots`` bounds
    the picture jobs running at once and should be shared by all cameras.
    """

    def __init__(
        self,
        hub: Hub,
        *,
        jpeg_quality: int = 80,
        max_fps: float = 5.0,
        max_width: int | None = None,
        executor_slots: asyncio.Semaphore | None = None,
    ) -> None:
        if not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be within 1..100, not {jpeg_quality}")
        if not max_fps > 0:
            raise ValueError(f"max_fps must be positive, not {max_fps}")
        if max_width is not None and max_width < 2:
            raise ValueError(f"max_width must be at least 2, not {max_width}")
        self._hub = hub
        self._quality = jpeg_quality
        self._interval = 1.0 / max_fps
        self._max_width = max_width
        self._slots = executor_slots
        self._stopped = False
        # Snapshots.
        self._snapshot_lock = asyncio.Lock()
        self._snapshot: tuple[MediaPacket, bytes] | None = None
        # MJPEG: the decoder, the published JPEG and the viewers waiting for the next one.
        self._run: _DecoderRun | None = None
        self._jpeg: bytes | None = None
        self._seq = 0
        self._changed = asyncio.Event()
        self._wanted = asyncio.Event()
        self._waiting = 0
        self._viewers = 0
        # Counters, for stats and tests.
        self.frames_decoded = 0
        self.decode_errors = 0
        self.jpegs_encoded = 0

    @property
    def name(self) -> str:
        return self._hub.name

    @property
    def decoder_running(self) -> bool:
        run = self._run
        return run is not None and run.task is not None and not run.task.done()

    @property
    def viewer_count(self) -> int:
        """MJPEG iterators currently open."""
        return self._viewers

    # Snapshots -------------------------------------------------------------

    async def snapshot(self, timeout: float = 5.0) -> bytes:  # noqa: ASYNC109 - bounds the keyframe wait only
        """A JPEG of the latest keyframe. Raises :class:`NoPicture`.

        If the camera has sent no keyframe yet, waits up to ``timeout`` seconds for one.
        """
        if self._stopped:
            raise NoPicture(f"{self.name}: picture output stopped")
        keyframe = self._hub.last_keyframe or await self._next_keyframe(timeout)
        async with self._snapshot_lock:
            cached = self._snapshot
            if cached is not None and cached[0] is keyframe:
                return cached[1]
            async with self._executor_slots():
                try:
                    jpeg = await _in_thread(
                        keyframe_to_jpeg, keyframe, quality=self._quality, max_width=self._max_width
                    )
                except NoPicture as err:
                    raise NoPicture(f"{self.name}: {err}") from err
            self.jpegs_encoded += 1
            self._snapshot = (keyframe, jpeg)
            return jpeg

    async def _next_keyframe(self, seconds: float) -> MediaPacket:
        try:
            sub = self._hub.subscribe()
        except HubClosed as err:
            raise NoPicture(f"{self.name}: camera removed") from err
        try:
            async with asyncio.timeout(seconds):
                return await sub.get()  # a subscription starts at a keyframe
        except TimeoutError as err:
            raise NoPicture(f"{self.name}: no picture yet (no keyframe within {seconds:g} s)") from err
        except HubClosed as err:
            raise NoPicture(f"{self.name}: camera removed") from err
        finally:
            sub.close()

    def _executor_slots(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = default_executor_slots()
        return self._slots

    # MJPEG -----------------------------------------------------------------

    async def mjpeg(self) -> AsyncGenerator[bytes, None]:
        """JPEG frames for one viewer: the newest picture, at most ``max_fps`` a second.

        While the camera sends nothing, the iterator waits. Ends when :meth:`stop`
        is called or the hub closes. Close the iterator
        (``aclose()``, or cancel the task iterating it) when the viewer leaves.
        """
        if self._stopped:
            return
        try:
            run = self._ensure_decoder()
        except HubClosed:
            return
        self._viewers += 1
        seen = -1
        try:
            while not (self._stopped or run.ended):
                jpeg = self._jpeg
                if jpeg is not None and self._seq != seen:
                    seen = self._seq
                    yield jpeg
                    continue
                changed = self._changed
                self._waiting += 1
                self._wanted.set()
                try:
                    await changed.wait()
                finally:
                    self._waiting -= 1
                    if not self._waiting:
                        self._wanted.clear()
        finally:
            self._viewers -= 1
            if not self._viewers and self._run is run:
                await self._stop_decoder()

    def _ensure_decoder(self) -> _DecoderRun:
        run = self._run
        if run is not None and not run.ended:
            return run
        run = _DecoderRun(self._hub.subscribe(), self.name)
        run.task = asyncio.create_task(self._drive(run), name=f"pictures {self.name}")
        self._run = run
        self._jpeg = None
        log.info("%s: picture decoder started", self.name)
        return run

    async def _stop_decoder(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        self._jpeg = None
        if run.task is not None:
            run.task.cancel()
            await asyncio.wait([run.task])
        log.info("%s: picture decoder stopped", self.name)

    async def _drive(self, run: _DecoderRun) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                publisher = group.create_task(self._publish(run))
                await self._decode(run)
                publisher.cancel()
        except Exception:
            log.exception("%s: picture decoder failed", self.name)
        finally:
            run.ended = True
            run.sub.close()
            self._wake_viewers()

    async def _decode(self, run: _DecoderRun) -> None:
        """Feed every packet to the decoder; return when the hub closes."""
        sub = run.sub
        while True:
            try:
                batch = [await sub.get()]
                while len(batch) < _MAX_BATCH and (packet := sub.get_nowait()) is not None:
                    batch.append(packet)
            except HubClosed:
                return
            result = await _in_thread(run.decoder.decode, batch)
            self.frames_decoded += result.frames
            self.decode_errors += result.errors
            if result.frame is not None:
                run.latest = result.frame
                run.fresh.set()

    async def _publish(self, run: _DecoderRun) -> None:
        """Encode the newest frame while viewers wait, at most once per interval."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self._wanted.wait()
            await run.fresh.wait()
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            frame = run.latest
            if not self._wanted.is_set() or frame is None:
                continue
            run.fresh.clear()
            next_at = loop.time() + self._interval
            async with self._executor_slots():
                try:
                    jpeg = await _in_thread(
                        frame_to_jpeg, frame, quality=self._quality, max_width=self._max_width
                    )
                except NoPicture as err:
                    log.debug("%s: %s", self.name, err)
                    continue
            self.jpegs_encoded += 1
            if self._run is not run:
                return  # stopped while encoding: a newer run owns the published picture
            self._jpeg = jpeg
            self._seq += 1
            self._wake_viewers()

    def _wake_viewers(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def start(self) -> None:
        """Nothing to do: the decoder starts with the first snapshot or MJPEG viewer."""

    def statistics(self) -> dict[str, int | float | bool | str | None]:
        return {
            "decoding": self.decoder_running,
            "mjpeg_viewers": self.viewer_count,
            "frames_decoded": self.frames_decoded,
            "decode_errors": self.decode_errors,
            "jpegs_encoded": self.jpegs_encoded,
        }

    async def stop(self) -> None:
        """Stop the decoder and end every MJPEG iterator. Idempotent."""
        self._stopped = True
        await self._stop_decoder()
        self._wake_viewers()


@OUTPUTS.register("pictures")
def _pictures(context: StreamContext) -> PictureOutput:
    settings = context.settings
    return PictureOutput(context.hub, jpeg_quality=settings.jpeg_quality, max_fps=settings.mjpeg_max_fps)
