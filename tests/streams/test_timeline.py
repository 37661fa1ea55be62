"""LiveTimeline: backlog compressed to the live edge, live spacing kept, always increasing."""

from __future__ import annotations

import itertools

from streams.packets import MediaPacket
from streams.timeline import DEFAULT_STEP, LiveTimeline

FRAME = 3600  # 25 fps in 90 kHz ticks


def packet(index: int, received: float, *, pts: int | None = None) -> MediaPacket:
    return MediaPacket(
        data=b"", pts=index * FRAME if pts is None else pts, keyframe=index == 0, received=received
    )


def test_live_packets_keep_their_spacing() -> None:
    timeline = LiveTimeline(origin=1000)
    outs = [timeline.next_pts(packet(i, received=10 + i * 0.04), now=10 + i * 0.04 + 0.005) for i in range(5)]
    assert outs == [1000 + i * FRAME for i in range(5)]
    assert timeline.compressed == 0
    assert timeline.last_pts == outs[-1]


def test_backlog_is_compressed_then_live_spacing_resumes() -> None:
    timeline = LiveTimeline()
    # A GOP cache of 50 frames received over the last two seconds, sent at once at t=12.
    now = 12.0
    backlog = [packet(i, received=10 + i * 0.04) for i in range(50)]
    outs = [timeline.next_pts(p, now) for p in backlog]
    # Frames older than 100 ms are 1 ms apart; the last couple are fresh enough to keep spacing.
    stale = [p for p in backlog[1:] if now - p.received > 0.1]
    assert timeline.compressed == len(stale) >= 45
    assert all(b - a == DEFAULT_STEP for a, b in itertools.pairwise(outs[: len(stale) + 1]))
    # Then live frames arrive at their real pace and keep their real spacing.
    live = [timeline.next_pts(packet(50 + i, received=12 + i * 0.04), now=12 + i * 0.04) for i in range(3)]
    assert [b - a for a, b in zip([outs[-1], *live[:-1]], live, strict=True)] == [FRAME] * 3
    # The whole backlog took far less viewer time than its two real seconds.
    assert live[0] - outs[0] < 0.3 * 90_000


def test_monotonic_across_rebase_and_reorder() -> None:
    timeline = LiveTimeline()
    a = timeline.next_pts(packet(0, 1.0, pts=500_000), now=1.0)
    b = timeline.next_pts(packet(0, 1.04, pts=100), now=1.04)  # source restarted at a lower pts
    c = timeline.next_pts(packet(0, 1.08, pts=100), now=1.08)  # duplicate pts
    d = timeline.next_pts(packet(0, 1.12, pts=100 + 90_000 * 3600), now=1.12)  # absurd jump
    e = timeline.next_pts(packet(0, 1.16, pts=100 + 90_000 * 3600 + FRAME), now=1.16)
    assert a < b < c < d < e
    assert e - d == FRAME
