"""Picture-quality diagnosis as a stream output: each camera's pictures analysed every few seconds.

An :class:`AnalysisOutput` belongs to the stream a camera is diagnosed on: its sub-stream
when it has one (a tenth of the pixels to decode, the same view), else its main stream.
It starts with the service, not with a viewer: the point is to notice a covered lens
in a hall nobody is watching.

It subscribes to the stream's :class:`~streams.outputs.frames.FrameSource` for
keyframes only, at most one every ``interval`` seconds: a keyframe decodes by itself,
so nothing between keyframes is ever decoded for analysis, and a camera's keyframes
arrive at their own moments, which spreads the cameras' decodes over time. A camera
whose keyframes are further apart than ``interval`` is analysed at each keyframe.
Each camera also starts after its own offset within the first interval, so cameras
started together do not decode together. While the camera sends nothing (offline,
stalled) there is nothing to decode and the analysis waits; when pictures come back
after more than :data:`GAP` seconds, conditions are timed afresh. A disabled camera's
stream never starts, and nor does its analysis.

Every analysed picture goes to a :class:`~streams.analysis.diagnosis.Diagnosis` in a
worker thread (scaling by PyAV, checks by OpenCV: never on the event loop), one camera's
analysis at a time. When its verdict raises a condition, a JPEG of that picture is
encoded and :class:`PictureRaised` is emitted; when one clears, :class:`PictureCleared`.
The control plane turns them into alarms.

The reference view (what the scene check compares with) is an operator's reference
picture when one was set (:meth:`AnalysisOutput.set_reference` from the current picture,
:meth:`AnalysisOutput.load_reference` from a stored JPEG after a restart), else the
camera's first healthy picture.

Event loop only, but for the analysis itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from streams.analysis.diagnosis import Diagnosis
from streams.analysis.verdict import Condition, Scores, Verdict
from streams.hub import HubClosed
from streams.outputs.base import OUTPUTS, Statistic, StreamContext, output_of
from streams.outputs.decoder import Frame, NoPicture, frame_to_jpeg, to_bgr
from streams.outputs.frames import FrameSource, TimedFrame, in_thread
from streams.specs import AnalysisSpec, StreamName

__all__ = ["GAP", "AnalysisOutput", "PictureCleared", "PictureRaised"]

log = logging.getLogger(__name__)

GAP = 20.0
"""Seconds without an analysed picture after which conditions are timed afresh: longer than
any keyframe interval a camera should have (10 s), short of a real outage."""


@dataclass(frozen=True, slots=True)
class PictureRaised:
    """A condition of the camera's picture was raised, with the picture that raised it."""

    camera_id: str
    stream: StreamName
    condition: Condition
    scores: Scores
    jpeg: bytes


@dataclass(frozen=True, slots=True)
class PictureCleared:
    """A condition of the camera's picture is gone."""

    camera_id: str
    stream: StreamName
    condition: Condition


class AnalysisOutput:
    """The picture diagnosis of one camera stream. See the module docstring."""

    def __init__(self, context: StreamContext, frames: FrameSource, spec: AnalysisSpec) -> None:
        self.context = context
        self.spec = spec
        self._frames = frames
        self._diagnosis = Diagnosis(Verdict(spec.raise_after, spec.clear_after), spec.thresholds)
        self._busy = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._last_frame: Frame | None = None
        self._last_at: float | None = None
        self._raised: frozenset[Condition] = frozenset()
        self.offset = spec.interval * (zlib.crc32(context.name.encode()) % 1000) / 1000
        """Seconds after the start before the first analysis: the same for a camera every time."""
        self.analysed = 0
        self.failures = 0
        self.seconds = 0.0
        """Time spent in the checks (scaling included, decoding not), summed."""
        self.last_analysed: float | None = None
        """``time.time()`` of the last analysed picture."""

    @property
    def name(self) -> str:
        return f"{self.context.name}/analysis"

    @property
    def camera_id(self) -> str:
        return self.context.spec.id

    @property
    def raised(self) -> frozenset[Condition]:
        """The conditions raised now."""
        return self._raised

    @property
    def learned(self) -> bool:
        """Whether the camera's baseline is ready (the checks against it judge only then)."""
        return self._diagnosis.baseline.ready

    @property
    def scores(self) -> Scores | None:
        """The last analysed picture's scores."""
        return self._diagnosis.last_scores

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def _run(self) -> None:
        await asyncio.sleep(self.offset)
        try:
            async with self._frames.subscribe(keyframes_only=True, max_fps=1 / self.spec.interval) as sub:
                while True:
                    await self._analyse(await sub.next())
        except HubClosed:
            pass

    async def _analyse(self, timed: TimedFrame) -> None:
        now = timed.decoded_at
        if self._last_at is not None and now - self._last_at > GAP:
            self._diagnosis.verdict.interrupt()
        self._last_at = now
        async with self._busy:
            started = time.perf_counter()
            try:
                raised = await in_thread(self._observe, timed.frame, now)
            except Exception:
                self.failures += 1
                log.exception("%s: a picture could not be analysed", self.name)
                return
            finally:
                self.seconds += time.perf_counter() - started
        self._last_frame = timed.frame
        self.analysed += 1
        self.last_analysed = time.time()
        await self._report(raised, timed.frame)

    def _observe(self, frame: Frame, now: float) -> frozenset[Condition]:
        return self._diagnosis.observe(to_bgr(frame, self.spec.picture_width), now)

    async def _report(self, raised: frozenset[Condition], frame: Frame) -> None:
        new, gone = raised - self._raised, self._raised - raised
        self._raised = raised
        scores = self._diagnosis.last_scores
        if new and scores is not None:
            jpeg = await self._jpeg(frame)
            for condition in sorted(new):
                log.warning("%s: picture %s", self.name, condition.value)
                self.context.emit(PictureRaised(self.camera_id, self.context.stream, condition, scores, jpeg))
        for condition in sorted(gone):
            log.info("%s: picture no longer %s", self.name, condition.value)
            self.context.emit(PictureCleared(self.camera_id, self.context.stream, condition))

    async def _jpeg(self, frame: Frame) -> bytes:
        return await in_thread(
            frame_to_jpeg, frame, quality=self.spec.jpeg_quality, max_width=self.spec.picture_width
        )

    async def set_reference(self) -> bytes:
        """Take the last analysed picture as the view the camera should have; returns it as JPEG
        (to be stored and given back to :meth:`load_reference` after a restart). Raises
        :class:`~streams.outputs.decoder.NoPicture` when no picture was analysed yet."""
        frame = self._last_frame
        if frame is None:
            raise NoPicture("no picture of this camera was analysed yet")
        jpeg = await self._jpeg(frame)
        await self.load_reference(jpeg)
        return jpeg

    async def load_reference(self, jpeg: bytes) -> None:
        """Take the picture ``jpeg`` as the view the camera should have. Raises
        :class:`~streams.outputs.decoder.NoPicture` if it is not a picture."""
        image = await in_thread(_decode_jpeg, jpeg)
        async with self._busy:
            await in_thread(self._diagnosis.set_reference, image)

    def statistics(self) -> dict[str, Statistic]:
        scores = self._diagnosis.last_scores
        stats: dict[str, Statistic] = {
            "analysed": self.analysed,
            "failures": self.failures,
            "seconds": round(self.seconds, 3),
            "last_analysed": self.last_analysed,
            "raised": ",".join(sorted(self._raised)),
            "baseline_ready": self._diagnosis.baseline.ready,
        }
        if scores is not None:
            stats |= {f"score_{k}": round(v, 4) for k, v in dataclasses.asdict(scores).items()}
        return stats


def _decode_jpeg(jpeg: bytes) -> npt.NDArray[np.uint8]:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise NoPicture("the reference picture is not a JPEG")
    return np.asarray(image, np.uint8)


@OUTPUTS.register("analysis", owner_only=True)
def _analysis(context: StreamContext) -> AnalysisOutput | None:
    """Diagnosis of the sub-stream when the camera has one, else of the main stream."""
    spec = context.spec.analysis
    if spec is None or not context.spec.enabled:
        return None
    wanted: StreamName = "sub" if context.spec.sub_source is not None else "main"
    frames = output_of(context.outputs, "frames", FrameSource)
    if context.stream != wanted or frames is None:
        return None
    return AnalysisOutput(context, frames, spec)
