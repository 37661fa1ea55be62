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

Alarms are live state: the last :data:`KEEP_ALARMS` are kept in memory, and a
restart forgets them. The audit trail (the database) is the durable record of
who acknowledged which alarm.

Every new alarm and every acknowledgement is also an event in the alarms' event log
(:mod:`vms.alarm_events`): numbered, kept for replay, offered to live subscribers.

Alarm ids and event numbers start at the process start time in milliseconds, so
they keep growing across restarts and an id from before a restart never names
a different alarm afterwards.

Event loop only (the media plane calls :meth:`AlarmCentre.on_state` there). No
task of its own: ``stop()`` only ends the subscriptions.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast

from streams import IngestState
from vms.alarm_events import EventLog, EventType, Subscription
from vms.alarm_texts import PICTURE_KINDS, describe, short, short_texts
from vms.config import Config

log = logging.getLogger(__name__)

KEEP_ALARMS = 1000
"""Alarms kept in memory; the oldest goes when one more arrives."""
BACKLOG = 100
"""Events a subscriber may fall behind before its stream is ended."""
HEARTBEAT = 15.0
"""Seconds between keep-alive comments on an idle event stream."""

AlarmKind = Literal[
    "offline",
    "stalled",
    "online",
    "recording_failed",
    "recording_resumed",
    "recording_space",
    "dark",
    "overexposed",
    "covered",
    "blurred",
    "frozen",
    "moved",
    "colour_cast",
    "noisy",
    "picture_ok",
]
INFORMATIONAL: frozenset[str] = frozenset(("online", "recording_resumed", "picture_ok"))
"""Kinds that report the end of a trouble and need no acknowledgement."""
PICTURE_BUDGET = 16 * 1024 * 1024
"""Bytes of alarm pictures kept in memory; beyond, the oldest alarms lose theirs."""


class UnknownAlarm(LookupError):
    """No such alarm in memory, or it lies in a hall the caller may not see."""


class NotAcknowledgeable(ValueError):
    """The alarm is informational (a camera back online): there is nothing to acknowledge."""


def _clock_start() -> int:
    return max(1, time.time_ns() // 1_000_000)


@dataclass(slots=True)
class Alarm:
    """One alarm; only the acknowledgement fields ever change, once."""

    id: int
    camera_id: str
    hall_id: str
    kind: AlarmKind
    at: datetime
    message: str
    resolves: tuple[int, ...] = ()
    """For an informational event: the alarms of the trouble that just ended."""
    texts: dict[str, str] = field(default_factory=dict)
    """The message by language (``zh-CN``, ``en``): see :mod:`vms.alarm_texts`."""
    picture: bool = False
    """Whether a JPEG of the picture that raised it is kept (:meth:`AlarmCentre.picture`)."""
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None

    @property
    def informational(self) -> bool:
        """Whether the alarm needs no acknowledgement (the end of a trouble: :data:`INFORMATIONAL`)."""
        return self.kind in INFORMATIONAL

    @property
    def unacknowledged(self) -> bool:
        """Whether it still waits for an operator."""
        return not self.informational and self.acknowledged_by is None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "camera_id": self.camera_id,
            "hall_id": self.hall_id,
            "kind": self.kind,
            "at": self.at.isoformat(),
            "message": self.message,
            "texts": self.texts,
            "picture": f"/api/v1/alarms/{self.id}/picture" if self.picture else None,
            "informational": self.informational,
            "resolves": list(self.resolves),
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": self.acknowledged_at.isoformat() if self.acknowledged_at else None,
        }


@dataclass(slots=True)
class _Trouble:
    since: float
    kind: AlarmKind
    alarm_ids: list[int] = field(default_factory=list)


class AlarmCentre:
    """See the module docstring."""

    def __init__(
        self,
        config: Config,
        *,
        keep: int = KEEP_ALARMS,
        backlog: int = BACKLOG,
        heartbeat: float = HEARTBEAT,
        picture_budget: int = PICTURE_BUDGET,
    ) -> None:
        if keep < 1 or backlog < 1:
            raise ValueError("keep and backlog must be at least 1")
        self.config = config
        self.heartbeat = heartbeat
        """Seconds between keep-alive comments on an idle stream (read by the route)."""
        self._keep = keep
        self._alarms: deque[Alarm] = deque()
        self._by_id: dict[int, Alarm] = {}
        self._trouble: dict[str, _Trouble] = {}
        self._recording_trouble: dict[str, tuple[float, int]] = {}
        """Cameras whose recording failed: since when (monotonic) and the alarm raised."""
        self._picture_trouble: dict[tuple[str, str], tuple[float, int]] = {}
        """Picture conditions raised, by camera and kind: since when and the alarm raised."""
        self._pictures: dict[int, bytes] = {}
        """JPEGs of alarms, oldest first, within :data:`PICTURE_BUDGET` bytes."""
        self._picture_bytes = 0
        self._picture_budget = picture_budget
        self.raised_counts: dict[str, int] = {}
        """Alarms raised since the start, by kind (for metrics)."""
        self._next_id = _clock_start()
        # Each alarm makes at most two events (raised, acknowledged).
        self._log = EventLog(2 * keep, backlog, first_seq=self._next_id)

    # -- the media plane's listener ---------------------------------------------------

    def on_state(self, camera_id: str, old: IngestState, new: IngestState, error: str | None) -> None:
        """``StreamManager`` listener: apply the rules of the module docstring."""
        hall_id = self._hall_of(camera_id)
        if hall_id is None:
            return
        trouble = self._trouble.get(camera_id)
        if new in (IngestState.OFFLINE, IngestState.STALLED):
            kind: AlarmKind = "offline" if new is IngestState.OFFLINE else "stalled"
            if trouble is None:
                trouble = self._trouble[camera_id] = _Trouble(time.monotonic(), kind)
            elif not (kind == "offline" and trouble.kind == "stalled"):
                return  # still down: one alarm per trouble (plus one escalation)
            trouble.kind = kind
            alarm = self._raise(camera_id, hall_id, kind, short_texts(kind, error))
            trouble.alarm_ids.append(alarm.id)
        elif new is IngestState.ONLINE and trouble is not None:
            del self._trouble[camera_id]
            texts = describe("online", seconds=time.monotonic() - trouble.since)
            self._raise(camera_id, hall_id, "online", texts, resolves=tuple(trouble.alarm_ids))
        elif new in (IngestState.DISABLED, IngestState.UNOWNED):
            self._trouble.pop(camera_id, None)

    def recording_failed(self, camera_id: str, reason: str) -> None:
        """A camera's recording stopped (disk full, read-only...): one alarm until it resumes.
        ``reason`` is the media plane's own fixed text."""
        hall_id = self._hall_of(camera_id)
        if hall_id is None or camera_id in self._recording_trouble:
            return
        alarm = self._raise(camera_id, hall_id, "recording_failed", short_texts("recording_failed", reason))
        self._recording_trouble[camera_id] = (time.monotonic(), alarm.id)

    def recording_resumed(self, camera_id: str) -> None:
        """The camera records again: an informational event resolving the failure."""
        hall_id = self._hall_of(camera_id)
        trouble = self._recording_trouble.pop(camera_id, None)
        if hall_id is None or trouble is None:
            return
        since, alarm_id = trouble
        texts = describe("recording_resumed", seconds=time.monotonic() - since)
        self._raise(camera_id, hall_id, "recording_resumed", texts, resolves=(alarm_id,))

    def recording_space(self, camera_id: str, deleted: int) -> None:
        """Recordings of the camera were deleted before their retention to make room."""
        hall_id = self._hall_of(camera_id)
        if hall_id is not None:
            self._raise(camera_id, hall_id, "recording_space", describe("recording_space", deleted=deleted))

    def picture_raised(self, camera_id: str, kind: str, jpeg: bytes | None) -> Alarm | None:
        """The picture diagnosis raised ``kind`` (one of :data:`~vms.alarm_texts.PICTURE_KINDS`)
        for the camera: an alarm with ``jpeg``, the picture that raised it; one until it clears."""
        hall_id = self._hall_of(camera_id)
        if hall_id is None or kind not in PICTURE_KINDS or (camera_id, kind) in self._picture_trouble:
            return None
        alarm = self._raise(camera_id, hall_id, cast("AlarmKind", kind), describe(kind), picture=jpeg)
        self._picture_trouble[camera_id, kind] = (time.monotonic(), alarm.id)
        return alarm

    def picture_cleared(self, camera_id: str, kind: str) -> None:
        """The condition is gone: an informational ``picture_ok`` event resolving its alarm."""
        hall_id = self._hall_of(camera_id)
        trouble = self._picture_trouble.pop((camera_id, kind), None)
        if hall_id is None or trouble is None:
            return
        since, alarm_id = trouble
        texts = describe("picture_ok", seconds=time.monotonic() - since, cleared=kind)
        self._raise(camera_id, hall_id, "picture_ok", texts, resolves=(alarm_id,))

    def picture_trouble(self, camera_id: str) -> list[str]:
        """The picture alarm kinds raised and not cleared for the camera."""
        return sorted(kind for cam, kind in self._picture_trouble if cam == camera_id)

    def picture(self, alarm_id: int, hall_ids: Collection[str]) -> bytes:
        """The JPEG kept with the alarm; :class:`UnknownAlarm` if there is none (any more)."""
        self.get(alarm_id, hall_ids)
        jpeg = self._pictures.get(alarm_id)
        if jpeg is None:
            raise UnknownAlarm(alarm_id)
        return jpeg

    def _hall_of(self, camera_id: str) -> str | None:
        try:
            return self.config.camera(camera_id).hall
        except KeyError:
            log.warning("an event of camera %s, which the configuration does not list", camera_id)
            return None

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
        self.raised_counts[kind] = self.raised_counts.get(kind, 0) + 1
        if len(self._alarms) >= self._keep:
            self._forget(self._alarms.popleft())
        self._alarms.append(alarm)
        self._by_id[alarm.id] = alarm
        if picture:
            self._keep_picture(alarm, picture)
        log.log(
            logging.INFO if alarm.informational else logging.WARNING,
            "alarm %d: %s %s",
            alarm.id,
            camera_id,
            message,
        )
        self._publish("alarm", alarm)
        return alarm

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

    def _publish(self, type_: EventType, alarm: Alarm) -> None:
        self._log.publish(type_, alarm.hall_id, alarm.as_json())

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
        """Acknowledge once; returns the alarm and whether this call acknowledged it.

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
        self._publish("ack", alarm)
        return alarm, True

    # -- subscriptions ---------------------------------------------------------------

    def subscribe(self, hall_ids: Collection[str], last_event_id: str | None = None) -> Subscription:
        """A subscription to the events of these halls, with the ones after ``last_event_id`` to replay.

        After :meth:`stop` the subscription is already ended.
        """
        return self._log.subscribe(hall_ids, last_event_id)

    @property
    def subscriber_count(self) -> int:
        return self._log.subscriber_count

    async def stop(self) -> None:
        """End every subscription (events already queued are still delivered). Idempotent."""
        await self._log.stop()
