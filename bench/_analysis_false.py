"""``bench/analysis.py``, part 3: alarms raised on cameras whose pictures are fine.

Each scene is one camera's stretch of a normal day in the synthetic hall of
``tests/streams/analysis/scenes.py`` (people walking, lighting drifting, sensor noise),
made differently per camera (:data:`SCENES`: from an empty hall to a crowd, light that
drifts over 8 s to 10 minutes, half the lamps switched off for a while), and filmed as
the service would get it, faster than real time: every raw picture at 25 fps of scene
time is encoded by libx264 as a sub-stream (640x360, 512 kbit/s, a keyframe every 2 s);
each keyframe alone is decoded by :func:`~streams.outputs.decoder.decode_keyframe`,
converted by :func:`~streams.outputs.decoder.to_bgr` at the analysis' picture width
and given to a :class:`~streams.analysis.diagnosis.Diagnosis` with the default
:class:`~streams.specs.AnalysisSpec`, at the keyframe's own time (every 2 s of scene
time): what :class:`~streams.analysis.output.AnalysisOutput` does with a camera whose
keyframes are 2 s apart, the service's interval, without the waiting.

For each scene it keeps the alarms raised (with the scores that raised them), the
pictures in which a condition was present without lasting long enough, and each
score's worst value against its threshold.

Blocking code; one scene at a time.
"""

from __future__ import annotations

import itertools
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from bench._fixtures import FPS
from bench._hall import SUB, SUB_KBPS, HallEncoder
from streams.analysis.diagnosis import Diagnosis
from streams.analysis.verdict import Condition, Scores, Verdict, judge
from streams.outputs.decoder import decode_keyframe, to_bgr
from streams.packets import CLOCK_RATE
from streams.specs import AnalysisSpec
from tests.streams.analysis.scenes import FAULTS, Picture, hall_pictures


@dataclass(frozen=True)
class Scene:
    """One camera's normal stretch of time."""

    people: int
    drift_period: float
    """Seconds of one cycle of the lighting's drift (+/-18 %)."""
    dimmed: tuple[float, float] | None = None
    """Half the lamps off from this share of the scene's time to that one."""

    def __str__(self) -> str:
        dimmed = f", lamps half off {self.dimmed[0]:.0%}-{self.dimmed[1]:.0%}" if self.dimmed else ""
        people = "1 person" if self.people == 1 else f"{self.people} people"
        return f"{people}, drift {self.drift_period:g} s{dimmed}"


SCENES = (
    Scene(people=4, drift_period=8.0),
    Scene(people=0, drift_period=120.0),
    Scene(people=12, drift_period=60.0),
    Scene(people=2, drift_period=300.0),
    Scene(people=6, drift_period=20.0, dimmed=(0.4, 0.7)),
    Scene(people=1, drift_period=600.0),
    Scene(people=8, drift_period=30.0),
    Scene(people=3, drift_period=90.0, dimmed=(0.2, 0.5)),
)

WORST = {
    "brightness": (min, "dark_brightness"),
    "brightness_ratio": (min, "dark_ratio"),
    "clipped": (max, "overexposed_clipped"),
    "covered": (max, "covered_share"),
    "sharpness_ratio": (min, "blurred_ratio"),
    "motion_ratio": (min, "frozen_ratio"),
    "in_place": (min, "moved_in_place"),
    "colour_cast": (max, "colour_cast"),
    "noise": (max, "noisy_sigma"),
}
"""Each score's worse direction, and its threshold's name in :class:`~streams.analysis.verdict.Thresholds`."""


@dataclass
class SceneResult:
    scene: Scene
    seconds: float
    pictures: int = 0
    judged: int = 0
    """Pictures analysed with the baseline ready (every check running)."""
    alarms: list[tuple[float, Condition, Scores]] = field(default_factory=list)
    present: Counter[Condition] = field(default_factory=Counter)
    """Pictures in which a condition was present (not necessarily raised)."""
    worst: dict[str, float] = field(default_factory=dict)
    """Each score's worst value over the judged pictures."""

    def note(self, scores: Scores) -> None:
        for name, (pick, _) in WORST.items():
            value = float(getattr(scores, name))
            self.worst[name] = pick(self.worst.get(name, value), value)


def scene_pictures(scene: Scene, seed: int, frames: int) -> Iterator[Picture]:
    """The scene's raw pictures, half the lamps off where it says so."""
    dim, rng = FAULTS["lights_dimmed"], np.random.default_rng(seed)
    start, end = (int(frames * share) for share in scene.dimmed or (1.0, 1.0))
    pictures = hall_pictures(seed=seed, people=scene.people, drift_period=scene.drift_period)
    for i, picture in enumerate(itertools.islice(pictures, frames)):
        yield dim(picture, rng) if start <= i < end else picture


def diagnose(scene: Scene, seed: int, seconds: float) -> SceneResult:
    """Film ``seconds`` of ``scene`` and diagnose its keyframes as the service would."""
    spec = AnalysisSpec()
    diagnosis = Diagnosis(Verdict(spec.raise_after, spec.clear_after), spec.thresholds)
    encoder = HallEncoder(*SUB, SUB_KBPS)
    result = SceneResult(scene, seconds)
    raised: frozenset[Condition] = frozenset()
    for picture in scene_pictures(scene, seed, int(seconds * FPS)):
        for packet in encoder.encode(picture):
            if not packet.keyframe:
                continue
            now = packet.pts / CLOCK_RATE
            ready = diagnosis.baseline.ready
            now_raised = diagnosis.observe(to_bgr(decode_keyframe(packet), spec.picture_width), now)
            scores = diagnosis.last_scores
            assert scores is not None
            result.pictures += 1
            result.present.update(judge(scores, spec.thresholds))
            if ready:
                result.judged += 1
                result.note(scores)
            result.alarms += [(now, c, scores) for c in sorted(now_raised - raised)]
            raised = now_raised
    return result


def false_alarm_stage(scenes: int, minutes: float) -> list[SceneResult]:
    """The first ``scenes`` of :data:`SCENES` (repeated with other seeds beyond them), each
    ``minutes`` long."""
    out = []
    for i, scene in zip(range(scenes), itertools.cycle(SCENES), strict=False):
        print(f"  scene {i + 1}/{scenes}: {scene} ...", file=sys.stderr)
        out.append(diagnose(scene, seed=10 + i, seconds=minutes * 60))
    return out


def threshold(name: str) -> float:
    """The default threshold of score ``name``."""
    return float(getattr(AnalysisSpec().thresholds, WORST[name][1]))
