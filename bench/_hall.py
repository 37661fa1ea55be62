"""The synthetic hall of ``tests/streams/analysis/scenes.py`` as a camera sends it: H.264 packets.

:class:`HallEncoder` encodes raw pictures one at a time with libx264 as a camera would
(the relay benchmark's settings, :func:`bench._fixtures.x264_options`: High profile, no
B-frames, a keyframe every ``gop`` frames and no other, capped bitrate) into
:class:`~streams.packets.MediaPacket` access units stamped on the 90 kHz clock, as a
source hands them to a hub. :func:`full_hd` turns the 640x360 hall into a 1920x1080
one: upscaled, with sensor noise of its own at full size, so that the bitrate is a
real camera's. :func:`au_file` keeps an encoded loop in the RTSP test server's file
format in the temporary directory, made once.

Blocking code; an encoder belongs to one thread.
"""

from __future__ import annotations

import fractions
import itertools
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from bench._fixtures import FPS, x264_options
from streams.codecs.h264 import is_keyframe
from streams.packets import CLOCK_RATE, MediaPacket
from tests.rtsp_fixtures import write_au_file
from tests.streams.analysis.scenes import Picture, hall_pictures

GOP = 2 * FPS
"""A keyframe every 2 s, as the cameras of a site are set."""
TICKS = CLOCK_RATE // FPS
FULL_HD = (1920, 1080)
SUB = (640, 360)
MAIN_KBPS = 4000
SUB_KBPS = 512


class HallEncoder:
    """libx264 with a camera's settings; :meth:`encode` takes BGR or yuv420p pictures."""

    def __init__(self, width: int, height: int, kbps: int, gop: int = GOP) -> None:
        self._ctx = av.CodecContext.create("libx264", "w")
        assert isinstance(self._ctx, av.VideoCodecContext)
        self._ctx.width, self._ctx.height, self._ctx.pix_fmt = width, height, "yuv420p"
        self._ctx.time_base = fractions.Fraction(1, FPS)
        self._ctx.framerate = fractions.Fraction(FPS, 1)
        self._ctx.bit_rate = kbps * 1000
        self._ctx.options = x264_options(kbps, gop)
        self._count = 0

    def encode(self, picture: Picture) -> list[MediaPacket]:
        """The access units out after ``picture`` (``H x W x 3`` BGR, or ``H*3/2 x W`` yuv420p)."""
        fmt = "bgr24" if picture.ndim == 3 else "yuv420p"
        frame = av.VideoFrame.from_ndarray(picture, format=fmt)
        frame.pts = self._count
        self._count += 1
        return [self._packet(p) for p in self._ctx.encode(frame)]

    def flush(self) -> list[MediaPacket]:
        return [self._packet(p) for p in self._ctx.encode(None)]

    @staticmethod
    def _packet(packet: av.Packet[Any]) -> MediaPacket:
        assert packet.pts is not None
        return MediaPacket(bytes(packet), packet.pts * TICKS, packet.is_keyframe)


def to_yuv(picture: Picture) -> Picture:
    """``picture`` (BGR) as a yuv420p array, half the bytes and ready for the encoder."""
    frame = av.VideoFrame.from_ndarray(picture, format="bgr24").reformat(format="yuv420p")
    return np.asarray(frame.to_ndarray(), np.uint8)


def full_hd(pictures: Iterable[Picture], seed: int = 0) -> Iterator[Picture]:
    """``pictures`` upscaled to 1920x1080, with fresh sensor noise (sigma 2) at that size."""
    rng = np.random.default_rng(seed)
    width, height = FULL_HD
    noise = [rng.normal(0, 2.0, (height, width, 1)).astype(np.float32) for _ in range(5)]
    for i, picture in enumerate(pictures):
        big = cv2.resize(picture, FULL_HD, interpolation=cv2.INTER_LINEAR).astype(np.float32)
        yield np.clip(big + noise[i % len(noise)], 0, 255).astype(np.uint8)


def encode_all(pictures: Iterable[Picture], encoder: HallEncoder) -> list[MediaPacket]:
    packets = [p for picture in pictures for p in encoder.encode(picture)]
    return packets + encoder.flush()


def au_file(size: tuple[int, int], kbps: int, seconds: int) -> tuple[Path, list[MediaPacket]]:
    """A loop of ``seconds`` of the hall with four people (640x360 scaled to ``size``) in the
    test server's access-unit format, cached in the temporary directory; and its packets."""
    width, height = size
    directory = Path(tempfile.gettempdir()) / "hallwatch-bench"
    directory.mkdir(exist_ok=True)
    path = directory / f"hall-{width}x{height}-{kbps}k-{seconds}s.au"
    if path.exists():
        return path, read_au_file(path)
    raw = itertools.islice(hall_pictures(seed=5, drift_period=seconds), seconds * FPS)
    pictures = full_hd(raw) if size == FULL_HD else raw
    packets = encode_all(pictures, HallEncoder(width, height, kbps))
    partial = path.with_suffix(".partial")
    write_au_file(partial, packets)
    partial.rename(path)
    return path, packets


def read_au_file(path: Path) -> list[MediaPacket]:
    """The packets of an access-unit file written by :func:`au_file` (keyframes carry SPS)."""
    data = path.read_bytes()
    packets: list[MediaPacket] = []
    offset = 0
    while offset < len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        unit = data[offset + 4 : offset + 4 + size]
        packets.append(MediaPacket(unit, len(packets) * TICKS, is_keyframe(unit)))
        offset += 4 + size
    return packets
