"""RTSP re-serve: one session's RTP packets of a 1080p access unit, built per session or
stamped from the camera's shared template.

Run from the checkout with the project's virtualenv::

    .venv/bin/python bench/rtp_stamp.py        # a few seconds (the 1080p clip is cached)

It takes the hall clip of ``_hall.py`` at 1080p25, 4 Mbit/s (250 access units, about
20 kB and 16 RTP packets each), packetizes every access unit once (H.264, RFC 6184),
and times, per access unit and per session, in one thread:

* ``per session``: each RTP packet packed and concatenated with its payload, then,
  for TCP, wrapped in a ``$`` frame and joined into one buffer (how the re-serve
  built them before, ``tests/streams/rtsp_server/rtp_reference.py``);
* ``template``: a copy of the unit's shared template with the session's sequence
  numbers, timestamp, SSRC (and, for TCP, channel) written in
  (:meth:`streams.rtsp_server.payloads.RtpTrack.stamp`).

It also times building the templates, which a camera pays once per access unit
whatever the number of sessions. Sending is left out: it is the same bytes either way.

Threads: one. Each figure is the best of ``--runs`` passes over the clip.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _hall import FULL_HD, au_file  # noqa: E402

from streams.formats.rtp_template import Framing, RtpTemplate, build_template  # noqa: E402
from streams.packets import CLOCK_RATE  # noqa: E402
from streams.rtsp_server.payloads import RtpTrack  # noqa: E402
from streams.webrtc.packetizer import packetize_h264  # noqa: E402
from tests.streams.rtsp_server import rtp_reference  # noqa: E402

PAYLOAD_TYPE = 96
CHANNEL = 2
SSRC = 0x1234_5678


def best_per_unit(runs: int, units: int, one_pass: Callable[[], None]) -> float:
    """Microseconds per access unit of the fastest of ``runs`` passes."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        one_pass()
        best = min(best, time.perf_counter() - start)
    return best / units * 1e6


def per_session(units: list[tuple[list[bytes], int]], framed: bool) -> Callable[[], None]:
    def one_pass() -> None:
        sequence = 0
        for payloads, pts in units:
            packets = rtp_reference.packets(payloads, PAYLOAD_TYPE, sequence, pts, SSRC)
            if framed:
                rtp_reference.interleaved(CHANNEL, packets)
            sequence = (sequence + len(packets)) & 0xFFFF

    return one_pass


def templated(templates: list[tuple[RtpTemplate, int]]) -> Callable[[], None]:
    track = RtpTrack(PAYLOAD_TYPE, CLOCK_RATE)

    def one_pass() -> None:
        for template, pts in templates:
            track.stamp(template, pts, CHANNEL)

    return one_pass


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    _path, clip = au_file(FULL_HD, 4000, 10)
    units = [(packetize_h264(p.data), p.pts) for p in clip]
    packets = sum(len(payloads) for payloads, _ in units) / len(units)
    size = sum(len(p.data) for p in clip) / len(clip)
    print(f"{len(units)} access units of 1080p, {size / 1000:.1f} kB and {packets:.1f} RTP packets each")
    print(f"{'transport':<16} {'per session us':>15} {'template us':>12} {'build once us':>14}")
    framings: list[tuple[str, Framing]] = [("tcp interleaved", "interleaved"), ("udp", "none")]
    for label, framing in framings:
        templates: list[tuple[RtpTemplate, int]] = []

        def build(framing: Framing = framing, templates: list[tuple[RtpTemplate, int]] = templates) -> None:
            templates[:] = [(build_template(payloads, PAYLOAD_TYPE, framing), pts) for payloads, pts in units]

        built = best_per_unit(args.runs, len(units), build)
        old = best_per_unit(args.runs, len(units), per_session(units, framing == "interleaved"))
        new = best_per_unit(args.runs, len(units), templated(templates))
        print(f"{label:<16} {old:>15.1f} {new:>12.1f} {built:>14.1f}")


if __name__ == "__main__":
    main()
