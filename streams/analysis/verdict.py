"""From scores to conditions, and from conditions to a verdict that does not flicker.

:func:`judge` turns one picture's :class:`Scores` into the conditions present in it,
with the thresholds below. :class:`Verdict` raises a condition once it has been present
for ``raise_after`` seconds without a break and clears it once it has been absent for
``clear_after`` seconds, driven by the caller's timestamps (any monotonic clock).

Where the thresholds come from: ``bench/analysis_thresholds.py`` on a synthetic hall
(640x360, textured floor, windows, notice boards, people walking, lighting drifting
+/-18 % over 8 s, sensor noise sigma 3), encoded by libx264 (crf 28) and decoded,
checked at 320x180 against a baseline learned on 100 of its pictures. Figures of
December 2026, min / median / max over three healthy clips of 150 pictures (two with
four people walking, one empty) and over 40 pictures of each fault; each threshold
sits between the two with a margin:

=====================  ===================  ==============================================
score                  healthy              fault
=====================  ===================  ==============================================
brightness             123 / 160 / 178      darkened x0.12: 16-19; black: 3.4-4
brightness_ratio       0.75 / 0.95 / 1.05   darkened x0.12: 0.1
clipped                0 / 0 / 0.0017       overexposed x2.6+60: 0.92-0.93
sharpness_ratio        0.95 / 1.05 / 1.19   Gaussian blur sigma 2 px: 0.09-0.1, 4 px: 0.014
motion_ratio           0.88 / 3 / 3.8       repeated frame: 0-0.003 once the encoder settled
covered                0 / 0 / 0.08         70 % covered: 0.58, 90 %: 0.79; black, grey: 1
in_place               0.46 / 0.69 / 0.87   shifted 8 %/5 %: 0-0.008; rotated 6 deg: 0.007-0.12
colour_cast            0.13 / 0.2 / 0.44    green: 3.9-4.1, purple: 3.8-4.5; grey screen 1.4
noise (levels)         0.26 / 0.32 / 0.67   snow (sigma 28, 3 % salt): 9.6-15
=====================  ===================  ==============================================

With half the lamps switched off (the whole picture at 60 %) nothing crosses a threshold:
brightness_ratio 0.52-0.63, sharpness_ratio 0.89-0.97, in_place 0.56-0.99.
``motion_ratio`` is the median of the last five frame differences over the noise floor
(see :mod:`streams.analysis.diagnosis`); in the empty hall it fell to 0.0007 for a few
pictures at a time, when the encoder stopped coding the sensor noise, which
:data:`RAISE_AFTER` outlasts.

A fault that hides the picture (dark, overexposed, covered) masks the checks that need
to see it (blurred, frozen, moved, colour cast, noisy): a covered lens also has no
edges and no features, and saying so would only bury the real cause. For the same
reason a dark or overexposed picture is not also called covered (it lost its texture
to the exposure; a black screen is dark, a flat grey one covered), and a blurred one is
not also called moved (blur of sigma 4 px leaves only 33-91 % of the features in place).
Masked scores cross other thresholds: overexposed scores covered 0.75-0.83, a brown
hand over 90 % of the lens a colour cast of 1.27-1.56 and a sharpness ratio of 0.22-0.25.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class Condition(StrEnum):
    DARK = "dark"
    OVEREXPOSED = "overexposed"
    COVERED = "covered"
    BLURRED = "blurred"
    FROZEN = "frozen"
    MOVED = "moved"
    COLOUR_CAST = "colour_cast"
    NOISY = "noisy"


HIDING = frozenset((Condition.DARK, Condition.OVEREXPOSED, Condition.COVERED))
"""Conditions under which the picture's content cannot be judged."""

DARK_BRIGHTNESS = 40.0
"""Mean luma below which the picture is too dark: healthy pictures stayed above 123 at the
darkest of the drift, a picture at 12 % of its light is at 16-19; 40 still lets a dim
night scene (mean 50-80) pass."""
DARK_RATIO = 0.3
"""Mean luma against the baseline's below which the picture is too dark for this camera: healthy
at least 0.75 (the lighting drift), 0.52 with half the lamps off, a picture at 12 % of its
light 0.1; a bright hall whose
picture falls to a third has lost its light or its iris even above :data:`DARK_BRIGHTNESS`."""
OVEREXPOSED_CLIPPED = 0.3
"""Share of blown-out pixels above which the picture is overexposed: healthy at most 0.002,
overexposed 0.92; 0.3 leaves room for a bright window or a lamp in the view."""
COVERED_SHARE = 0.35
"""Share of grid cells that lost their texture above which the lens is covered: healthy at
most 0.08 (a person in front of a textured cell), 70 % covered scores 0.58; a lens less
than about 40 % covered is not reported."""
BLURRED_RATIO = 0.35
"""Sharpness against the baseline below which the picture is blurred: healthy at least 0.95
(0.89 with half the lamps off), blur of sigma 2 px at 640 wide at most 0.1; 0.35 sits
about a factor of three from each."""
FROZEN_RATIO = 0.3
"""Median of the last frame differences against the noise floor below which the picture is
frozen: healthy with people at least 0.88, and at least 0.65 over 32 camera-minutes of
normal scenes analysed at keyframes 2 s apart, the empty hall included (``bench/analysis.py``);
a repeated frame at most 0.003 once a constant-quality encoder has settled, but a
constant-bitrate camera re-encodes its frozen picture at each keyframe with a drifting
quantizer, which leaves about 0.22 (800 kbit/s at 640x360, measured through the RTSP test
server)."""
MOVED_IN_PLACE = 0.3
"""Share of matched reference features still in place below which the camera moved or the
scene changed: healthy at least 0.46 (people hide some), shifted or rotated at most 0.12."""
MOVED_RATIO = 0.5
"""Share of features in place against the camera's usual share, below which (and below
:data:`MOVED_IN_PLACE`) the camera moved: a view whose own overlays move (a clock, a screen,
the demo's test cards: 0.2-0.3 in place when healthy) keeps about its usual share, a moved
camera loses nearly all (shifted or rotated: 0-0.12 of a usual 0.69, a ratio under 0.2). So
the scene check needs a ready baseline."""
COLOUR_CAST = 1.5
"""Cast factor above which the picture is tinted: healthy at most 0.44, green and purple at
least 3.8; a flat grey screen scores 1.4 (and is called covered)."""
NOISY_SIGMA = 3.0
"""Estimated noise in levels at 320 px above which the picture is noisy or snowy: healthy at
most 0.67 (downscaling and compression remove most sensor noise), snow at least 9.6."""

RAISE_AFTER = 5.0
"""Seconds a condition must last before it is raised: longer than a person passing close to
the lens or a light switched on, short enough for an operator to act in the same minute."""
CLEAR_AFTER = 10.0
"""Seconds a condition must be gone before it clears: twice the raise delay, so a fault that
comes and goes stays raised instead of sending an alarm every few seconds."""


@dataclass(frozen=True, slots=True)
class Scores:
    """One analysed picture's scores (see :mod:`streams.analysis.checks` for their meaning)."""

    brightness: float
    brightness_ratio: float
    clipped: float
    covered: float
    sharpness_ratio: float
    motion_ratio: float
    in_place: float
    in_place_ratio: float
    """``in_place`` against the camera's usual share (1 until the baseline is ready)."""
    colour_cast: float
    noise: float


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The thresholds of :func:`judge`; a camera may override any of them (the defaults and
    their reasons are the module constants of the same names)."""

    dark_brightness: float = DARK_BRIGHTNESS
    dark_ratio: float = DARK_RATIO
    overexposed_clipped: float = OVEREXPOSED_CLIPPED
    covered_share: float = COVERED_SHARE
    blurred_ratio: float = BLURRED_RATIO
    frozen_ratio: float = FROZEN_RATIO
    moved_in_place: float = MOVED_IN_PLACE
    moved_ratio: float = MOVED_RATIO
    colour_cast: float = COLOUR_CAST
    noisy_sigma: float = NOISY_SIGMA


DEFAULT_THRESHOLDS = Thresholds()


def judge(s: Scores, t: Thresholds = DEFAULT_THRESHOLDS) -> frozenset[Condition]:
    """The conditions present in a picture with scores ``s``."""
    exposure = {
        Condition.DARK: s.brightness < t.dark_brightness or s.brightness_ratio < t.dark_ratio,
        Condition.OVEREXPOSED: s.clipped > t.overexposed_clipped,
    }
    present = {c for c, on in exposure.items() if on}
    if not present and s.covered > t.covered_share:
        present.add(Condition.COVERED)
    if present:
        return frozenset(present)
    blurred = s.sharpness_ratio < t.blurred_ratio
    seen = {
        Condition.BLURRED: blurred,
        Condition.FROZEN: s.motion_ratio < t.frozen_ratio,
        Condition.MOVED: not blurred and s.in_place < t.moved_in_place and s.in_place_ratio < t.moved_ratio,
        Condition.COLOUR_CAST: s.colour_cast > t.colour_cast,
        Condition.NOISY: s.noise > t.noisy_sigma,
    }
    return frozenset(c for c, on in seen.items() if on)


COVERS = 1.25
"""How much time one analysed picture stands for, in gaps before it: the time until the next
picture (about the same gap), with a quarter of it to spare for keyframes that arrive a little
early or late."""


@dataclass(slots=True)
class Verdict:
    """Raised conditions with hysteresis; feed it every analysed picture's conditions.

    A picture stands for the time until the next one (:data:`COVERS`), never more than half
    a delay, so at least two pictures decide: a condition seen in pictures from ``since`` to
    ``now`` has lasted ``now - since`` plus that. With pictures every 2 s and the default
    delays, a fault is raised 4-6 s after it began and cleared 8-10 s after it ended, within
    ``raise_after`` and ``clear_after`` plus one interval, however the pictures fall.
    """

    raise_after: float = RAISE_AFTER
    clear_after: float = CLEAR_AFTER
    raised: set[Condition] = field(default_factory=set)
    _present_since: dict[Condition, float] = field(default_factory=dict)
    _absent_since: dict[Condition, float] = field(default_factory=dict)
    _last: float | None = None

    def update(self, now: float, present: Iterable[Condition]) -> frozenset[Condition]:
        """Take the conditions ``present`` at time ``now`` (seconds); return those raised."""
        present = frozenset(present)
        covers = COVERS * (now - self._last) if self._last is not None else 0.0
        self._last = now
        for c in Condition:
            if c in present:
                self._absent_since.pop(c, None)
                since = self._present_since.setdefault(c, now)
                if now - since + min(covers, self.raise_after / 2) >= self.raise_after:
                    self.raised.add(c)
            else:
                self._present_since.pop(c, None)
                since = self._absent_since.setdefault(c, now)
                if now - since + min(covers, self.clear_after / 2) >= self.clear_after:
                    self.raised.discard(c)
        return frozenset(self.raised)

    def interrupt(self) -> None:
        """Forget how long conditions have been present or absent (the pictures stopped for a
        while): what was raised stays raised until pictures show otherwise again."""
        self._present_since.clear()
        self._absent_since.clear()
        self._last = None
