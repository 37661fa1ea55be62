"""The alarms' event log: numbered events, kept for replay, offered to live subscribers.

Every new alarm and every acknowledgement is an :class:`AlarmEvent` with a sequence
number (the SSE ``id``), kept in a bounded log for replay after a reconnect and
offered to each :class:`Subscription` whose halls include the alarm's hall. A
subscriber queue is bounded: one that falls ``backlog`` events behind is ended (its
browser reconnects and replays from the log). :class:`~vms.alarms.AlarmCentre` owns one.

The numbers come from the log itself in one process, or from the database when several
instances share the alarms (:mod:`vms.alarms_shared`): then every instance's log holds
the same events under the same numbers, so a stream resumes on any instance.

Event loop only.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)

EventType = Literal["alarm", "ack"]


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """A new alarm (``alarm``) or an acknowledgement (``ack``), as it was at that moment."""

    seq: int
    type: EventType
    hall_id: str
    data: dict[str, Any]
    local: bool = True
    """Whether this instance wrote it (only then do its webhooks post it)."""


class Subscription:
    """One live listener (an SSE stream): replay first, then live events; ``None`` ends it.

    ``replay`` holds the missed events still in the log. ``resync`` is true when the
    caller's last event is unknown (too old, or from before a restart): nothing is
    replayed, the caller should reload the alarm list, and ``position`` (the number
    of the newest event so far) is where its stream now continues from.
    """

    def __init__(self, events: EventLog, hall_ids: Collection[str], backlog: int) -> None:
        self.hall_ids = frozenset(hall_ids)
        self.replay: list[AlarmEvent] = []
        self.resync = False
        self.position = 0
        self.overflowed = False
        self._events = events
        self._backlog = backlog
        # One slot more than the backlog, kept for the end-of-stream marker.
        self._queue: asyncio.Queue[AlarmEvent | None] = asyncio.Queue(maxsize=backlog + 1)
        self._ended = False

    @property
    def ended(self) -> bool:
        return self._ended

    async def get(self) -> AlarmEvent | None:
        """The next event; ``None`` once the stream is over (centre stopped, or fell behind)."""
        if self._ended and self._queue.empty():
            return None
        return await self._queue.get()

    def close(self) -> None:
        """Stop receiving. Idempotent."""
        self._events._unsubscribe(self)
        self._end(discard=True)

    def _offer(self, event: AlarmEvent) -> None:
        if self._ended or event.hall_id not in self.hall_ids:
            return
        if self._queue.qsize() >= self._backlog:
            self.overflowed = True
            log.info("an alarm subscriber fell %d events behind: ending its stream", self._backlog)
            self._events._unsubscribe(self)
            self._end(discard=True)
            return
        self._queue.put_nowait(event)

    def _end(self, *, discard: bool) -> None:
        if self._ended:
            return
        self._ended = True
        if discard:
            while not self._queue.empty():
                self._queue.get_nowait()
        self._queue.put_nowait(None)


class EventLog:
    """Numbered events from ``first_seq`` on, the last ``keep`` kept; see the module docstring."""

    def __init__(self, keep: int, backlog: int, first_seq: int) -> None:
        self._events: deque[AlarmEvent] = deque(maxlen=keep)
        self._backlog = backlog
        self._next_seq = first_seq
        self._subscribers: set[Subscription] = set()
        self._stopped = False

    def publish(self, type_: EventType, hall_id: str, data: dict[str, Any]) -> AlarmEvent:
        """Number the event with the log's next number and offer it."""
        return self.append(AlarmEvent(self._next_seq, type_, hall_id, data))

    def append(self, event: AlarmEvent) -> AlarmEvent:
        """Keep and offer an event numbered elsewhere (the database), after every event so far;
        numbers may leave gaps."""
        if event.seq < self._next_seq:
            raise ValueError(f"event {event.seq} is not after event {self._next_seq - 1}")
        self._next_seq = event.seq + 1
        self._events.append(event)
        for subscriber in list(self._subscribers):
            subscriber._offer(event)
        return event

    @property
    def position(self) -> int:
        """The number of the newest event so far."""
        return self._next_seq - 1

    def subscribe(self, hall_ids: Collection[str], last_event_id: str | None = None) -> Subscription:
        """A subscription to the events of these halls, with the ones after ``last_event_id`` to
        replay; already ended after :meth:`stop`."""
        sub = Subscription(self, hall_ids, self._backlog)
        sub.position = self._next_seq - 1
        if last_event_id is not None:
            sub.replay, sub.resync = self._missed(last_event_id, sub.hall_ids)
        if self._stopped:
            sub._end(discard=True)
        else:
            self._subscribers.add(sub)
        return sub

    def _missed(self, last_event_id: str, hall_ids: frozenset[str]) -> tuple[list[AlarmEvent], bool]:
        """The events after ``last_event_id`` in these halls, and whether that id is unknown."""
        try:
            last = int(last_event_id.strip())
        except ValueError:
            return [], True
        oldest = self._events[0].seq if self._events else self._next_seq
        if not oldest - 1 <= last < self._next_seq:
            return [], True
        return [e for e in self._events if e.seq > last and e.hall_id in hall_ids], False

    def _unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    async def stop(self) -> None:
        """End every subscription (events already queued are still delivered). Idempotent."""
        self._stopped = True
        subscribers, self._subscribers = self._subscribers, set()
        for sub in subscribers:
            sub._end(discard=False)
