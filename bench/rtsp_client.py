"""Benchmark: our RTSP client against PyAV (FFmpeg) reading the same camera at once.

Starts the GStreamer RTSP test server on 127.0.0.1 in access-unit-file mode: every
access unit carries an SEI with the wall-clock time at which the server pushed
it. Two clients, each in its own process, read the stream simultaneously:

* ``ours``: :class:`streams.sources.rtsp.source.RtspSource` (asyncio, access unit
  complete on the RTP marker bit);
* ``pyav``: ``av.open(url, options={"rtsp_transport": "tcp", ...})`` demuxing.

Frames are matched by their burnt-in timestamp. Printed: each client's latency
from the server's push to the access unit being in the client's hands, the
difference in arrival time for the same frames, and CPU time per second.

Run: ``.venv/bin/python bench/rtsp_client.py [--seconds 10] [--size 1280x720] [--fps 25]``
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.codecs import h264
from tests.rtsp_fixtures import RtspTestServer, write_au_file

CLOCK_UUID = b"HALLWATCH-CLOCK!"
Result = tuple[list[tuple[int, int]], float, float]
"""(sent time ns, arrival time ns) per frame, CPU seconds, wall seconds."""


def burnt_in_time(data: bytes) -> int | None:
    for nal in h264.split_nals(data):
        if h264.nal_type(nal) == h264.NAL_SEI:
            rbsp = h264.unescape(nal)
            at = rbsp.find(CLOCK_UUID)
            if at != -1 and len(rbsp) >= at + 24:
                return int(struct.unpack_from(">Q", rbsp, at + 16)[0])
    return None


def _wait_until(start_at: float) -> None:
    time.sleep(max(0.0, start_at - time.time()))


def run_ours(url: str, start_at: float, seconds: float, out: multiprocessing.Queue[Result]) -> None:
    from streams.sources.base import SourceOptions
    from streams.sources.rtsp.source import RtspSource

    async def main() -> list[tuple[int, int]]:
        offset = time.time_ns() - time.monotonic_ns()
        frames: list[tuple[int, int]] = []
        source = RtspSource(SourceOptions(url=url, transport="tcp"))
        gen = source.packets()
        try:
            end = time.monotonic() + seconds
            async for packet in gen:
                sent = burnt_in_time(packet.data)
                if sent is not None:
                    frames.append((sent, int(packet.received * 1e9) + offset))
                if packet.received >= end:
                    break
        finally:
            await gen.aclose()
        return frames

    _wait_until(start_at)
    cpu, wall = time.process_time(), time.monotonic()
    frames = asyncio.run(main())
    out.put((frames, time.process_time() - cpu, time.monotonic() - wall))


def run_pyav(url: str, start_at: float, seconds: float, out: multiprocessing.Queue[Result]) -> None:
    import av

    _wait_until(start_at)
    cpu, wall = time.process_time(), time.monotonic()
    frames: list[tuple[int, int]] = []
    options = {"rtsp_transport": "tcp", "analyzeduration": "0", "probesize": "32"}
    with av.open(url, options=options, timeout=(5.0, 5.0)) as container:
        stream = container.streams.video[0]
        end = time.monotonic() + seconds
        for packet in container.demux(stream):
            arrived = time.time_ns()
            if packet.size:
                sent = burnt_in_time(bytes(packet))
                if sent is not None:
                    frames.append((sent, arrived))
            if time.monotonic() >= end:
                break
    out.put((frames, time.process_time() - cpu, time.monotonic() - wall))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def describe(values_ms: list[float]) -> str:
    return (
        f"median {statistics.median(values_ms):7.2f} ms   p90 {pct(values_ms, 0.9):7.2f} ms   "
        f"max {max(values_ms):7.2f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--gop", type=int, default=50)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    from tests.media import encode_h264

    print(f"encoding {width}x{height}@{args.fps} test clip ...", flush=True)
    units = encode_h264(args.gop * 4, width=width, height=height, fps=args.fps, gop=args.gop)
    args.kbps = sum(len(u.data) for u in units) * 8 * args.fps / len(units) / 1000
    with tempfile.TemporaryDirectory() as tmp:
        au_file = write_au_file(Path(tmp) / "clip.au", units)
        server = RtspTestServer({"clock": f"aufile={au_file},fps={args.fps}"})
        with server:
            url = server.url("clock")
            ctx = multiprocessing.get_context("spawn")
            results: dict[str, multiprocessing.Queue[Result]] = {"ours": ctx.Queue(), "pyav": ctx.Queue()}
            start_at = time.time() + 2.0
            procs = [
                ctx.Process(target=run_ours, args=(url, start_at, args.seconds, results["ours"])),
                ctx.Process(target=run_pyav, args=(url, start_at, args.seconds, results["pyav"])),
            ]
            for proc in procs:
                proc.start()
            got = {name: queue.get(timeout=args.seconds + 30) for name, queue in results.items()}
            for proc in procs:
                proc.join(10)
    return report(got, args)


def report(got: dict[str, Result], args: argparse.Namespace) -> int:
    arrivals = {name: dict(frames) for name, (frames, _, _) in got.items()}
    common = sorted(set(arrivals["ours"]) & set(arrivals["pyav"]))
    if len(common) < 10:
        print(f"too few frames seen by both clients ({len(common)})", file=sys.stderr)
        return 1
    print(
        f"\nRTSP over TCP, {args.size}@{args.fps}, {args.kbps:.0f} kbit/s, {args.seconds:g} s, "
        f"{len(common)} frames seen by both"
    )
    print(f"  frames received: ours {len(arrivals['ours'])}, pyav {len(arrivals['pyav'])}")
    for name in ("ours", "pyav"):
        latency = [(arrivals[name][sent] - sent) / 1e6 for sent in common]
        print(f"  latency {name:4} (server push -> client has the access unit): {describe(latency)}")
    diff = [(arrivals["pyav"][sent] - arrivals["ours"][sent]) / 1e6 for sent in common]
    print(f"  arrival pyav - ours, same frame:                         {describe(diff)}")
    for name, (_, cpu, wall) in got.items():
        print(f"  CPU {name:4}: {1000 * cpu / wall:6.1f} ms per second ({100 * cpu / wall:.1f} % of a core)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
