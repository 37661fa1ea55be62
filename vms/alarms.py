"""Camera alarms: ingest state changes turned into alarms that operators acknowledge.

:class:`AlarmCentre` hears every camera state change of the media plane
(``StreamManager.add_listener(centre.on_state)``) and applies these rules, per camera:

* ``starting``/``online``/``idle`` → ``offline`` or ``stalled``: an alarm of that
  kind (an ``idle`` on-demand camera fails only when someone wanted it);
* ``stalled`` → ``offline``: one more ``offline`` alarm (the reconnect after the
  stall failed too);
* ``offline`` ⇄ ``starting`` while the camera stays down (each failed reconnect)
  raises nothing more;
* back to ``online`` after an alarm: an informational ``online`` event that names
  the alarms it resolves and needs no acknowledgement;
* ``starting`` → ``online`` with no alarm before it (start-up) raises nothing, and
  ``disabled`` closes the camera's trouble silently, as does ``unowned`` (this
  instance no longer pulls the camera, so it cannot see it recover). A camera whose first packet is
  merely late stays ``starting`` (the ingest gives opening its own budget), so a
  busy start-up raises no alarm. ``idle`` (an on-demand camera nobody needs now)
  raises nothing and closes nothing.

A camera's recording that stops (the disk is full or read-only) raises one
``recording_failed`` alarm, and its return an informational ``recording_resumed``
event that resolves it (:meth:`AlarmCentre.recording_failed`, ``..._resumed``;
:mod:`vms.recordings` relays the recorders' events). Segments deleted before their
retention because the disk limit was reached raise ``recording_space``.

The picture diagnosis (:mod:`vms.diagnosis`) raises one alarm per picture condition
(``dark``, ``covered``, ``moved``...: :data:`~vms.alarm_texts.PICTURE_KINDS`) with the
JPEG of the picture that raised it, kept in memory within :data:`PICTURE_BUDGET`
bytes, and its clearing an informational ``picture_ok`` event that resolves it.

Every alarm carries its text in Chinese and English (:mod:`vms.alarm_texts`);
``message`` is the English one, for logs and older clients.

Alarms are live state: the last :data:`KEEP_ALARMS` are kept in memory. In one process
(SQLite) the centre applies its rules itself and a restart forgets the alarms; the
audit trail (the database) is the durable record of who acknowledged which alarm.
Alarm ids and event numbers then start at the process start time in milliseconds,
so they keep growing across restarts and an id from before a restart never names a
different alarm afterwards.

With PostgreSQL several instances share one alarm list (:mod:`vms.alarms_shared`):
the rules' changes (:class:`~vms.alarm_model.Opening`, :class:`~vms.alarm_model.Closing`)
and acknowledgements are applied in the database, which numbers alarms and events,
and every instance's centre hears every event there and applies it to its own list
and event log, the same way the single process applies its own.

Every new alarm and every acknowledgement is also an event in the alarms' event log
(:mod:`vms.alarm_events`): numbered, kept for replay, offered to live subscribers.

Event loop only (the media plane calls :meth:`AlarmCentre.on_state` there). No
task of its own (the shared store has its own): ``stop()`` ends the subscriptions.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

from streams import IngestState
from vms.access import Principal
from vms.alarm_events import AlarmEvent, EventLog, Subscription
from vms.alarm_model import (
    INFORMATIONAL,
    Alarm,
    AlarmKind,
    Closing,
    NotAcknowledgeable,
    Opening,
    UnknownAlarm,
    opens_trouble,
)
from vms.alarm_texts import PICTURE_KINDS, describe, short, short_texts
from vms.audit import AuditLog
from vms.config import Config

if TYPE_CHECKING:
    from vms.alarms_shared import SharedAlarms

__all__ = [
    "INFORMATIONAL",
    "Alarm",
    "AlarmCentre",
    "AlarmKind",
    "NotAcknowledgeable",
    "UnknownAlarm",
]

log = logging.getLogger(__name__)

KEEP_ALARMS = 1000
"""Alarms kept in memory; the oldest goes when one more arrives."""
BACKLOG = 100
"""Events a subscriber may fall behind before its stream is ended."""
HEARTBEAT = 15.0
"""Seconds between keep-alive comments on an idle event stream."""
PICTURE_BUDGET = 16 * 1024 * 1024
"""Bytes of alarm pictures kept (in memory, or in the shared table); beyond, the oldest
alarms lose theirs."""


def _clock_start() -> int:
    return max(1, time.time_ns() // 1_000_000)


class AlarmCentre:
    """See the module docstring. ``shared``: the alarms kept in PostgreSQL for several
    instances; ``start()`` then loads them and follows the database."""

    def __init__(
        self,
        config: Config,
        *,
        keep: int = KEEP_ALARMS,
        backlog: int = BACKLOG,
        heartbeat: float = HEARTBEAT,
        picture_budget: int = PICTURE_BUDGET,
        shared: SharedAlarms | None = None,
    ) -> None:
        if keep < 1 or backlog < 1:
            raise ValueError("keep and backlog must be at least 1")
        self.config = config
        self.heartbeat = heartbeat
        """Seconds between keep-alive comments on an idle stream (read by the route)."""
        self.shared = shared
        self._keep = keep
        self._backlog = backlog
        self._alarms: deque[Alarm] = deque()
        self._by_id: dict[int, Alarm] = {}
        self._open: dict[tuple[str, str], Alarm] = {}
        """Alarms of a trouble not resolved yet, by camera and kind."""
        self._pictures: dict[int, bytes] = {}
        """JPEGs of alarms, oldest first, within :data:`PICTURE_BUDGET` bytes (one process)."""
        self._picture_bytes = 0
        self._picture_budget = picture_budget
        self.raised_counts: dict[str, int] = {}
        """Alarms raised by this instance since the start, by kind (for metrics)."""
        self._next_id = _clock_start()
        # Each alarm makes at most two events (raised, acknowledged).
        self._log = EventLog(2 * keep, backlog, first_seq=self._next_id)

    async def start(self) -> None:
        """Load the shared alarms and their recent events, then follow the database (no-op in
        one process). Before anyone subscribes."""
        if self.shared is None:
            return
        alarms, events, position = await self.shared.load(self._keep, 2 * self._keep)
        for alarm in alarms:
            self._add(alarm)
        first = events[0].seq if events else position + 1
        self._log = EventLog(2 * self._keep, self._backlog, first_seq=first)
        for event in events:
            self._log.append(event)
        self.shared.start(self._apply, after=position)

    # -- the media plane's listener ---------------------------------------------------

    def on_state(self, camera_id: str, old: IngestState, new: IngestState, error: str | None) -> None:
        """``StreamManager`` listener: apply the rules of the module docstring."""
        hall_id = self._hall_of(camera_id)
        if hall_id is None:
            return
        if new is IngestState.OFFLINE:
            self._submit(Opening(camera_id, hall_id, "offline", short_texts("offline", error), ("offline",)))
        elif new is IngestState.STALLED:
            texts = short_texts("stalled", error)
            self._submit(Opening(camera_id, hall_id, "stalled", texts, ("offline", "stalled")))
        elif new is IngestState.ONLINE:
            self._submit(Closing(camera_id, hall_id, ("stalled", "offline"), "online"))
        elif new in (IngestState.DISABLED, IngestState.UNOWNED):
            self._submit(Closing(camera_id, hall_id, ("stalled", "offline"), None))

    def recording_failed(self, camera_id: str, reason: str) -> None:
        """A camera's recording stopped (disk full, read-only...): one alarm until it resumes.
        ``reason`` is the media plane's own fixed text."""
        if (hall_id := self._hall_of(camera_id)) is not None:
            texts = short_texts("recording_failed", reason)
            self._submit(Opening(camera_id, hall_id, "recording_failed", texts, ("recording_failed",)))

    def recording_resumed(self, camera_id: str) -> None:
        """The camera records again: an informational event resolving the failure."""
        if (hall_id := self._hall_of(camera_id)) is not None:
            self._submit(Closing(camera_id, hall_id, ("recording_failed",), "recording_resumed"))

    def recording_space(self, camera_id: str, deleted: int) -> None:
        """Recordings of the camera were deleted before their retention to make room."""
        if (hall_id := self._hall_of(camera_id)) is not None:
            texts = describe("recording_space", deleted=deleted)
            self._submit(Opening(camera_id, hall_id, "recording_space", texts, ()))

    def picture_raised(self, camera_id: str, kind: str, jpeg: bytes | None) -> Alarm | None:
        """The picture diagnosis raised ``kind`` (one of :data:`~vms.alarm_texts.PICTURE_KINDS`)
        for the camera: an alarm with ``jpeg``, the picture that raised it; one until it clears.
        Returns the new alarm in one process (``None`` when shared: the database numbers it)."""
        hall_id = self._hall_of(camera_id)
        if hall_id is None or kind not in PICTURE_KINDS:
            return None
        alarm_kind = cast("AlarmKind", kind)
        return self._submit(Opening(camera_id, hall_id, alarm_kind, describe(kind), (kind,), jpeg))

    def picture_cleared(self, camera_id: str, kind: str) -> None:
        """The condition is gone: an informational ``picture_ok`` event resolving its alarm."""
        if (hall_id := self._hall_of(camera_id)) is not None:
            self._submit(Closing(camera_id, hall_id, (kind,), "picture_ok", kind))

    def picture_trouble(self, camera_id: str) -> list[str]:
        """The picture alarm kinds raised and not cleared for the camera."""
        return sorted(kind for cam, kind in self._open if cam == camera_id and kind in PICTURE_KINDS)

    def picture(self, alarm_id: int, hall_ids: Collection[str]) -> bytes:
        """The JPEG kept with the alarm (one process); :class:`UnknownAlarm` if there is none."""
        self.get(alarm_id, hall_ids)
        jpeg = self._pictures.get(alarm_id)
        if jpeg is None:
            raise UnknownAlarm(alarm_id)
        return jpeg

    async def fetch_picture(self, alarm_id: int, hall_ids: Collection[str]) -> tuple[Alarm, bytes]:
        """The alarm and its JPEG, from memory or the shared table; :class:`UnknownAlarm` if none."""
        alarm = self.get(alarm_id, hall_ids)
        if self.shared is None:
            return alarm, self.picture(alarm_id, hall_ids)
        jpeg = await self.shared.picture(alarm_id)
        if jpeg is None:
            raise UnknownAlarm(alarm_id)
        return alarm, jpeg

    def _hall_of(self, camera_id: str) -> str | None:
        try:
            return self.config.camera(camera_id).hall
        except KeyError:
            log.warning("an event of camera %s, which the configuration does not list", camera_id)
            return None

    # -- applying the rules' changes -------------------------------------------------

    def _submit(self, change: Opening | Closing) -> Alarm | None:
        """Apply a change here (one process) or hand it to the shared store."""
        if self.shared is not None:
            self.shared.submit(change)
            return None
        if isinstance(change, Opening):
            return self._open_here(change)
        self._close_here(change)
        return None

    def _open_here(self, change: Opening) -> Alarm | None:
        if any((change.camera_id, kind) in self._open for kind in change.blocked_by):
            return None
        return self._raise(
            change.camera_id, change.hall_id, change.kind, change.texts, picture=change.picture
        )

    def _close_here(self, change: Closing) -> None:
        found = [
            self._open.pop(key) for kind in change.kinds if (key := (change.camera_id, kind)) in self._open
        ]
        if not found or change.then is None:
            return
        found.sort(key=lambda alarm: alarm.id)
        seconds = (datetime.now(UTC) - found[0].at).total_seconds()
        texts = describe(change.then, seconds=seconds, cleared=change.cleared)
        resolves = tuple(alarm.id for alarm in found)
        self._raise(change.camera_id, change.hall_id, change.then, texts, resolves=resolves)

    def _raise(
        self,
        camera_id: str,
        hall_id: str,
        kind: AlarmKind,
        texts: dict[str, str],
        resolves: tuple[int, ...] = (),
        picture: bytes | None = None,
    ) -> Alarm:
        message = short(texts["en"])
        alarm = Alarm(
            self._next_id,
            camera_id,
            hall_id,
            kind,
            datetime.now(UTC),
            message,
            resolves,
            texts,
            bool(picture),
        )
        self._next_id += 1
        self._add(alarm)
        if picture:
            self._keep_picture(alarm, picture)
        self._log.publish("alarm", alarm.hall_id, alarm.as_json())
        self._raised(alarm)
        return alarm

    def _raised(self, alarm: Alarm) -> None:
        self.raised_counts[alarm.kind] = self.raised_counts.get(alarm.kind, 0) + 1
        level = logging.INFO if alarm.informational else logging.WARNING
        log.log(level, "alarm %d: %s %s", alarm.id, alarm.camera_id, alarm.message)

    def _apply(self, event: AlarmEvent) -> None:
        """An event of the shared alarms, in order: into the list and the event log."""
        alarm = Alarm.from_json(event.data)
        if event.type == "alarm":
            self._add(alarm)
            if event.local:
                self._raised(alarm)
        elif (known := self._by_id.get(alarm.id)) is not None:
            known.acknowledged_by, known.acknowledged_at = alarm.acknowledged_by, alarm.acknowledged_at
        self._log.append(event)

    def _add(self, alarm: Alarm) -> None:
        if len(self._alarms) >= self._keep:
            self._forget(self._alarms.popleft())
        self._alarms.append(alarm)
        self._by_id[alarm.id] = alarm
        if opens_trouble(alarm.kind):
            self._open[alarm.camera_id, alarm.kind] = alarm
        for key in [key for key, open_ in self._open.items() if open_.id in alarm.resolves]:
            del self._open[key]

    def _forget(self, alarm: Alarm) -> None:
        del self._by_id[alarm.id]
        jpeg = self._pictures.pop(alarm.id, None)
        if jpeg is not None:
            self._picture_bytes -= len(jpeg)

    def _keep_picture(self, alarm: Alarm, jpeg: bytes) -> None:
        self._pictures[alarm.id] = jpeg
        self._picture_bytes += len(jpeg)
        while self._picture_bytes > self._picture_budget and len(self._pictures) > 1:
            oldest = next(iter(self._pictures))
            self._picture_bytes -= len(self._pictures.pop(oldest))
            if (dropped := self._by_id.get(oldest)) is not None:
                dropped.picture = False

    # -- reading and acknowledging ---------------------------------------------------

    def alarms(
        self, hall_ids: Collection[str], *, unacknowledged: bool = False, limit: int | None = None
    ) -> list[Alarm]:
        """Alarms in these halls, newest first (only those waiting for an operator if asked)."""
        found: list[Alarm] = []
        for alarm in reversed(self._alarms):
            if limit is not None and len(found) >= limit:
                break
            if alarm.hall_id in hall_ids and (alarm.unacknowledged or not unacknowledged):
                found.append(alarm)
        return found

    def unacknowledged_count(self, hall_ids: Collection[str]) -> int:
        return sum(1 for alarm in self._alarms if alarm.hall_id in hall_ids and alarm.unacknowledged)

    def get(self, alarm_id: int, hall_ids: Collection[str]) -> Alarm:
        """The alarm, if still in memory and in one of these halls; :class:`UnknownAlarm` otherwise."""
        alarm = self._by_id.get(alarm_id)
        if alarm is None or alarm.hall_id not in hall_ids:
            raise UnknownAlarm(alarm_id)
        return alarm

    def acknowledge(self, alarm_id: int, username: str, hall_ids: Collection[str]) -> tuple[Alarm, bool]:
        """Acknowledge once in this process; returns the alarm and whether this call acknowledged it.

        A second call changes nothing and returns ``False`` (the first acknowledger
        stays). Raises :class:`UnknownAlarm` or :class:`NotAcknowledgeable`.
        """
        alarm = self.get(alarm_id, hall_ids)
        if alarm.informational:
            raise NotAcknowledgeable(alarm_id)
        if alarm.acknowledged_by is not None:
            return alarm, False
        alarm.acknowledged_by = username
        alarm.acknowledged_at = datetime.now(UTC)
        self._log.publish("ack", alarm.hall_id, alarm.as_json())
        return alarm, True

    async def acknowledge_recorded(
        self,
        alarm_id: int,
        principal: Principal,
        hall_ids: Collection[str],
        audit: AuditLog,
        source: str | None,
    ) -> Alarm:
        """Acknowledge once, with one ``alarm_ack`` audit record written before it takes effect
        (:class:`~vms.audit.AuditError` if it cannot be, and nothing changes). Again later
        answers the alarm with its first acknowledgement; on every instance when shared."""
        if self.shared is not None:
            return await self.shared.acknowledge(alarm_id, principal, hall_ids, audit, source)
        alarm = self.get(alarm_id, hall_ids)
        if alarm.informational:
            raise NotAcknowledgeable(alarm_id)
        if alarm.acknowledged_by is None:
            detail = {"alarm": alarm.id, "kind": alarm.kind}
            await audit.record(
                "alarm_ack", principal=principal, camera_id=alarm.camera_id, source_addr=source, detail=detail
            )
            alarm, _ = self.acknowledge(alarm_id, principal.username, hall_ids)
        return alarm

    # -- subscriptions ---------------------------------------------------------------

    async def catch_up(self, last_event_id: str | None) -> None:
        """Read the shared events up to ``last_event_id`` first when it is newer than this
        instance's (a stream resumed here that another instance served)."""
        if self.shared is None or last_event_id is None or not last_event_id.strip().isdigit():
            return
        if int(last_event_id) > self._log.position:
            await self.shared.read_now()

    def subscribe(self, hall_ids: Collection[str], last_event_id: str | None = None) -> Subscription:
        """A subscription to the events of these halls, with the ones after ``last_event_id`` to replay.

        After :meth:`stop` the subscription is already ended.
        """
        return self._log.subscribe(hall_ids, last_event_id)

    @property
    def subscriber_count(self) -> int:
        return self._log.subscriber_count

    async def stop(self) -> None:
        """Stop following the database and end every subscription (events already queued are
        still delivered). Idempotent."""
        if self.shared is not None:
            await self.shared.stop()
        await self._log.stop()
