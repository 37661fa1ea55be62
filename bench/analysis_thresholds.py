"""Where the picture checks' thresholds come from: a measurement, not a test.

It films a synthetic hall (``tests/streams/analysis/scenes.py``: textured floor,
windows, notice boards, people walking, lighting drifting, sensor noise), encodes it
with libx264 and decodes it with PyAV, and runs each check of
:mod:`streams.analysis` at 320 px wide on healthy clips (with people, and empty)
and on each fault (darkened, black, overexposed, blurred, covered 70 and 90 %,
shifted, rotated, green, purple, grey screen, snow, a repeated frame). It prints
each score's min / 5th percentile / median / 95th percentile / max per clip, so the
thresholds in :mod:`streams.analysis.verdict` can be set between healthy and faulty
with a margin, and the cost of each check per picture at 320 px (median over the
healthy clip, one thread).

Run from the project root:  .venv/bin/python bench/analysis_thresholds.py [--frames 150]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import numpy as np

from streams.analysis import checks
from streams.analysis.diagnosis import Diagnosis
from streams.analysis.verdict import Scores
from tests.streams.analysis.scenes import FAULTS, hall_clip

SCORES = [f for f in Scores.__dataclass_fields__]


def learned(frames: int) -> Diagnosis:
    diagnosis = Diagnosis()
    for i, pic in enumerate(hall_clip(frames, seed=1)):
        diagnosis.observe(pic, i * 0.2)
    return diagnosis


def clip_scores(diagnosis: Diagnosis, clip: list[np.ndarray]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in SCORES}
    for i, pic in enumerate(clip):
        diagnosis.observe(pic, 1000.0 + i * 0.2)
        scores = diagnosis.last_scores
        assert scores is not None
        for name in SCORES:
            out[name].append(getattr(scores, name))
    return out


def costs(clip: list[np.ndarray], diagnosis: Diagnosis) -> dict[str, float]:
    pictures = [checks.prepare(pic) for pic in clip]
    b, ref = diagnosis.baseline, diagnosis.reference
    assert ref is not None
    timed: dict[str, Callable[[checks.Picture, checks.Picture], object]] = {
        "prepare (resize + grey)": lambda p, q: checks.prepare(clip[0]),
        "brightness + clipped": lambda p, q: (checks.brightness(p), checks.clipped(p)),
        "sharpness": lambda p, q: checks.sharpness(p),
        "motion": lambda p, q: checks.motion(p, q),
        "covered": lambda p, q: checks.covered(p, b.cells),
        "in_place (ORB)": lambda p, q: checks.in_place(p, ref),
        "colour_cast": lambda p, q: checks.colour_cast(p),
        "noise": lambda p, q: checks.noise(p),
    }
    out = {}
    for name, fn in timed.items():
        spent = []
        for q, p in itertools.pairwise(pictures):
            t = time.perf_counter()
            fn(p, q)
            spent.append(time.perf_counter() - t)
        out[name] = statistics.median(spent) * 1000
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=150, help="pictures per healthy clip")
    parser.add_argument("--fault-frames", type=int, default=40, help="pictures per faulty clip")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    diagnosis = learned(100)
    b = diagnosis.baseline
    print(
        f"baseline: sharpness {b.sharpness:.0f}, brightness {b.brightness:.1f}, "
        f"noise floor {b.noise_floor:.3f} levels"
    )
    clips = {
        "healthy": hall_clip(args.frames, seed=2),
        "healthy, other seed": hall_clip(args.frames, seed=4),
        "empty hall": hall_clip(args.frames, seed=2, people=0),
        "repeated frame": hall_clip(args.fault_frames + 15, seed=1, frozen=True)[15:],
    }
    clips.update({name: hall_clip(args.fault_frames, seed=1, fault=name) for name in FAULTS})
    rows = {name: clip_scores(copy.deepcopy(diagnosis), clip) for name, clip in clips.items()}
    for start in range(0, len(SCORES), 4):
        print(f"\n{'clip':22s}" + "".join(f"{name:>36s}" for name in SCORES[start : start + 4]))
        for name, values in rows.items():
            cells = []
            for score in SCORES[start : start + 4]:
                v = np.percentile(values[score], [0, 5, 50, 95, 100])
                figures = "/".join(f"{x:.3g}" for x in v)
                cells.append(f"{figures:>36s}")
            print(f"{name:22s}" + "".join(cells))
    print("\ncost per picture at 320 px, one thread (median, ms):")
    for name, ms in costs(clips["healthy"], diagnosis).items():
        print(f"  {name:26s} {ms:6.2f}")


if __name__ == "__main__":
    main()
