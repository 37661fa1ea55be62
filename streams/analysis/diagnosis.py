"""One camera's picture diagnosis: scores each analysed picture against what the camera
learned of itself, and keeps the verdict.

:meth:`Diagnosis.observe` takes a decoded BGR picture and its timestamp, computes every
check's :class:`~streams.analysis.verdict.Scores`, lets the :class:`~streams.analysis.verdict.Verdict`
decide what is raised, and teaches the baseline only pictures without any condition
present (a few pictures late: :data:`LEARN_DELAY`). The first healthy picture becomes the
reference view until an operator sets one (:meth:`Diagnosis.set_reference`); the blur,
freeze, cover and scene checks wait until the baseline is ready.

The frozen score is the median of the last :data:`MOTION_WINDOW` frame differences,
because an encoder's keyframe redraws a frozen picture with fresh coding noise: a
single difference after it is no sign of life. In a still, empty hall an H.264 encoder
also stops coding sensor noise and the picture can stay bit-exact for a second or so
(measured with libx264 at crf 28: up to about 10 pictures at 25 fps), which
:data:`~streams.analysis.verdict.RAISE_AFTER` outlasts; a hall perfectly still for longer,
under perfectly steady light, cannot be told from a frozen camera by its pictures.

Owned by one camera's analysis worker; not thread-safe.
"""

from __future__ import annotations

import statistics
from collections import deque

import numpy as np
import numpy.typing as npt

from streams.analysis import checks
from streams.analysis.baseline import Baseline
from streams.analysis.verdict import DEFAULT_THRESHOLDS, Condition, Scores, Thresholds, Verdict, judge

MOTION_WINDOW = 5
"""Frame differences whose median is the frozen score."""
LEARN_DELAY = MOTION_WINDOW
"""Healthy pictures wait this many pictures before the baseline learns them, and are dropped
if a condition comes up meanwhile: a fault is often seen only a few pictures after it began
(the frozen score needs three repeated pictures of five), and its first pictures must not
teach the baseline that a fault is normal."""


class Diagnosis:
    """The diagnosis of one camera's pictures."""

    def __init__(self, verdict: Verdict | None = None, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.baseline = Baseline()
        self.verdict = verdict or Verdict()
        self.thresholds = thresholds
        self.reference: checks.Reference | None = None
        """The view the camera should have: an operator's reference picture, else the first
        healthy picture."""
        self._previous: checks.Picture | None = None
        self._motion: deque[float] = deque(maxlen=MOTION_WINDOW)
        self._pending: deque[tuple[checks.Picture, checks.Picture | None, float | None]] = deque()
        self.last_scores: Scores | None = None
        """The scores of the last observed picture."""

    def _scores(self, p: checks.Picture) -> Scores:
        """``p``'s scores against the baseline and reference (neutral where not learned yet)."""
        b = self.baseline
        if self._previous is not None:
            self._motion.append(checks.motion(p, self._previous))
        ready = b.ready
        brightness = checks.brightness(p)
        in_place = checks.in_place(p, self.reference) if self.reference else 1.0
        motion = statistics.median(self._motion) if self._motion and ready else b.noise_floor
        return Scores(
            brightness=brightness,
            brightness_ratio=brightness / b.brightness if ready else 1.0,
            clipped=checks.clipped(p),
            covered=checks.covered(p, b.cells) if ready else 0.0,
            sharpness_ratio=checks.sharpness(p) / b.sharpness if ready else 1.0,
            motion_ratio=motion / b.noise_floor,
            in_place=in_place,
            in_place_ratio=in_place / max(b.in_place, 0.01) if ready else 1.0,
            colour_cast=checks.colour_cast(p),
            noise=checks.noise(p),
        )

    def observe(self, bgr: npt.NDArray[np.uint8], now: float) -> frozenset[Condition]:
        """Analyse the decoded picture ``bgr`` taken at ``now`` (seconds); return the raised
        conditions."""
        p = checks.prepare(bgr)
        self.last_scores = self._scores(p)
        present = judge(self.last_scores, self.thresholds)
        if present:
            self._pending.clear()
        else:
            in_place = self.last_scores.in_place if self.reference is not None else None
            self._pending.append((p, self._previous, in_place))
            if len(self._pending) > LEARN_DELAY:
                self.baseline.learn(*self._pending.popleft())
            if self.reference is None:
                self.reference = checks.reference(p)
        self._previous = p
        return self.verdict.update(now, present)

    def set_reference(self, bgr: npt.NDArray[np.uint8]) -> None:
        """Take the decoded BGR picture ``bgr`` as the view the camera should have."""
        self.reference = checks.reference(checks.prepare(bgr))
