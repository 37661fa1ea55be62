"""How many cameras an instance takes, and to whom it hands some: the balancing rules.

Each instance decides for itself, under the cluster's advisory lock, from fresh counts:

* it takes free (or expired) leases up to the target, ``ceil(cameras / instances)``
  over the live, ready instances: a dead instance's cameras are taken over at once;
* it hands a camera directly to the least loaded instance while it holds at least two
  more than that one (the imbalance exceeds one) and more than the even share rounded
  down, at most ``max_moves`` per round; never while a lease is free, for the less
  loaded take free ones themselves at their next round (instances starting together
  would otherwise hand over what the others were about to take).

A handover goes straight to its receiver rather than back to the pool, so neither the
giver nor a third instance can snatch it back. No giver falls below the share it
would have to be given back, and no handover happens once every count is within one of
the others: no flapping. Pure
functions; any thread.
"""

from __future__ import annotations

import math


def target(cameras: int, instances: int) -> int:
    """Leases each instance may hold: the cameras spread as evenly as whole numbers allow."""
    return math.ceil(cameras / instances) if instances > 0 else cameras


def to_take(mine: int, cameras: int, instances: int, free: int) -> int:
    """How many free leases to take now."""
    return max(0, min(free, target(cameras, instances) - mine))


def handovers(me: str, counts: dict[str, int], max_moves: int) -> list[str]:
    """The receivers of this instance's next handovers (one entry per camera), least
    loaded first; ``counts`` holds the leases of every live, ready instance, ``me`` included.
    The giver never drops below the even share rounded down, so it never needs a camera back."""
    counts = dict(counts)
    floor = sum(counts.values()) // len(counts)
    receivers: list[str] = []
    others = [name for name in counts if name != me]
    while others and len(receivers) < max_moves and counts[me] > floor:
        least = min(others, key=lambda name: (counts[name], name))
        if counts[me] - counts[least] < 2:
            break
        counts[me] -= 1
        counts[least] += 1
        receivers.append(least)
    return receivers
