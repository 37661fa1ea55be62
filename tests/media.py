"""Real H.264 media for tests, encoded by PyAV: no mocked bitstreams."""

from __future__ import annotations

import dataclasses
import fractions
import time
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

from streams.packets import CLOCK_RATE, MediaPacket


def arriving(packets: Sequence[MediaPacket]) -> list[MediaPacket]:
    """``packets`` as if they all reached a hub now, to be published in one go. Encoding
    stamps each with when it was made, and a hub skips a subscriber whose oldest queued
    packet arrived over a second before the newest: on a busy machine, a slow encode or a
    stream cached by an earlier test and one encoded later were that far apart."""
    now = time.monotonic()
    return [dataclasses.replace(p, received=now) for p in packets]


def encode_h264(
    frames: int = 50,
    *,
    width: int = 320,
    height: int = 240,
    fps: int = 25,
    gop: int = 25,
    profile: str = "baseline",
) -> list[MediaPacket]:
    """``frames`` access units of a moving gradient, Annex-B, keyframe every ``gop`` frames."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = fractions.Fraction(1, fps)
    ctx.framerate = fractions.Fraction(fps, 1)
    ctx.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "profile": profile,
        "g": str(gop),
        "keyint_min": str(gop),
        "sc_threshold": "0",
        "bf": "0",
    }
    packets: list[MediaPacket] = []
    ramp = (np.arange(width) % 256)[None, :].repeat(height, axis=0)
    for i in range(frames):
        img = np.dstack([(ramp + i * 4) % 256, ramp, 255 - ramp]).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        for pkt in ctx.encode(frame):
            packets.append(_to_media(pkt, fps))
    for pkt in ctx.encode(None):
        packets.append(_to_media(pkt, fps))
    return packets


def _to_media(pkt: av.Packet, fps: int) -> MediaPacket:
    assert pkt.pts is not None
    return MediaPacket(
        data=bytes(pkt),
        pts=pkt.pts * CLOCK_RATE // fps,
        keyframe=bool(pkt.is_keyframe),
        received=time.monotonic(),
    )


def write_mp4(
    path: Path,
    seconds: float = 2.0,
    *,
    fps: int = 25,
    width: int = 320,
    height: int = 240,
    bframes: int = 0,
) -> Path:
    """An MP4 file with an H.264 track, for file:// sources; ``bframes`` > 0 gives a
    High profile stream whose frames are stored out of presentation order."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        preset = "veryfast" if bframes else "ultrafast"
        stream.options = {
            "preset": preset,
            "g": str(fps),
            "bf": str(bframes),
            "b_strategy": "0",
            "sc_threshold": "0",
        }
        ramp = (np.arange(width) % 256)[None, :].repeat(height, axis=0)
        for i in range(int(seconds * fps)):
            img = np.dstack([(ramp + i * 4) % 256, ramp, 255 - ramp]).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for pkt in stream.encode(frame):
                out.mux(pkt)
        for pkt in stream.encode(None):
            out.mux(pkt)
    return path


def encode_h265(
    frames: int = 50,
    *,
    width: int = 320,
    height: int = 240,
    fps: int = 25,
    gop: int = 25,
    pix_fmt: str = "yuv420p",
) -> list[MediaPacket]:
    """``frames`` H.265 access units of a moving gradient (libx265, ultrafast, no B-frames),
    Annex-B with VPS/SPS/PPS before every keyframe, keyframe every ``gop`` frames.

    ``pix_fmt="yuv420p10le"`` gives Main 10.
    """
    ctx = av.CodecContext.create("libx265", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
    ctx.time_base = fractions.Fraction(1, fps)
    ctx.framerate = fractions.Fraction(fps, 1)
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:repeat-headers=1:log-level=error"
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "x265-params": params}
    ramp = (np.arange(width) % 256)[None, :].repeat(height, axis=0)
    encoded: list[av.Packet] = []
    for i in range(frames):
        img = np.dstack([(ramp + i * 4) % 256, ramp, 255 - ramp]).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=pix_fmt)
        frame.pts = i
        encoded += ctx.encode(frame)
    encoded += ctx.encode(None)
    return [
        MediaPacket(
            data=bytes(pkt),
            pts=(pkt.pts or 0) * CLOCK_RATE // fps,
            keyframe=bool(pkt.is_keyframe),
            codec="h265",
            received=time.monotonic(),
        )
        for pkt in encoded
    ]


def encode_h264_bframes(
    frames: int = 50,
    *,
    width: int = 320,
    height: int = 240,
    fps: int = 25,
    gop: int = 25,
    bframes: int = 2,
) -> list[MediaPacket]:
    """High-profile H.264 with B-frames (libx264 ``veryfast``), in decode order with
    presentation times only, as RTP delivers them: ``dts`` is left for the hub to derive."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = fractions.Fraction(1, fps)
    ctx.framerate = fractions.Fraction(fps, 1)
    ctx.options = {
        "preset": "veryfast",
        "profile": "high",
        "g": str(gop),
        "keyint_min": str(gop),
        "sc_threshold": "0",
        "bf": str(bframes),
        "b_strategy": "0",
        "threads": "1",
    }
    ramp = (np.arange(width) % 256)[None, :].repeat(height, axis=0)
    encoded: list[av.Packet] = []
    for i in range(frames):
        img = np.dstack([(ramp + i * 4) % 256, ramp, 255 - ramp]).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        encoded += ctx.encode(frame)
    encoded += ctx.encode(None)
    return [_to_media(pkt, fps) for pkt in encoded]
