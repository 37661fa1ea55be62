"""Cameras whose pictures turn bad while they keep streaming, diagnosed by the running service.

A real GStreamer RTSP server (``tests/gst_rtsp_server.py``) serves the synthetic hall of
:mod:`tests.streams.analysis.scenes` two ways: as raw pictures fed to x264 through
GStreamer's own fault elements (``tests/gst_faults.py``: ``videobalance`` for darkness and
glare, ``gaussianblur``, ``compositor`` layers for a card over the lens, a green tint and
``videotestsrc`` snow, the picture zoomed off its place, the same picture re-sent), and as
footage recorded beforehand by PyAV, switched to footage of a knocked camera. Each fault
is turned on and off through the server while the RTSP session goes on; a
:class:`~streams.manager.StreamManager` pulls every camera and analyses it through its
registered ``analysis`` output. Each faulty camera raises its own condition once, with a
JPEG that shows the fault, and clears it after recovery; the healthy cameras raise nothing.

Cameras send 640x360 at 10 fps with a keyframe every half second, analysed at each one.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest

from streams import CameraSpec, IngestPolicy, RelaySettings, SourceOptions, StreamManager
from streams.analysis import Condition
from streams.analysis.baseline import WARMUP
from streams.analysis.output import AnalysisOutput, PictureCleared, PictureRaised
from streams.outputs.frames import FrameSource
from streams.packets import MediaPacket
from streams.specs import AnalysisSpec
from tests.rtsp_fixtures import RtspServerFactory, RtspTestServer, write_au_file
from tests.streams.analysis.scenes import FPS as SCENE_FPS
from tests.streams.analysis.scenes import HEIGHT, WIDTH, Picture, raw_pictures

pytestmark = pytest.mark.rtsp

FPS, GOP = 10, 5
LOOP = 80
"""Pictures in the scene's loop (8 s at 10 fps)."""
QP = 28
"""The cameras' constant quantizer: a still picture is coded alike at every keyframe."""
ANALYSIS = AnalysisSpec(interval=GOP / FPS, raise_after=2.0, clear_after=3.0)
POLICY = IngestPolicy(stall_timeout=3.0, first_packet_timeout=5.0, backoff_initial=0.3, backoff_max=1.0)


@dataclass(frozen=True)
class Faulty:
    """A camera turned bad by ``fault`` (a ``gst_faults`` fault or ``switch``), which should raise
    ``condition``. ``shows(picture, other)`` tells that the alarm's picture has the fault, from
    it and a snapshot of camera ``other`` taken meanwhile (a healthy camera of the same hall,
    or the faulty camera itself)."""

    camera: str
    fault: str
    condition: Condition
    shows: Callable[[Picture, Picture], bool]
    other: str = "calm"


def luma(image: Picture) -> npt.NDArray[np.float32]:
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), np.float32)


def is_dark(image: Picture, _healthy: Picture) -> bool:
    return float(luma(image).mean()) < 40


def is_blown_out(image: Picture, _healthy: Picture) -> bool:
    return float((luma(image) >= 250).mean()) > 0.5


def is_covered(image: Picture, _healthy: Picture) -> bool:
    """The card hides the left 85 %: flat there, the hall still in the strip beside it."""
    card, rest = luma(image)[:, : WIDTH * 8 // 10], luma(image)[:, WIDTH * 9 // 10 :]
    return float(card.std()) < 3 and float(rest.std()) > 10


def sharpness(image: Picture) -> float:
    return float(cv2.Laplacian(luma(image), cv2.CV_32F).var())


def is_blurred(image: Picture, healthy: Picture) -> bool:
    return sharpness(image) < 0.2 * sharpness(healthy)


def is_green(image: Picture, _healthy: Picture) -> bool:
    blue, green, red = (float(c) for c in image.reshape(-1, 3).mean(axis=0))
    return green > 1.15 * max(blue, red)


def grain(image: Picture) -> float:
    grey = luma(image)
    return float(np.abs(grey - cv2.medianBlur(grey.astype(np.uint8), 3)).mean())


def is_snowy(image: Picture, healthy: Picture) -> bool:
    return grain(image) > 3 * grain(healthy)


def view_mismatch(image: Picture, view: Picture) -> float:
    """How unlike ``view`` the hall's upper part (walls and windows, above the people) is in
    ``image``, each normalised to its own mean light: a view is never the same picture twice
    (the light drifts, people pass), but its walls stay where they were."""
    top = slice(0, HEIGHT // 4)
    a, b = luma(image)[top], luma(view)[top]
    return float(np.abs(a / a.mean() - b / b.mean()).mean())


def warped(image: Picture, matrix: npt.NDArray[np.float64]) -> Picture:
    return np.asarray(cv2.warpAffine(image, matrix, (WIDTH, HEIGHT), borderMode=cv2.BORDER_REFLECT), np.uint8)


def seen_through(matrix: npt.NDArray[np.float64]) -> Callable[[Picture, Picture], bool]:
    """Whether the picture is the healthy view moved by ``matrix``: much closer to it so moved
    than as it was."""

    def shows(image: Picture, healthy: Picture) -> bool:
        return view_mismatch(image, warped(healthy, matrix)) < 0.5 * view_mismatch(image, healthy)

    return shows


ZOOMED = np.array([[1.2, 0, -0.2 * WIDTH], [0, 1.2, -0.2 * HEIGHT]])
"""What ``gst_faults``' ``moved`` does: zoom 1.2 times about the bottom-right corner."""
SHIFTED = np.array([[1.0, 0, 0.08 * WIDTH], [0, 1.0, 0.05 * HEIGHT]])
"""The view of the recorded knocked camera: slid by 8 % of the width and 5 % of the height."""


def is_still(image: Picture, later: Picture) -> bool:
    return float(np.abs(luma(image) - luma(later)).mean()) < 1.0


FAULTY = [
    Faulty("dark", "dark", Condition.DARK, is_dark),
    Faulty("glare", "overexposed", Condition.OVEREXPOSED, is_blown_out),
    Faulty("card", "covered", Condition.COVERED, is_covered),
    Faulty("focus", "blurred", Condition.BLURRED, is_blurred),
    Faulty("still", "frozen", Condition.FROZEN, is_still, other="still"),
    Faulty("knocked", "moved", Condition.MOVED, seen_through(ZOOMED)),
    Faulty("green", "tinted", Condition.COLOUR_CAST, is_green),
    Faulty("snow", "snow", Condition.NOISY, is_snowy),
    Faulty("recorded", "switch", Condition.MOVED, seen_through(SHIFTED), other="recorded-calm"),
]
HEALTHY = ("calm", "recorded-calm")
"""Cameras that never turn bad: one through the fault elements, one of recorded footage."""


def encode(pictures: list[Picture]) -> list[MediaPacket]:
    """``pictures`` as a camera would record them: libx264, constant quality, a keyframe every
    :data:`GOP` pictures, parameter sets in band."""
    ctx = av.CodecContext.create("libx264", "w")
    assert isinstance(ctx, av.VideoCodecContext)
    ctx.width, ctx.height, ctx.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    ctx.time_base = fractions.Fraction(1, FPS)
    ctx.framerate = fractions.Fraction(FPS, 1)
    ctx.options = {
        "preset": "veryfast",
        "tune": "zerolatency",
        "crf": str(QP),
        "g": str(GOP),
        "keyint_min": str(GOP),
        "sc_threshold": "0",
    }
    packets = []
    for i, picture in enumerate(pictures):
        frame = av.VideoFrame.from_ndarray(picture, format="bgr24")
        frame.pts = i
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))
    return [MediaPacket(data=bytes(p), pts=p.pts or 0, keyframe=p.is_keyframe, received=0.0) for p in packets]


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The hall's loop as raw I420 pictures (``scene``), recorded by PyAV (``recorded``) and
    recorded by a camera knocked aside (``knocked``)."""
    folder = tmp_path_factory.mktemp("footage")
    hall = raw_pictures(LOOP, drift_period=LOOP / SCENE_FPS)  # the light's drift loops with them
    scene = folder / "hall.i420"
    with scene.open("wb") as f:
        for picture in hall:
            f.write(cv2.cvtColor(picture, cv2.COLOR_BGR2YUV_I420).tobytes())
    knocked = [warped(picture, SHIFTED) for picture in hall]
    return {
        "scene": scene,
        "recorded": write_au_file(folder / "recorded.au", encode(hall)),
        "knocked": write_au_file(folder / "knocked.au", encode(knocked)),
    }


def mounts(footage: dict[str, Path]) -> dict[str, str]:
    scene = f"{WIDTH}x{HEIGHT}@{FPS},qp={QP},gop={GOP},scene={footage['scene']},faults"
    streams = {faulty.camera: scene for faulty in FAULTY if faulty.fault != "switch"}
    streams["calm"] = scene
    streams["recorded"] = f"aufile={footage['recorded']},fps={FPS},alt={footage['knocked']}"
    streams["recorded-calm"] = f"aufile={footage['recorded']},fps={FPS}"
    return streams


def camera(server: RtspTestServer, camera_id: str) -> CameraSpec:
    return CameraSpec(
        id=camera_id,
        source=SourceOptions(url=server.url(camera_id), connect_timeout=2.0, read_timeout=3.0),
        policy=POLICY,
        analysis=ANALYSIS,
    )


@contextlib.asynccontextmanager
async def running(cameras: list[CameraSpec]) -> AsyncIterator[StreamManager]:
    manager = StreamManager(cameras, RelaySettings())
    await manager.start()
    try:
        yield manager
    finally:
        await manager.stop()


def analysis_of(manager: StreamManager, camera_id: str) -> AnalysisOutput:
    output = manager.output(camera_id, "analysis", AnalysisOutput)
    assert output is not None
    return output


async def wait_until(condition: Callable[[], bool], within: float, what: str | Callable[[], str]) -> None:
    """Wait for ``condition``; fail naming ``what`` (a callable: what it says by then)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"{what() if callable(what) else what}: not within {within} s"
        await asyncio.sleep(0.1)


def turn(server: RtspTestServer, camera_id: str, fault: str) -> float:
    """Set the camera's fault; returns when (``time.monotonic()``), just before."""
    at = time.monotonic()
    server.fault(camera_id, fault)
    return at


def decode_jpeg(jpeg: bytes) -> Picture:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "the alarm's picture is not a JPEG"
    return np.asarray(image, np.uint8)


@dataclass
class Events:
    """What the analysis outputs emitted, by camera, and when (``time.monotonic()``)."""

    seen: dict[str, list[tuple[float, PictureRaised | PictureCleared]]]

    def __call__(self, camera_id: str, event: object) -> None:
        if isinstance(event, PictureRaised | PictureCleared):
            self.seen.setdefault(camera_id, []).append((time.monotonic(), event))

    def of(self, camera_id: str) -> list[tuple[str, Condition]]:
        return [(type(e).__name__, e.condition) for _, e in self.seen.get(camera_id, [])]

    def raised(self, camera_id: str) -> PictureRaised:
        return next(e for _, e in self.seen[camera_id] if isinstance(e, PictureRaised))

    def times(self, camera_id: str) -> list[float]:
        return [at for at, _ in self.seen.get(camera_id, [])]


async def test_each_fault_raises_its_own_alarm_with_its_picture_and_clears_after_recovery(
    rtsp_server: RtspServerFactory, footage: dict[str, Path]
) -> None:
    server = rtsp_server(mounts(footage))
    cameras = [faulty.camera for faulty in FAULTY] + list(HEALTHY)
    events = Events({})
    async with running([camera(server, c) for c in cameras]) as manager:
        manager.add_output_listener(events)
        outputs = {c: analysis_of(manager, c) for c in cameras}
        await wait_until(
            lambda: all(o.statistics()["baseline_ready"] for o in outputs.values()),
            WARMUP * ANALYSIS.interval + 15,
            lambda: (
                "every camera learned its healthy picture "
                f"(raised meanwhile: { {c: events.of(c) for c in events.seen} }; "
                f"analysed: { {c: o.analysed for c, o in outputs.items()} })"
            ),
        )
        assert not events.seen, "a healthy hall raised nothing while learning"
        earlier = {c: decode_jpeg(await manager.snapshot(c)) for c in HEALTHY}

        turned_bad = {f.camera: turn(server, f.camera, f.fault) for f in FAULTY}
        await wait_until(
            lambda: all(events.of(f.camera) for f in FAULTY), 15, "every faulty camera raised an alarm"
        )
        analysed = {c: o.analysed for c, o in outputs.items()}
        await wait_until(
            lambda: all(o.analysed >= analysed[c] + 2 for c, o in outputs.items()),
            5,
            "two more pictures of every camera analysed (and nothing else raised)",
        )
        pictures = {f.camera: decode_jpeg(events.raised(f.camera).jpeg) for f in FAULTY}
        others = {c: decode_jpeg(await manager.snapshot(c)) for c in {*HEALTHY, *(f.other for f in FAULTY)}}

        recovered = {f.camera: turn(server, f.camera, "none") for f in FAULTY}
        await wait_until(
            lambda: all(len(events.of(f.camera)) >= 2 for f in FAULTY),
            15,
            "every faulty camera cleared its alarm",
        )

    for faulty in FAULTY:
        assert events.of(faulty.camera) == [
            ("PictureRaised", faulty.condition),
            ("PictureCleared", faulty.condition),
        ], faulty.camera
        raised_at, cleared_at = events.times(faulty.camera)
        # A picture stands for the time until the next one: a delay is met up to an interval early.
        assert raised_at - turned_bad[faulty.camera] >= ANALYSIS.raise_after - 2 * ANALYSIS.interval
        assert cleared_at - recovered[faulty.camera] >= ANALYSIS.clear_after - 2 * ANALYSIS.interval
        picture = pictures[faulty.camera]
        assert picture.shape == (HEIGHT, WIDTH, 3)
        assert faulty.shows(picture, others[faulty.other]), faulty.camera
        healthy = faulty.other if faulty.other in HEALTHY else "calm"
        assert not faulty.shows(others[healthy], earlier[healthy]), (
            f"{faulty.camera}: a healthy picture passes"
        )
    for camera_id in HEALTHY:
        assert events.of(camera_id) == [], camera_id


async def test_viewers_snapshots_and_analysis_of_one_camera_share_one_decode(
    rtsp_server: RtspServerFactory, footage: dict[str, Path]
) -> None:
    server = rtsp_server({"cam1": f"{WIDTH}x{HEIGHT}@{FPS},qp={QP},gop={GOP},scene={footage['scene']}"})
    async with running([camera(server, "cam1")]) as manager:
        source = manager.output("cam1", "frames", FrameSource)
        analysis = analysis_of(manager, "cam1")
        assert source is not None
        await wait_until(lambda: analysis.analysed >= 2, 10, "the analysis started")
        assert source.running and source.keyframes_only

        async def watch(frames: list[bytes]) -> None:
            async for jpeg in manager.mjpeg("cam1"):
                frames.append(jpeg)

        seen: list[list[bytes]] = [[], []]
        viewers = [asyncio.create_task(watch(frames)) for frames in seen]
        try:
            await wait_until(
                lambda: all(len(frames) >= 5 for frames in seen), 10, "MJPEG viewers got pictures"
            )
            analysed = analysis.analysed
            snapshots = await asyncio.gather(*(manager.snapshot("cam1") for _ in range(3)))
            await wait_until(lambda: analysis.analysed >= analysed + 2, 5, "the analysis went on")
            assert not source.keyframes_only
        finally:
            for viewer in viewers:
                viewer.cancel()
            await asyncio.wait(viewers)
        assert all(decode_jpeg(jpeg).shape == (HEIGHT, WIDTH, 3) for jpeg in snapshots)
        stats = source.statistics()
        assert stats["decodes_peak"] == 1, "never two decodes of one camera at once"
        assert stats["starts"] == 1 and stats["on_demand_decodes"] == 0
        assert source.running and source.keyframes_only and source.consumer_count == 1

        await analysis.stop()
        assert not source.running and source.consumer_count == 0
        assert manager.hub("cam1").subscriber_count == 0


async def test_a_freeze_on_a_constant_bitrate_camera(
    rtsp_server: RtspServerFactory, footage: dict[str, Path]
) -> None:
    """A camera whose encoder runs at a constant bitrate (800 kbit/s, what most cameras ship with)
    freezes: its still picture is re-encoded at every keyframe with a drifting quantizer, so
    successive pictures still differ a little. The freeze is raised as fast as on a
    constant-quality camera, and its first pictures are not learned as the camera's stillest
    motion (which would hide the next freeze)."""
    server = rtsp_server({"cam1": f"{WIDTH}x{HEIGHT}@{FPS},800k,gop={GOP},scene={footage['scene']},faults"})
    events = Events({})
    async with running([camera(server, "cam1")]) as manager:
        manager.add_output_listener(events)
        output = manager.output("cam1", "analysis", AnalysisOutput)
        assert output is not None
        await wait_until(lambda: output.statistics()["baseline_ready"], 25, "baseline")
        floor_before = output._diagnosis.baseline.noise_floor  # the learned noise floor
        server.fault("cam1", "frozen")
        frozen_at = time.monotonic()
        await wait_until(lambda: bool(events.seen), 20, "FROZEN raised")
        assert isinstance(events.seen["cam1"][0][1], PictureRaised)
        assert events.times("cam1")[0] - frozen_at < 6, "as fast as a constant-quality camera (3.5-3.9 s)"
        assert output._diagnosis.baseline.noise_floor > floor_before / 2, "the freeze was learned as healthy"
