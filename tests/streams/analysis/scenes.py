"""A synthetic hall filmed by a camera, and its faults, through a real H.264 round trip.

:func:`hall_clip` draws a textured hall (tiled floor, pillars, windows, notice
boards with text), people walking through it, a slow lighting drift and sensor
noise; a fault (see :data:`FAULTS`) is applied to each raw picture as the camera
would produce it, and the clip is then encoded by PyAV's libx264 and decoded back
to BGR pictures, so the checks see compression artefacts as they would live.
"""

from __future__ import annotations

import fractions
import itertools
import math
from collections.abc import Callable, Iterator

import av
import cv2
import numpy as np
import numpy.typing as npt

Picture = npt.NDArray[np.uint8]
Fault = Callable[[Picture, np.random.Generator], Picture]

WIDTH, HEIGHT, FPS = 640, 360, 25
SENSOR_NOISE = 3.0
"""Standard deviation of the sensor noise at 640x360, in 8-bit levels."""


def _background(rng: np.random.Generator) -> Picture:
    img = np.full((HEIGHT, WIDTH, 3), (150, 160, 165), np.uint8)
    horizon = HEIGHT // 3
    img[:horizon] = (190, 185, 175)
    for x in range(-WIDTH, 2 * WIDTH, 60):
        cv2.line(img, (WIDTH // 2, horizon), (x, HEIGHT), (110, 115, 120), 2)
    for y in (horizon + 12, horizon + 35, horizon + 75, horizon + 140, HEIGHT - 5):
        cv2.line(img, (0, y), (WIDTH, y), (110, 115, 120), 2)
    for x in range(30, WIDTH, 150):
        cv2.rectangle(img, (x, 10), (x + 70, horizon - 20), (235, 225, 200), -1)
        cv2.rectangle(img, (x, 10), (x + 70, horizon - 20), (60, 60, 60), 2)
        cv2.line(img, (x + 35, 10), (x + 35, horizon - 20), (60, 60, 60), 2)
    for x in (120, 400):
        cv2.rectangle(img, (x, 0), (x + 28, HEIGHT - 60), (95, 100, 115), -1)
    for i, x in enumerate((200, 480)):
        colour = tuple(int(c) for c in rng.integers(40, 220, 3))
        cv2.rectangle(img, (x, horizon - 60), (x + 90, horizon + 10), colour, -1)
        for line in range(4):
            cv2.putText(
                img,
                f"HALL {i}{line} EXIT",
                (x + 4, horizon - 44 + 14 * line),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.35,
                (20, 20, 20),
                1,
                cv2.LINE_AA,
            )
    return cv2.GaussianBlur(img, (3, 3), 0.6)


def _draw_people(img: Picture, t: float, people: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(people):
        speed = rng.uniform(20, 70) * rng.choice((-1, 1))
        y = int(rng.uniform(HEIGHT * 0.45, HEIGHT * 0.95))
        x = int((rng.uniform(0, WIDTH) + speed * t) % (WIDTH + 80)) - 40
        size = 0.4 + 0.6 * y / HEIGHT
        h, w = int(110 * size), int(34 * size)
        shirt = tuple(int(c) for c in rng.integers(20, 230, 3))
        cv2.rectangle(img, (x - w // 2, y - h), (x + w // 2, y - h // 3), shirt, -1)
        cv2.rectangle(img, (x - w // 2, y - h // 3), (x + w // 2, y), (50, 45, 40), -1)
        cv2.circle(img, (x, y - h - int(10 * size)), int(11 * size), (120, 150, 190), -1)


def _lighting(t: float, drift_period: float) -> float:
    return 1.0 + 0.18 * math.sin(2 * math.pi * t / drift_period)


def hall_pictures(*, seed: int = 1, people: int = 4, drift_period: float = 8.0) -> Iterator[Picture]:
    """The camera's raw pictures (before the fault and the encoder), 640x360 BGR at 25 fps, without
    end: the same hall whatever the ``seed``, which chooses the people and the noise."""
    background = _background(np.random.default_rng(0))
    rng = np.random.default_rng(seed)
    noise = [rng.normal(0, SENSOR_NOISE, (HEIGHT, WIDTH, 1)).astype(np.float32) for _ in range(7)]
    for i in itertools.count():
        t = i / FPS
        img = background.copy()
        _draw_people(img, t, people, seed)
        lit = img.astype(np.float32) * _lighting(t, drift_period) + noise[(3 * i) % len(noise)]
        yield np.clip(lit, 0, 255).astype(np.uint8)


def raw_pictures(frames: int, *, seed: int = 1, people: int = 4, drift_period: float = 8.0) -> list[Picture]:
    """The first ``frames`` of :func:`hall_pictures`."""
    return list(itertools.islice(hall_pictures(seed=seed, people=people, drift_period=drift_period), frames))


def round_trip(pictures: list[Picture], *, crf: int = 28, gop: int = 2 * FPS) -> list[Picture]:
    """``pictures`` encoded by libx264 (a keyframe every ``gop`` pictures, 2 s by default) and
    decoded back to BGR."""
    enc = av.CodecContext.create("libx264", "w")
    assert isinstance(enc, av.VideoCodecContext)
    enc.width, enc.height, enc.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    enc.time_base = fractions.Fraction(1, FPS)
    enc.framerate = fractions.Fraction(FPS, 1)
    enc.options = {"preset": "veryfast", "tune": "zerolatency", "crf": str(crf), "g": str(gop)}
    dec = av.CodecContext.create("h264", "r")
    out: list[Picture] = []
    packets: list[av.Packet] = []
    for i, pic in enumerate(pictures):
        frame = av.VideoFrame.from_ndarray(pic, format="bgr24")
        frame.pts = i
        packets.extend(enc.encode(frame))
    packets.extend(enc.encode(None))
    for packet in packets:
        for decoded in dec.decode(packet):
            out.append(decoded.to_ndarray(format="bgr24"))
    for decoded in dec.decode(None):
        out.append(decoded.to_ndarray(format="bgr24"))
    return out


def _darken(img: Picture, rng: np.random.Generator) -> Picture:
    return np.clip(img.astype(np.float32) * 0.12 + rng.normal(0, 1.5, img.shape), 0, 255).astype(np.uint8)


def _black(img: Picture, rng: np.random.Generator) -> Picture:
    return np.clip(rng.normal(6, 1.5, img.shape), 0, 255).astype(np.uint8)


def _overexpose(img: Picture, rng: np.random.Generator) -> Picture:
    return np.clip(img.astype(np.float32) * 2.6 + 60, 0, 255).astype(np.uint8)


def _blur(sigma: float) -> Fault:
    return lambda img, rng: cv2.GaussianBlur(img, (0, 0), sigma)


def _cover(fraction: float) -> Fault:
    def cover(img: Picture, rng: np.random.Generator) -> Picture:
        mask = np.zeros(img.shape[:2], np.float32)
        k = math.sqrt(4 * fraction / math.pi)  # a quarter ellipse of area ``fraction``
        cv2.ellipse(mask, (0, HEIGHT), (int(WIDTH * k), int(HEIGHT * k)), 0, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), 12)[..., None]
        hand = np.empty_like(img, dtype=np.float32)
        hand[:] = (40, 55, 80)
        hand += np.linspace(0, 25, WIDTH, dtype=np.float32)[None, :, None]
        hand += rng.normal(0, SENSOR_NOISE, img.shape[:2])[..., None]
        return np.clip(img * (1 - mask) + hand * mask, 0, 255).astype(np.uint8)

    return cover


def _move(dx: float, dy: float, degrees: float) -> Fault:
    matrix = cv2.getRotationMatrix2D((WIDTH / 2, HEIGHT / 2), degrees, 1.0)
    matrix[:, 2] += (dx * WIDTH, dy * HEIGHT)
    return lambda img, rng: cv2.warpAffine(img, matrix, (WIDTH, HEIGHT), borderMode=cv2.BORDER_REFLECT)


def _cast(gains: tuple[float, float, float]) -> Fault:
    g = np.array(gains, np.float32)
    return lambda img, rng: np.clip(img.astype(np.float32) * g, 0, 255).astype(np.uint8)


def _grey_screen(img: Picture, rng: np.random.Generator) -> Picture:
    return np.clip(rng.normal(128, 1.5, img.shape[:2])[..., None].repeat(3, 2), 0, 255).astype(np.uint8)


def _snow(img: Picture, rng: np.random.Generator) -> Picture:
    noisy = img.astype(np.float32) + rng.normal(0, 28, img.shape[:2])[..., None]
    salt = rng.random(img.shape[:2]) < 0.03
    noisy[salt] = 255
    return np.clip(noisy, 0, 255).astype(np.uint8)


FAULTS: dict[str, Fault] = {
    "black": _black,
    "darkened": _darken,
    "overexposed": _overexpose,
    "blur2": _blur(2.0),
    "blur4": _blur(4.0),
    "covered70": _cover(0.70),
    "covered90": _cover(0.90),
    "shifted": _move(0.08, 0.05, 0.0),
    "rotated": _move(0.0, 0.0, 6.0),
    "green": _cast((0.65, 1.35, 0.65)),
    "purple": _cast((1.3, 0.6, 1.3)),
    "grey_screen": _grey_screen,
    "snow": _snow,
    "lights_dimmed": _cast((0.6, 0.6, 0.6)),
}
"""Faults applied to the raw pictures, by name (640x360: blur sigmas in pixels at that size);
``lights_dimmed`` is no fault: half the hall's lamps switched off."""


def hall_clip(
    frames: int,
    *,
    seed: int = 1,
    people: int = 4,
    fault: str | None = None,
    frozen: bool = False,
    gop: int = 2 * FPS,
) -> list[Picture]:
    """A decoded clip of the hall, with ``fault`` applied; ``frozen`` repeats the first raw picture;
    ``gop=1`` makes every picture a keyframe, as the service analyses them."""
    raw = raw_pictures(1 if frozen else frames, seed=seed, people=people)
    if frozen:
        raw = raw * frames
    if fault is not None:
        rng = np.random.default_rng(seed + 100)
        raw = [FAULTS[fault](img, rng) for img in raw]
    return round_trip(raw, gop=gop)
