"""Decode times for streams whose frames arrive out of presentation order.

A camera that encodes B-frames sends access units in decode order, but RTP
carries only presentation times: ``I0 P3 B1 B2 P6 B4 B5`` (in frame periods). A
WebRTC viewer cannot play such a stream at all; an MP4 fragment can, provided
every sample has a decode time that rises strictly and never passes its
presentation time. :class:`DecodeClock` derives one without looking ahead, so it
adds no latency: each keyframe starts ``reorder_frames`` frame periods before
its presentation time, and every following access unit decodes one frame period
later than the one before, or at its own presentation time if that comes first.
For the example above that gives ``-2 -1 0 1 2 3 4``: exactly the decode times an
encoder with two frames of reorder delay writes.

Whether a stream reorders shows only at its first B-frame, too late for the
frames before it. So the clock stamps every stream that *may* reorder (the hub
says so from the keyframe's SPS: any H.264 profile but Baseline, and H.265) from
its first keyframe; for a stream that turns out not to, the decode times simply
run two frames behind the presentation times, which costs a player nothing.
``reorders`` becomes true only when frames really arrive out of order.

Pure code; one clock belongs to one hub (event loop only).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from collections.abc import Iterable

from streams.packets import CLOCK_RATE, MediaPacket

DEFAULT_REORDER_FRAMES = 2
"""Enough for the usual ``IBBP`` and for a two-level B pyramid."""
_RECENT = 16
_SETTLED = 4
_DEFAULT_TICKS = CLOCK_RATE // 25


def frame_period(presentation_times: Iterable[int], default: int = _DEFAULT_TICKS) -> int:
    """The frame period of a stream, from the smallest gap between its recent presentation
    times (in any order). Until a few frames are known the gaps mislead (a first
    P-frame comes several periods after its keyframe), so no more than ``default`` then."""
    ordered = sorted(set(presentation_times))
    gaps = [b - a for a, b in itertools.pairwise(ordered) if 0 < b - a < CLOCK_RATE]
    if len(ordered) < _SETTLED:
        gaps.append(default)
    return min(gaps) if gaps else default


class DecodeClock:
    """Notices reordering in a stream and stamps decode times once it has. See the module docstring."""

    def __init__(self, reorder_frames: int = DEFAULT_REORDER_FRAMES, *, may_reorder: bool = False) -> None:
        self.reorder_frames = reorder_frames
        self.may_reorder = may_reorder
        """Stamp decode times even before any reordering was seen (set from the stream's profile)."""
        self.reorders = False
        """Sticky: once a frame came before one already shown, the stream counts as reordering."""
        self._max_pts: int | None = None
        self._last_dts: int | None = None
        self._recent: collections.deque[int] = collections.deque(maxlen=_RECENT)

    def frame_ticks(self) -> int:
        """The frame period, from the smallest gap between recent presentation times."""
        return frame_period(self._recent)

    def stamp(self, packet: MediaPacket) -> MediaPacket:
        """``packet``, with a decode time if the stream reorders frames."""
        if not packet.keyframe and self._max_pts is not None and packet.pts < self._max_pts:
            self.reorders = True
        self._max_pts = packet.pts if self._max_pts is None else max(self._max_pts, packet.pts)
        self._recent.append(packet.pts)
        if not (self.reorders or self.may_reorder) or packet.dts is not None:
            self._last_dts = packet.decode_ts
            return packet
        ticks = self.frame_ticks()
        if packet.keyframe or self._last_dts is None:
            dts = packet.pts - self.reorder_frames * ticks
        else:
            dts = min(packet.pts, self._last_dts + ticks)
        if self._last_dts is not None and dts <= self._last_dts:
            dts = self._last_dts + 1
        self._last_dts = dts
        return dataclasses.replace(packet, dts=dts)
