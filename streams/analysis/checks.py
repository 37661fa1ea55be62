"""Picture checks of the video-quality diagnosis: one score per fault, as pure functions.

Every check takes a :class:`Picture`, made once per analysed frame by
:func:`prepare` from a decoded BGR picture (``uint8``, ``H x W x 3``, as PyAV's
``to_ndarray(format="bgr24")`` gives it), downscaled with ``INTER_AREA`` to
:data:`ANALYSIS_WIDTH` pixels wide: area averaging also averages sensor noise, so
every level and pixel figure below is at that size. Luma is OpenCV's BT.601 grey,
0-255. Checks that judge a picture against the camera's own habits take a
:class:`~streams.analysis.baseline.Baseline`; the scene check takes a
:class:`Reference` picture.

The thresholds that turn scores into conditions are in :mod:`streams.analysis.verdict`
with the figures they come from. Cost per picture at 320x180, one thread, measured by
``bench/analysis_thresholds.py`` (December 2026, 2-core machine): prepare 0.10 ms,
brightness and clipping 0.04, sharpness 0.18, motion 0.03, covered 0.32, colour cast
0.50, noise 0.81, the ORB scene check 2.8: about 5 ms in all, 2.5 % of a core per
camera at five pictures a second. Pure functions; any thread (OpenCV releases the GIL).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

ANALYSIS_WIDTH = 320
"""Width the checks work at: enough for edges and features, about 1/13 of the pixels of 720p."""
GRID = (6, 8)
"""Rows and columns of cells for the occlusion check: 48 cells of 40x30 pixels at 320x180."""
FLAT_CONTRAST = 3.0
"""Luma standard deviation below which the whole picture is flat (covered all over): a black
or grey screen measured 0.05-0.5, the healthy hall at least 27, a darkened one 4.3."""
CLIPPED_LEVEL = 250
"""Luma at or above which a pixel counts as blown out."""
_ORB = cv2.ORB.create(nfeatures=400, fastThreshold=12)
_MATCHER = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
_IN_PLACE_PX = 3.0
"""A reference feature found within this many pixels of where it was is still in place."""
_MIN_MATCHES = 40
"""Fewer matches than this count as missing ones: a changed scene matches little, and that little
by chance."""
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
"""Immerkaer's kernel: blind to planes and ramps, so its response on flat areas is noise."""

FloatImage = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Picture:
    """A decoded picture downscaled for analysis."""

    bgr: npt.NDArray[np.uint8]
    luma: npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Reference:
    """The camera's reference view: ORB features of a picture known to be right."""

    points: npt.NDArray[np.float32]
    descriptors: npt.NDArray[np.uint8] | None


def prepare(bgr: npt.NDArray[np.uint8]) -> Picture:
    """``bgr`` downscaled to :data:`ANALYSIS_WIDTH` wide (kept as is when narrower)."""
    h, w = bgr.shape[:2]
    if w > ANALYSIS_WIDTH:
        size = (ANALYSIS_WIDTH, max(1, round(h * ANALYSIS_WIDTH / w)))
        bgr = np.asarray(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), np.uint8)
    return Picture(bgr, np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), np.uint8))


def brightness(p: Picture) -> float:
    """Mean luma, 0-255: low is dark (a black picture scores about its black level)."""
    return float(p.luma.mean())


def contrast(p: Picture) -> float:
    """Standard deviation of luma, in levels: low is a flat picture (black, grey or covered)."""
    return float(p.luma.std())


def clipped(p: Picture) -> float:
    """Share of pixels blown out (luma >= :data:`CLIPPED_LEVEL`), 0-1: high is overexposed."""
    return float(np.count_nonzero(p.luma >= CLIPPED_LEVEL)) / p.luma.size


def sharpness(p: Picture) -> float:
    """Variance of the Laplacian of luma over the variance of luma: edge energy per unit of
    contrast, lower is blurrier. Dividing by the contrast makes it blind to the light's level
    (both scale with its square) but not to focus, which takes the fine detail and leaves the
    broad contrast. Judge it against the camera's baseline: it depends on the scene as much as
    on focus."""
    return float(cv2.Laplacian(p.luma, cv2.CV_32F, ksize=3).var()) / max(float(p.luma.var()), 1.0)


def motion(p: Picture, previous: Picture) -> float:
    """Mean absolute luma difference from the previous analysed picture, in levels: about the
    sensor and coding noise in a still hall, exactly 0 for a repeated frame."""
    return float(cv2.absdiff(p.luma, previous.luma).mean())


def noise(p: Picture) -> float:
    """Estimated noise standard deviation in levels (Immerkaer's method) over the flat half of
    the picture (Sobel magnitude below its median), so that edges do not count as noise."""
    luma = p.luma.astype(np.float32)
    response = np.abs(cv2.filter2D(luma, cv2.CV_32F, _NOISE_KERNEL))[1:-1, 1:-1]
    gx = cv2.Sobel(luma, cv2.CV_32F, 1, 0)[1:-1, 1:-1]
    gy = cv2.Sobel(luma, cv2.CV_32F, 0, 1)[1:-1, 1:-1]
    magnitude = np.abs(gx) + np.abs(gy)
    flat = magnitude <= np.median(magnitude)
    if not flat.any():
        return 0.0
    return float(np.sqrt(np.pi / 2) / 6 * response[flat].mean())


def colour_cast(p: Picture) -> float:
    """How far the picture's average colour is from grey, against its own colour spread
    (the cast factor D/M on CIELAB a*, b*): about 0.2-1 for a normal scene, several for a
    tinted one, very large for a flat green or purple screen."""
    lab = cv2.cvtColor(p.bgr, cv2.COLOR_BGR2LAB).astype(np.float32)
    a, b = lab[..., 1] - 128, lab[..., 2] - 128
    distance = float(np.hypot(a.mean(), b.mean()))
    spread = float(np.hypot(a.std(), b.std()))
    return distance / max(spread, 1.0)


def cell_contrast(p: Picture) -> FloatImage:
    """Standard deviation of luma per cell of :data:`GRID`, in levels."""
    rows, cols = GRID
    h, w = p.luma.shape
    cells = p.luma[: h - h % rows, : w - w % cols].astype(np.float32)
    cells = cells.reshape(rows, h // rows, cols, w // cols)
    return np.asarray(cells.std(axis=(1, 3)), np.float32)


def covered(p: Picture, baseline_cells: FloatImage) -> float:
    """Share of cells that lost their texture, 0-1: high is a covered lens.

    A cell is covered when its contrast fell below a third of what it usually is
    (``baseline_cells``), measured against the best-kept cells of the picture (the 90th
    percentile of the ratios), so a picture that is dark or dim all over scores low:
    that is the brightness check's business. A flat picture everywhere scores 1.
    """
    if contrast(p) < FLAT_CONTRAST:
        return 1.0
    ratio = cell_contrast(p) / np.maximum(baseline_cells, 1.0)
    kept = float(np.percentile(ratio, 90))
    return float(np.count_nonzero(ratio < kept / 3)) / ratio.size


def reference(p: Picture) -> Reference:
    """ORB features of ``p``, to tell later whether the camera still sees the same view."""
    keypoints, descriptors = _ORB.detectAndCompute(p.luma, None)
    points = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2)
    return Reference(points, None if descriptors is None else np.asarray(descriptors, np.uint8))


def in_place(p: Picture, ref: Reference) -> float:
    """Share of the matches with the reference's features that are where they were, 0-1 (out
    of :data:`_MIN_MATCHES` at least): low is a moved camera or a changed scene. ORB's binary
    tests compare pixels with one another, so lighting changes leave them; people walking
    through hide only a few of them. A reference with fewer than :data:`_MIN_MATCHES` features
    (a plain wall, a caption card) cannot tell a move from chance: it scores 1."""
    if ref.descriptors is None or len(ref.points) < _MIN_MATCHES:
        return 1.0
    keypoints, descriptors = _ORB.detectAndCompute(p.luma, None)
    if descriptors is None:
        return 0.0
    matches = _MATCHER.match(ref.descriptors, descriptors)
    if not matches:
        return 0.0
    before = ref.points[[m.queryIdx for m in matches]]
    after = np.array([keypoints[m.trainIdx].pt for m in matches], np.float32)
    moved = np.linalg.norm(after - before, axis=1)
    return float(np.count_nonzero(moved <= _IN_PLACE_PX)) / max(len(matches), _MIN_MATCHES)
