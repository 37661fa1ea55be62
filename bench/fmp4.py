"""Fragmented MP4 for MSE: our writer against PyAV's (FFmpeg's) mp4 muxer on the same 720p packets.

Run from the checkout with the project's virtualenv::

    .venv/bin/python bench/fmp4.py                 # a few seconds, most of it encoding the clip
    .venv/bin/python bench/fmp4.py --bframes 2     # a High-profile clip with B-frames

It encodes a 720p25 H.264 clip with PyAV (the relay benchmark's noisy texture,
``bench/_fixtures.py``; High profile, keyframe every 4 s, 2 Mbit/s by default),
then, in one process and one thread, writes one fragment per access unit:

* ``ours``: :class:`streams.formats.fmp4.Fmp4Writer` (what every MSE viewer of a
  camera shares), timed per access unit;
* ``pyav``: an ``mp4`` output container with
  ``movflags=empty_moov+default_base_moof+frag_every_frame`` (and
  ``flush_packets=1``, so that no byte waits in FFmpeg's I/O buffer) writing to
  a Python file object; timed per ``mux()`` call, the ``av.Packet`` built from
  the access unit's bytes included, since the relay would have to build it.

It prints the microseconds per fragment (median, 90th percentile, keyframes
apart) of each, the cost of a cached fragment for a further viewer, and, for
PyAV, after which input access unit the fragment of access unit N became
available in the output (``N + 0`` means at once).

Threads: one. Figures come from one run; each is the median over ``--runs`` passes.
"""

from __future__ import annotations

import argparse
import collections
import fractions
import io
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import av  # noqa: E402

from streams.codecs import h264  # noqa: E402
from streams.formats.fmp4 import Fmp4Writer  # noqa: E402
from streams.hub import Hub  # noqa: E402
from streams.outputs.mse import SharedFragments  # noqa: E402
from streams.packets import CLOCK_RATE, MediaPacket  # noqa: E402

FPS = 25
_GOP = 100
MOVFLAGS = "empty_moov+default_base_moof+frag_every_frame"


def clip(width: int, height: int, kbps: int, frames: int, bframes: int) -> list[MediaPacket]:
    """The relay benchmark's clip, as the hub would publish it (decode times stamped if reordered)."""
    import _fixtures

    if bframes:
        return _bframe_clip(width, height, kbps, frames, bframes)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.au"
        _fixtures.make_au_file(path, width, height, kbps, frames)
        data = path.read_bytes()
    units, at = [], 0
    while at < len(data):
        (size,) = struct.unpack_from(">I", data, at)
        units.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return [
        MediaPacket(unit, i * CLOCK_RATE // FPS, h264.is_keyframe(unit), received=0.0)
        for i, unit in enumerate(units)
    ]


def _bframe_clip(width: int, height: int, kbps: int, frames: int, bframes: int) -> list[MediaPacket]:
    import numpy as np

    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = fractions.Fraction(1, FPS)
    ctx.framerate = fractions.Fraction(FPS, 1)
    ctx.bit_rate = kbps * 1000
    ctx.options = {
        "preset": "veryfast",
        "profile": "high",
        "g": str(_GOP),
        "bf": str(bframes),
        "sc_threshold": "0",
    }
    rng = np.random.default_rng(7)
    texture = rng.integers(0, 256, (height, 2 * width), dtype=np.uint8)
    encoded = []
    for i in range(frames + _GOP):
        luma = np.roll(texture, i * 7, axis=1)[:, :width]
        chroma = np.full((height // 2, width), 128, np.uint8)
        frame = av.VideoFrame.from_ndarray(np.concatenate([luma, chroma]), format="yuv420p")
        frame.pts = i
        encoded += ctx.encode(frame)
    encoded += ctx.encode(None)
    hub = Hub("bench", queue_packets=len(encoded) + 1)
    sub = hub.subscribe()
    for pkt in encoded:
        hub.publish(MediaPacket(bytes(pkt), (pkt.pts or 0) * CLOCK_RATE // FPS, bool(pkt.is_keyframe)))
    stamped = [p for p in (sub.get_nowait() for _ in range(sub.pending())) if p is not None]
    # The hub learns that the stream reorders at its first B-frame: packets before the next
    # keyframe may decode after they are shown, which FFmpeg's muxer refuses. Start there.
    start = next(i for i, p in enumerate(stamped) if p.keyframe and i > 0)
    return stamped[start : start + frames]


def time_ours(packets: list[MediaPacket]) -> list[int]:
    """Nanoseconds per fragment for one pass of our writer."""
    writer = Fmp4Writer()
    times = []
    for packet in packets:
        t0 = time.perf_counter_ns()
        writer.write(packet)
        times.append(time.perf_counter_ns() - t0)
    return times


def time_cached(packets: list[MediaPacket]) -> list[int]:
    """Nanoseconds per fragment for a second viewer, whose fragments are already cached."""
    shared = SharedFragments(capacity=len(packets) + 1)
    for packet in packets:
        shared.get(packet)
    times = []
    for packet in packets:
        t0 = time.perf_counter_ns()
        shared.get(packet)
        times.append(time.perf_counter_ns() - t0)
    return times


class _Sink(io.RawIOBase):
    """A file object that keeps what it is given and finds complete top-level boxes."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._at = 0
        self.moofs = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.data += b
        return len(b)

    def complete_fragments(self) -> int:
        """``moof`` boxes whose ``mdat`` is complete, counted so far."""
        while self._at + 8 <= len(self.data):
            size, kind = struct.unpack_from(">I4s", self.data, self._at)
            if self._at + size > len(self.data):
                break
            if kind == b"mdat":
                self.moofs += 1
            self._at += size
        return self.moofs


def time_pyav(packets: list[MediaPacket], width: int, height: int) -> tuple[list[int], list[int]]:
    """Nanoseconds per ``mux()`` call, and for each access unit N the index of the input
    access unit after whose ``mux()`` N's fragment was complete in the output."""
    params = [n for n in h264.split_nals(packets[0].data) if h264.nal_type(n) in (h264.NAL_SPS, h264.NAL_PPS)]
    sink = _Sink()
    container = av.open(sink, "w", format="mp4", options={"movflags": MOVFLAGS, "flush_packets": "1"})
    stream = container.add_stream("h264", rate=FPS)  # a codec context only to carry the extradata
    stream.width, stream.height = width, height
    stream.time_base = fractions.Fraction(1, CLOCK_RATE)
    stream.codec_context.extradata = h264.join_nals(params)
    container.start_encoding()
    sink.complete_fragments()
    times: list[int] = []
    available: list[int] = []
    time_base = fractions.Fraction(1, CLOCK_RATE)
    for index, media in enumerate(packets):
        t0 = time.perf_counter_ns()
        packet = av.Packet(media.data)
        packet.pts, packet.dts, packet.time_base = media.pts, media.decode_ts, time_base
        packet.is_keyframe = media.keyframe
        packet.stream = stream
        container.mux(packet)
        times.append(time.perf_counter_ns() - t0)
        done = sink.complete_fragments()
        available += [index] * (done - len(available))
    container.close()
    return times, available


def _us(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"median {statistics.median(values) / 1000:7.1f} us, p90 {p90 / 1000:7.1f} us"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280x720", help="WxH of the clip")
    parser.add_argument("--kbps", type=int, default=2000, help="bitrate of the clip")
    parser.add_argument("--frames", type=int, default=250, help="access units in the clip")
    parser.add_argument("--bframes", type=int, default=0, help="B-frames (0: as cameras usually send)")
    parser.add_argument("--runs", type=int, default=5, help="passes over the clip (medians are shown)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    print(f"encoding {args.frames} frames of {width}x{height} at {args.kbps} kbit/s ...", file=sys.stderr)
    packets = clip(width, height, args.kbps, args.frames, args.bframes)
    sizes = [len(p.data) for p in packets]
    keys = [p.keyframe for p in packets]
    mbps = sum(sizes) * 8 / (len(packets) / FPS) / 1e6
    print(
        f"fMP4 benchmark: {width}x{height} {FPS} fps, {len(packets)} access units, "
        f"{mbps:.2f} Mbit/s measured, "
        f"{sum(keys)} keyframes, {args.bframes} B-frames; median of {args.runs} passes per figure"
    )

    runs: dict[str, list[list[int]]] = collections.defaultdict(list)
    available: list[int] = []
    for _ in range(args.runs):
        runs["ours"].append(time_ours(packets))
        runs["cached"].append(time_cached(packets))
        pyav_times, available = time_pyav(packets, width, height)
        runs["pyav"].append(pyav_times)
    labels = {
        "ours": "ours (Fmp4Writer.write)",
        "pyav": "PyAV mp4 muxer (Packet + mux)",
        "cached": "ours, a further viewer (cache hit)",
    }
    print()
    print("1. Time per fragment")
    for name, label in labels.items():
        # per access unit: the median over the passes; then the figures over access units
        per_unit = [statistics.median(run[i] for run in runs[name]) for i in range(len(packets))]
        key = [t for t, k in zip(per_unit, keys, strict=True) if k]
        other = [t for t, k in zip(per_unit, keys, strict=True) if not k]
        print(f"   {label:<36} all: {_us(per_unit)};  keyframes: {_us(key)};  others: {_us(other)}")
    ours = statistics.median(statistics.median(run) for run in runs["ours"])
    pyav = statistics.median(statistics.median(run) for run in runs["pyav"])
    print(f"   PyAV / ours (medians): {pyav / ours:.1f}x")

    print()
    print("2. When the fragment of access unit N is complete in the output")
    delays = collections.Counter(at - n for n, at in enumerate(available))
    missing = len(packets) - len(available)
    print(
        "   PyAV: "
        + ", ".join(f"after input N + {d}: {c} fragments" for d, c in sorted(delays.items()))
        + f"; {missing} only at close()"
    )
    print("   ours: after input N + 0 for every fragment (write() returns it)")
    print(f"   one frame at {FPS} fps is {1000 / FPS:.0f} ms")


if __name__ == "__main__":
    main()
