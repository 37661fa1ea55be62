"""Pictures of one camera: JPEG snapshots and MJPEG streams.

A :class:`PictureOutput` sits on a camera's :class:`~streams.hub.Hub` and takes its
pictures from the stream's :class:`~streams.outputs.frames.FrameSource`, the one
decoder of the camera that every consumer of pixels shares.

- Snapshots encode the frame source's latest frame while it runs; otherwise the
  hub's latest keyframe, decoded (by the frame source, one decode at a time) only
  when asked. A JPEG is reused until there is a newer picture.
- MJPEG: the first viewer subscribes to the frame source for every frame at
  ``max_fps``; the newest frame is encoded as JPEG only while some viewer is
  waiting for a new one, and that one JPEG is shared by all viewers. Each viewer
  takes the latest JPEG (a slow viewer skips frames and never holds the others
  back). When the last viewer leaves, the subscription is closed, and the frame
  source stops if nobody else needs it.

Event loop only. Scaling and JPEG encoding run in worker threads
(:mod:`streams.outputs.decoder`), bounded by a semaphore shared across cameras, so
a burst of requests cannot start unbounded threads.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncGenerator

from streams.hub import Hub, HubClosed
from streams.outputs.base import OUTPUTS, StreamContext, output_of
from streams.outputs.decoder import Frame, NoPicture, frame_to_jpeg
from streams.outputs.frames import (
    FrameSource,
    FrameSubscription,
    PerLoopSemaphore,
    TimedFrame,
    in_thread,
)
from streams.packets import MediaPacket
from streams.viewers import Seat, ViewerLedger

__all__ = [
    "DEFAULT_EXECUTOR_SLOTS",
    "MJPEG_BOUNDARY",
    "MJPEG_CONTENT_TYPE",
    "MjpegFeed",
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

default_executor_slots = PerLoopSemaphore(DEFAULT_EXECUTOR_SLOTS)
"""The semaphore shared by every :class:`PictureOutput` built without one."""


def mjpeg_part(jpeg: bytes, boundary: str = MJPEG_BOUNDARY) -> bytes:
    """One part of a ``multipart/x-mixed-replace`` MJPEG body."""
    head = f"--{boundary}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
    return b"".join((head.encode("ascii"), jpeg, b"\r\n"))


class _Publisher:
    """One life of a camera's MJPEG publishing, from first viewer to last."""

    def __init__(self, frames: FrameSubscription) -> None:
        self.frames = frames
        self.ended = False
        self.task: asyncio.Task[None] | None = None


class PictureOutput:
    """Snapshots and MJPEG of one camera. See the module docstring.

    ``frames`` is the stream's shared frame source; without one, the output makes
    (and stops) its own. ``jpeg_quality`` is OpenCV's 1–100 scale; ``max_width``
    scales pictures down (keeping the aspect ratio) when the camera is wider;
    ``executor_slots`` bounds the picture jobs running at once and should be shared
    by all cameras.
    """

    def __init__(
        self,
        hub: Hub,
        *,
        frames: FrameSource | None = None,
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
        self._frames = FrameSource(hub) if frames is None else frames
        self._owns_frames = frames is None
        self._quality = jpeg_quality
        self._max_fps = max_fps
        self._max_width = max_width
        self._slots = executor_slots
        self._stopped = False
        # Snapshots: the JPEG of a keyframe packet or of a frame of the running source.
        self._snapshot_lock = asyncio.Lock()
        self._snapshot: tuple[MediaPacket | TimedFrame, bytes] | None = None
        # MJPEG: the publisher, the published JPEG and the viewers waiting for the next one.
        self._run: _Publisher | None = None
        self._jpeg: bytes | None = None
        self._seq = 0
        self._changed = asyncio.Event()
        self._wanted = asyncio.Event()
        self._waiting = 0
        self._viewers = 0
        self.jpegs_encoded = 0

    @property
    def name(self) -> str:
        return self._hub.name

    @property
    def frames(self) -> FrameSource:
        """The frame source the pictures come from."""
        return self._frames

    @property
    def decoder_running(self) -> bool:
        return self._frames.running

    @property
    def frames_decoded(self) -> int:
        return self._frames.frames_decoded

    @property
    def decode_errors(self) -> int:
        return self._frames.decode_errors

    @property
    def viewer_count(self) -> int:
        """MJPEG iterators currently open."""
        return self._viewers

    # Snapshots -------------------------------------------------------------

    async def snapshot(self, timeout: float = 5.0) -> bytes:  # noqa: ASYNC109 - bounds the keyframe wait only
        """A JPEG of the frame source's latest frame, or else of the latest keyframe.
        Raises :class:`NoPicture`.

        If the camera has sent no keyframe yet, waits up to ``timeout`` seconds for one.
        """
        if self._stopped:
            raise NoPicture(f"{self.name}: picture output stopped")
        picture = self._frames.latest or self._hub.last_keyframe or await self._next_keyframe(timeout)
        async with self._snapshot_lock:
            picture = self._frames.latest or picture  # the source may have a newer frame by now
            cached = self._snapshot
            if cached is not None and cached[0] is picture:
                return cached[1]
            async with self._executor_slots():
                try:
                    frame = (
                        picture.frame
                        if isinstance(picture, TimedFrame)
                        else await self._frames.keyframe_picture(picture)
                    )
                    jpeg = await self._encode(frame)
                except NoPicture as err:
                    raise NoPicture(f"{self.name}: {err}") from err
            self._snapshot = (picture, jpeg)
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

    async def _encode(self, frame: Frame) -> bytes:
        """JPEG of ``frame``, encoded in a thread; the caller holds an executor slot."""
        jpeg = await in_thread(frame_to_jpeg, frame, quality=self._quality, max_width=self._max_width)
        self.jpegs_encoded += 1
        return jpeg

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
            run = self._ensure_publisher()
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
                await self._stop_publisher()

    def _ensure_publisher(self) -> _Publisher:
        run = self._run
        if run is not None and not run.ended:
            return run
        run = _Publisher(self._frames.subscribe(max_fps=self._max_fps))
        run.task = asyncio.create_task(self._publish(run), name=f"mjpeg {self.name}")
        self._run = run
        self._jpeg = None
        return run

    async def _stop_publisher(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        self._jpeg = None
        if run.task is not None:
            run.task.cancel()
            await asyncio.wait([run.task])
        await run.frames.close()

    async def _publish(self, run: _Publisher) -> None:
        """Encode the newest frame while viewers wait, at most ``max_fps`` a second."""
        try:
            while True:
                await self._wanted.wait()
                timed = await run.frames.next()
                async with self._executor_slots():
                    try:
                        jpeg = await self._encode(timed.frame)
                    except NoPicture as err:
                        log.debug("%s: %s", self.name, err)
                        continue
                if self._run is not run:
                    return  # stopped while encoding: a newer run owns the published picture
                self._jpeg = jpeg
                self._seq += 1
                self._wake_viewers()
        except HubClosed:
            pass
        except Exception:
            log.exception("%s: MJPEG publisher failed", self.name)
        finally:
            run.ended = True
            self._wake_viewers()

    def _wake_viewers(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def start(self) -> None:
        """Nothing to do: decoding starts with the first MJPEG viewer."""

    def statistics(self) -> dict[str, int | float | bool | str | None]:
        return {
            "decoding": self.decoder_running,
            "mjpeg_viewers": self.viewer_count,
            "frames_decoded": self.frames_decoded,
            "decode_errors": self.decode_errors,
            "jpegs_encoded": self.jpegs_encoded,
        }

    async def stop(self) -> None:
        """End every MJPEG iterator, and stop the frame source if it is this output's own. Idempotent."""
        self._stopped = True
        await self._stop_publisher()
        if self._owns_frames:
            await self._frames.stop()
        self._wake_viewers()


@OUTPUTS.register("pictures")
def _pictures(context: StreamContext) -> PictureOutput:
    settings = context.settings
    return PictureOutput(
        context.hub,
        frames=output_of(context.outputs, "frames", FrameSource),
        jpeg_quality=settings.jpeg_quality,
        max_fps=settings.mjpeg_max_fps,
    )


class MjpegFeed:
    """One MJPEG viewer's pictures, holding its viewer seat until it is closed, ends, or
    is dropped without ever being read."""

    def __init__(self, frames: AsyncGenerator[bytes, None], viewers: ViewerLedger, seat: Seat) -> None:
        self._frames = frames
        self._release = weakref.finalize(self, viewers.release, seat)

    def __aiter__(self) -> MjpegFeed:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await anext(self._frames)
        except BaseException:
            self._release()
            raise

    async def aclose(self) -> None:
        self._release()
        await self._frames.aclose()
