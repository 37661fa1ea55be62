"""Real-time pacing for sources that replay stored media (file and demo sources).

A :class:`Pacer` maps media time (90 kHz ticks) onto the monotonic clock from an
anchor, so waiting for each access unit's deadline never accumulates drift. When
the consumer or the process falls far behind (a suspended process, a stalled event
loop), the pacer re-anchors instead of bursting out the backlog, and reports a
timestamp shift so the replayed stream's timestamps keep following the wall clock.

Event loop only; one pacer per replaying generator.
"""

from __future__ import annotations

import asyncio
import logging
import time

from streams.packets import CLOCK_RATE

log = logging.getLogger(__name__)


class Pacer:
    """Sleeps until each access unit is due. See the module docstring."""

    def __init__(self, *, max_lag: float = 1.0) -> None:
        self._max_lag = max_lag
        self._anchor_wall: float | None = None
        self._anchor_media = 0
        self._shift = 0
        self.reanchors = 0
        """How often the pacer fell more than ``max_lag`` behind and started afresh."""

    async def wait(self, media_ticks: int) -> int:
        """Wait until ``media_ticks`` is due; return the ticks to add to its timestamp.

        ``media_ticks`` must not decrease between calls. The returned shift only
        grows, so shifted timestamps increase as strictly as the media ones.
        """
        now = time.monotonic()
        if self._anchor_wall is None:
            self._anchor_wall, self._anchor_media = now, media_ticks
            return self._shift
        deadline = self._anchor_wall + (media_ticks - self._anchor_media) / CLOCK_RATE
        late = now - deadline
        if late > self._max_lag:
            self._shift += round(late * CLOCK_RATE)
            self._anchor_wall, self._anchor_media = now, media_ticks
            self.reanchors += 1
            log.debug("replay fell %.2f s behind; re-anchored instead of bursting", late)
        elif late < 0:
            await asyncio.sleep(-late)
        return self._shift
