"""Per-viewer presentation timeline that brings a late joiner to the live edge.

A new viewer starts with the hub's GOP cache: the last keyframe and every frame
since, which may be seconds old. Sent at their original spacing, those frames
would keep the viewer that many seconds behind for the whole session. Instead,
an output sends the backlog at once, and :class:`LiveTimeline` gives the stale
frames timestamps only a millisecond apart, so the player shows them (or skips
through them) almost instantly; live frames then keep their real spacing.
Timestamps stay strictly increasing for the viewer.

Pure logic, no I/O: one instance per viewer, used by whichever task feeds that
viewer (the event loop for WebRTC and MSE outputs).
"""

from __future__ import annotations

from streams.packets import CLOCK_RATE, MediaPacket

DEFAULT_STALE_AGE = 0.1
"""Seconds: a frame received longer ago than this when it is sent is backlog."""

DEFAULT_STEP = CLOCK_RATE // 1000
"""Ticks between two backlog frames (1 ms)."""

DEFAULT_MAX_GAP = 10 * CLOCK_RATE
"""Ticks: a larger jump between two live frames is treated as a discontinuity."""


class LiveTimeline:
    """Maps hub timestamps to a viewer's timestamps, starting at ``origin``.

    ``next_pts(packet, now)`` must be called once per frame, in sending order,
    with ``now`` the ``time.monotonic()`` at which the frame is being sent.
    """

    def __init__(
        self,
        *,
        origin: int = 0,
        stale_age: float = DEFAULT_STALE_AGE,
        step: int = DEFAULT_STEP,
        max_gap: int = DEFAULT_MAX_GAP,
    ) -> None:
        if step <= 0:
            raise ValueError("step must be positive")
        self._origin = origin
        self._stale_age = stale_age
        self._step = step
        self._max_gap = max_gap
        self._last_in: int | None = None
        self._last_out: int | None = None
        self.compressed = 0
        """How many frames were given backlog timestamps."""

    @property
    def last_pts(self) -> int | None:
        """The last timestamp handed out, or None before the first frame."""
        return self._last_out

    def next_pts(self, packet: MediaPacket, now: float) -> int:
        """The viewer's timestamp for ``packet`` (90 kHz ticks)."""
        last_in, last_out = self._last_in, self._last_out
        self._last_in = packet.pts
        if last_in is None or last_out is None:
            out = self._origin
        elif now - packet.received > self._stale_age:
            self.compressed += 1
            out = last_out + self._step
        else:
            delta = packet.pts - last_in
            if delta <= 0 or delta > self._max_gap:
                # A reordered or rebased source: keep the viewer's clock moving.
                delta = self._step
            out = last_out + delta
        self._last_out = out
        return out
