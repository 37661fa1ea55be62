"""``bench/analysis.py``, part 2: how long a camera whose picture turns bad takes to raise its
alarm, and to clear it once the picture is back.

Each camera is the synthetic hall filmed live (:class:`LiveCamera`): a thread encodes 25
pictures a second (640x360, 512 kbit/s, a keyframe every 2 s, as a sub-stream) into a
:class:`~streams.hub.Hub`, and the camera's outputs are built on that hub by the
registry the service uses (:data:`~streams.outputs.base.OUTPUTS`: its frame source and
its :class:`~streams.analysis.output.AnalysisOutput`), with the default
:class:`~streams.specs.AnalysisSpec`. The stream never stops; only its pictures change,
from any frame on (a keyframe or not): the raw pictures of the hall are replaced by
the same pictures with a fault of ``tests/streams/analysis/scenes.py`` (black, a hand
over the lens), and later put back.

Once the camera's baseline is ready, each trial waits a random 3-9 s (so the fault
falls at any phase of the keyframes and of the analysis), shows the fault, waits for
:class:`PictureRaised`, keeps the fault a random 0-3 s more, shows the healthy hall
again and waits for :class:`PictureCleared`. Times run from the publication of the
first picture with (or without) the fault to the event, both on ``time.monotonic()``.

The event loop runs the outputs; each camera's encoder has a thread.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from bench._fixtures import FPS
from bench._hall import SUB, SUB_KBPS, HallEncoder, to_yuv
from streams.analysis.output import AnalysisOutput, PictureCleared, PictureRaised
from streams.analysis.verdict import Condition, judge
from streams.hub import Hub
from streams.outputs.base import OUTPUTS, StreamContext, StreamOutput, output_of
from streams.packets import MediaPacket
from streams.sources import SourceOptions
from streams.specs import AnalysisSpec, CameraSpec, RelaySettings
from tests.streams.analysis.scenes import FAULTS, Picture, hall_pictures

LOOP_FRAMES = 213
"""Raw pictures in the camera's loop: prime to the GOP, so keyframes fall on every one of them."""
EXPECTED = {"black": Condition.DARK, "covered90": Condition.COVERED}
"""The condition each fault must raise."""
BASELINE_TIMEOUT = 120.0
RAISE_TIMEOUT = 30.0
CLEAR_TIMEOUT = 40.0


def loops(faults: Sequence[str]) -> dict[str | None, list[Picture]]:
    """The hall's loop (yuv420p), healthy (``None``) and with each fault."""
    drift = LOOP_FRAMES / FPS
    raw = list(itertools.islice(hall_pictures(seed=3, drift_period=drift), LOOP_FRAMES))
    rng = np.random.default_rng(103)
    out: dict[str | None, list[Picture]] = {None: [to_yuv(p) for p in raw]}
    for fault in faults:
        out[fault] = [to_yuv(FAULTS[fault](p, rng)) for p in raw]
    return out


class LiveCamera:
    """The hall encoded in real time into ``hub``; :meth:`show` switches its picture."""

    def __init__(self, hub: Hub, pictures: Mapping[str | None, Sequence[Picture]]) -> None:
        self._hub = hub
        self._pictures = pictures
        self._wanted: str | None = None
        self.shown: tuple[str | None, float] = (None, 0.0)
        """What the camera shows and since when (``time.monotonic()`` of its first packet)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"camera {self._hub.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    async def show(self, picture: str | None) -> float:
        """Show ``picture`` (a fault, or ``None``: the healthy hall) from the next frame on;
        returns when its first packet was published."""
        self._wanted = picture
        while self.shown[0] != picture:
            await asyncio.sleep(0.01)
        return self.shown[1]

    def _run(self) -> None:
        width, height = SUB
        encoder = HallEncoder(width, height, SUB_KBPS)
        start = time.monotonic()
        for i in itertools.count():
            delay = start + i / FPS - time.monotonic()
            if self._stop.wait(max(0.0, delay)):
                return
            wanted = self._wanted
            loop = self._pictures[wanted]
            packets = encoder.encode(loop[i % len(loop)])
            for packet in packets:
                self._publish(packet)
            if packets and wanted != self.shown[0]:
                self.shown = (wanted, time.monotonic())

    def _publish(self, packet: MediaPacket) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._hub.publish, packet)


@dataclass
class Trial:
    """One fault shown and taken away; times on ``time.monotonic()``."""

    fault_at: float
    raised_at: float | None = None
    healthy_at: float | None = None
    cleared_at: float | None = None


@dataclass
class Trials:
    """One camera's trials, and every picture its analysis judged meanwhile."""

    fault: str
    trials: list[Trial] = field(default_factory=list)
    analyses: list[tuple[float, bool]] = field(default_factory=list)
    """When each picture was analysed, and whether the fault's condition was in it."""
    others: list[str] = field(default_factory=list)
    """Events of conditions other than the expected one."""

    @property
    def condition(self) -> Condition:
        return EXPECTED[self.fault]

    def raised(self) -> list[float]:
        """Seconds from the fault to its alarm."""
        return [t.raised_at - t.fault_at for t in self.trials if t.raised_at is not None]

    def cleared(self) -> list[float]:
        """Seconds from the healthy picture's return to the alarm's end."""
        return [t.cleared_at - t.healthy_at for t in self.trials if t.cleared_at and t.healthy_at]

    def seen(self, present: bool) -> list[float]:
        """Seconds from the fault (``present``) or the recovery to the first analysed picture
        that shows it."""
        out = []
        for trial in self.trials:
            since = trial.fault_at if present else trial.healthy_at
            first = next(
                (at for at, p in self.analyses if since is not None and at > since and p is present), None
            )
            if since is not None and first is not None:
                out.append(first - since)
        return out

    def missed(self) -> int:
        """Trials whose alarm was not raised, or not cleared, in time."""
        return sum(t.raised_at is None or t.cleared_at is None for t in self.trials)

    def gaps(self) -> list[float]:
        """Seconds between one analysed picture and the next."""
        return [b[0] - a[0] for a, b in itertools.pairwise(self.analyses)]


EventKind = type[PictureRaised] | type[PictureCleared]


def describe(event: object) -> str:
    return f"{type(event).__name__}({getattr(event, 'condition', '?')})"


class Events:
    """The analysis events of one camera, with when they came."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[float, object]] = asyncio.Queue()

    def emit(self, event: object) -> None:
        self.queue.put_nowait((time.monotonic(), event))

    async def next(self, kind: EventKind, trials: Trials, timeout: float) -> float | None:
        """When the next ``kind`` event of the trials' condition came; None after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                at, event = await asyncio.wait_for(self.queue.get(), left)
            except TimeoutError:
                break
            if isinstance(event, kind) and event.condition is trials.condition:
                return at
            trials.others.append(describe(event))
        return None

    def drain(self, trials: Trials) -> None:
        """Note the events left over as unexpected."""
        while not self.queue.empty():
            _, event = self.queue.get_nowait()
            trials.others.append(describe(event))


async def run_trials(
    camera: LiveCamera, events: Events, trials: Trials, count: int, rng: random.Random
) -> None:
    for _ in range(count):
        await asyncio.sleep(rng.uniform(3.0, 9.0))
        trial = Trial(await camera.show(trials.fault))
        trials.trials.append(trial)
        trial.raised_at = await events.next(PictureRaised, trials, RAISE_TIMEOUT)
        if trial.raised_at is not None:
            await asyncio.sleep(rng.uniform(0.0, 3.0))
        trial.healthy_at = await camera.show(None)
        if trial.raised_at is not None:
            trial.cleared_at = await events.next(PictureCleared, trials, CLEAR_TIMEOUT)
    await asyncio.sleep(2 * AnalysisSpec().interval)
    events.drain(trials)


async def watch(analysis: AnalysisOutput, trials: Trials) -> None:
    """Note each analysed picture, when and whether it showed the condition (until cancelled)."""
    seen = analysis.analysed
    while True:
        await asyncio.sleep(0.02)
        if analysis.analysed != seen and analysis.scores is not None and analysis.last_analysed is not None:
            seen = analysis.analysed
            at = time.monotonic() - (time.time() - analysis.last_analysed)
            trials.analyses.append((at, trials.condition in judge(analysis.scores, analysis.spec.thresholds)))


async def wait_baseline(analysis: AnalysisOutput) -> None:
    deadline = time.monotonic() + BASELINE_TIMEOUT
    while not analysis.statistics()["baseline_ready"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{analysis.name}: the baseline was not ready in time")
        await asyncio.sleep(0.5)


async def one_camera(
    fault: str, pictures: Mapping[str | None, Sequence[Picture]], count: int, seed: int
) -> Trials:
    """A hub, its outputs as the service builds them, the live camera, and its trials."""
    name = f"alarm-{fault}"
    hub, events = Hub(name), Events()
    spec = CameraSpec(id=name, source=SourceOptions(url=f"demo://{name}"), analysis=AnalysisSpec())
    outputs = OUTPUTS.build(StreamContext(name, "main", hub, None, spec, RelaySettings(), emit=events.emit))
    analysis = output_of(outputs, "analysis", AnalysisOutput)
    assert analysis is not None
    camera = LiveCamera(hub, pictures)
    camera.start()
    started: list[StreamOutput] = []
    try:
        for output in outputs.values():
            await output.start()
            started.append(output)
        await wait_baseline(analysis)
        trials = Trials(fault)
        watcher = asyncio.create_task(watch(analysis, trials))
        try:
            await run_trials(camera, events, trials, count, random.Random(seed))
        finally:
            watcher.cancel()
            await asyncio.wait([watcher])
        return trials
    finally:
        for output in reversed(started):
            await output.stop()
        camera.stop()
        hub.close()


async def alarm_stage(faults: Sequence[str], count: int) -> list[Trials]:
    """Every fault on a camera of its own, all at once."""
    pictures = loops(faults)
    return list(
        await asyncio.gather(*(one_camera(f, pictures, count, seed) for seed, f in enumerate(faults)))
    )
