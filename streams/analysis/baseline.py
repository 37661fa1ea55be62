"""What one camera's pictures usually look like: running statistics learned from its own
healthy pictures, so that blur, freezing and covering are judged against the camera and
not against a universal figure (a bare corridor is never as sharp as a crowded hall, and
a view with a clock or a screen in it never keeps all its features in place).

The caller feeds :meth:`Baseline.learn` only the pictures it judged healthy, so a fault
is not learned as normal. Sharpness, brightness and motion are kept as windows of the
last :data:`WINDOW` analysed pictures, read through a median or a low percentile, so
people walking through or a light switched on move them little; per-cell contrast is an
exponential average over the same horizon. Owned by one camera's analysis; not shared.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from streams.analysis.checks import FloatImage, Picture, cell_contrast, motion, sharpness

WINDOW = 250
"""Healthy pictures remembered: at one analysed picture a second, about four minutes."""
WARMUP = 20
"""Healthy pictures needed before the baseline is trusted."""
NOISE_FLOOR_PERCENTILE = 10
"""The noise floor is this percentile of the frame differences: the stillest moments, when
nobody walks through and only the sensor and the encoder change the picture."""
MIN_NOISE_FLOOR = 0.05
"""Levels: a floor for the noise floor, so that a camera whose encoder makes still scenes
bit-exact does not turn every still moment into a freeze ratio of 0/0."""


class Baseline:
    """One camera's learned habits."""

    def __init__(self) -> None:
        self._sharpness: deque[float] = deque(maxlen=WINDOW)
        self._brightness: deque[float] = deque(maxlen=WINDOW)
        self._motion: deque[float] = deque(maxlen=WINDOW)
        self._in_place: deque[float] = deque(maxlen=WINDOW)
        self._cells: FloatImage | None = None
        self._count = 0

    @property
    def ready(self) -> bool:
        """Whether enough healthy pictures were seen to judge against this baseline."""
        return self._count >= WARMUP

    def learn(self, p: Picture, previous: Picture | None, in_place: float | None = None) -> None:
        """Take ``p`` (its difference from ``previous``, and its share of the reference's
        features in place) as a healthy picture."""
        self._count += 1
        if in_place is not None:
            self._in_place.append(in_place)
        self._sharpness.append(sharpness(p))
        self._brightness.append(float(p.luma.mean()))
        if previous is not None:
            self._motion.append(motion(p, previous))
        cells = cell_contrast(p)
        if self._cells is None:
            self._cells = cells
        else:
            weight = 1.0 / min(self._count, WINDOW)
            self._cells = (1 - weight) * self._cells + weight * cells

    @property
    def sharpness(self) -> float:
        """Median sharpness (see :func:`~streams.analysis.checks.sharpness`) of the healthy pictures."""
        return float(np.median(self._sharpness)) if self._sharpness else 0.0

    @property
    def brightness(self) -> float:
        """Median mean luma of the healthy pictures, 0-255."""
        return float(np.median(self._brightness)) if self._brightness else 0.0

    @property
    def in_place(self) -> float:
        """Median share of the reference's features in place in the healthy pictures (1 before
        any was measured)."""
        return float(np.median(self._in_place)) if self._in_place else 1.0

    @property
    def noise_floor(self) -> float:
        """Frame difference of a still moment, in levels (see :data:`NOISE_FLOOR_PERCENTILE`)."""
        if not self._motion:
            return MIN_NOISE_FLOOR
        return max(float(np.percentile(self._motion, NOISE_FLOOR_PERCENTILE)), MIN_NOISE_FLOOR)

    @property
    def cells(self) -> FloatImage:
        """Average luma contrast per cell of the grid, in levels."""
        if self._cells is None:
            raise RuntimeError("the baseline has not learned any picture yet")
        return self._cells
