"""Alarms shared by several instances through PostgreSQL: one list, one event sequence.

:class:`SharedAlarms` is the store of :class:`~vms.alarms.AlarmCentre` when the service runs
on PostgreSQL. The ``alarms`` table holds every alarm (its id from the table's sequence,
its picture as ``bytea`` within :data:`~vms.alarms.PICTURE_BUDGET` over the whole table)
and ``alarm_events`` numbers every new alarm and acknowledgement: that number is the SSE
``id`` on every instance, so a stream resumes on any of them (the newest
:data:`KEEP_EVENTS` are kept; an older ``Last-Event-ID`` gets a resync, as in one process).

Writes: the centre's rules hand over :class:`~vms.alarm_model.Opening` and
:class:`~vms.alarm_model.Closing` changes, which one writer task applies in order, each in
its own transaction. Every transaction that writes an event first takes one advisory
lock, so events commit in the order of their numbers (a reader that has seen number
*n* has seen everything before it) and the check "an alarm of this camera and kind is
still open" cannot race: two instances that see the same fault make one alarm. An
acknowledgement is a conditional ``UPDATE ... WHERE acked_at IS NULL`` committed with its
audit record and its event: exactly once, whichever instance receives it.

Reads: one connection of its own (asyncpg, not the pool) ``LISTEN``s on
:data:`CHANNEL`; each notification carries the event's number only (a payload is at most
8000 bytes), and the reader then reads every row after the last one it applied, in
order, and hands them to the centre. It also reads every ``poll`` seconds, and after a
lost connection it reconnects (backing off) and reads from its last number: no event
missed, none applied twice.

Event loop only. Owns two tasks (the writer and the reader), started by ``start()``,
cancelled by ``stop()``; changes still queued then are not written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from vms.access import Principal
from vms.alarm_events import AlarmEvent, EventType
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
from vms.alarm_texts import describe, short
from vms.audit import AuditError, AuditLog, as_utc
from vms.storage.database import CONNECT_TIMEOUT, Database, advisory_lock
from vms.storage.faults import describe as describe_fault
from vms.storage.tables import AlarmEventRow, AlarmRow

log = logging.getLogger(__name__)

CHANNEL = "hallwatch_alarms"
KEEP_EVENTS = 5000
"""Events kept in the table for replay."""
KEEP_ROWS = 20000
"""Alarms kept in the table beyond those still open."""
QUEUE_SIZE = 1000
"""Changes waiting for the writer; beyond, the oldest is dropped (and logged)."""
POLL = 5.0
"""Seconds between reads when no notification comes."""
RETRY = 1.0
"""Seconds before the writer tries a change again, or the reader reconnects (doubling to 10 s)."""
READ_PAGE = 500

_WRITE_LOCK = 0x414C524D
"""Advisory lock held by every transaction that writes an alarm event."""
_COLUMNS = (
    AlarmRow.id,
    AlarmRow.camera_id,
    AlarmRow.hall_id,
    AlarmRow.kind,
    AlarmRow.raised_at,
    AlarmRow.texts,
    AlarmRow.resolves,
    AlarmRow.picture.is_not(None).label("has_picture"),
    AlarmRow.acked_by,
    AlarmRow.acked_at,
)
_READ_AFTER = "SELECT seq, type, hall_id, data, origin FROM alarm_events WHERE seq > $1 ORDER BY seq LIMIT $2"
_FAULTS = (SQLAlchemyError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


def _alarm(row: Any) -> Alarm:
    """The alarm of a row of :data:`_COLUMNS`."""
    texts: dict[str, str] = json.loads(row.texts)
    kind: AlarmKind = row.kind
    acked_at = as_utc(row.acked_at) if row.acked_at is not None else None
    resolves = tuple(int(i) for i in json.loads(row.resolves))
    return Alarm(
        row.id,
        row.camera_id,
        row.hall_id,
        kind,
        as_utc(row.raised_at),
        short(texts["en"]),
        resolves,
        texts,
        bool(row.has_picture),
        row.acked_by,
        acked_at,
    )


class SharedAlarms:
    """See the module docstring. ``instance``: this instance's name in the events it writes."""

    def __init__(
        self,
        db: Database,
        *,
        picture_budget: int,
        instance: str | None = None,
        keep_events: int = KEEP_EVENTS,
        poll: float = POLL,
    ) -> None:
        if db.dialect != "postgresql":
            raise ValueError("shared alarms need PostgreSQL")
        self.instance = instance or uuid.uuid4().hex[:16]
        self.dropped = 0
        """Changes dropped from a full queue while the database did not take them."""
        self._db = db
        self._picture_budget = picture_budget
        self._keep_events = keep_events
        self._poll = poll
        self._queue: deque[Opening | Closing] = deque(maxlen=QUEUE_SIZE)
        self._queued = asyncio.Event()
        self._wake = asyncio.Event()
        self._reads = 0
        self._read_done = asyncio.Event()
        self._position = 0
        self._on_event: Callable[[AlarmEvent], None] = lambda event: None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def listener_name(self) -> str:
        """The ``application_name`` of the listening connection (``pg_stat_activity``)."""
        return f"hallwatch-alarms-{self.instance}"

    @property
    def position(self) -> int:
        """The number of the last event handed to the centre."""
        return self._position

    # -- start-up --------------------------------------------------------------------

    async def load(self, keep: int, keep_events: int) -> tuple[list[Alarm], list[AlarmEvent], int]:
        """The newest ``keep`` alarms and ``keep_events`` events, oldest first, and the number of
        the newest event (0 if none)."""
        async with self._db.session() as session:
            alarms = (await session.execute(select(*_COLUMNS).order_by(AlarmRow.id.desc()).limit(keep))).all()
            events = (
                await session.scalars(
                    select(AlarmEventRow).order_by(AlarmEventRow.seq.desc()).limit(keep_events)
                )
            ).all()
        found = [
            self._event(row.seq, row.type, row.hall_id, row.data, local=False) for row in reversed(events)
        ]
        return [_alarm(row) for row in reversed(alarms)], found, found[-1].seq if found else 0

    def start(self, on_event: Callable[[AlarmEvent], None], *, after: int) -> None:
        """Hand every event after number ``after`` to ``on_event``, in order, and start writing."""
        if self._tasks:
            return
        self._on_event, self._position = on_event, after
        self._tasks = [
            asyncio.create_task(self._write_all(), name="alarms-writer"),
            asyncio.create_task(self._follow(), name="alarms-reader"),
        ]

    async def stop(self) -> None:
        """Cancel both tasks (and close the listening connection). Idempotent."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- writing ---------------------------------------------------------------------

    def submit(self, change: Opening | Closing) -> None:
        """Queue a change for the writer; never blocks."""
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            log.warning("%d alarm changes wait for the database: dropping the oldest", len(self._queue))
        self._queue.append(change)
        self._queued.set()

    async def _write_all(self) -> None:
        failing = False
        while True:
            while not self._queue:
                self._queued.clear()
                await self._queued.wait()
            try:
                async with self._db.session() as session, session.begin():
                    await self._locked(session)
                    await self._apply(session, self._queue[0])
            except _FAULTS as err:
                if not failing:
                    log.warning("alarms cannot be written, trying on: %s", describe_fault(err))
                failing = True
                await asyncio.sleep(RETRY)
                continue
            if failing:
                log.info("alarms are written again")
            failing = False
            self._queue.popleft()
            self._wake.set()

    @staticmethod
    async def _locked(session: AsyncSession) -> None:
        await advisory_lock(session, _WRITE_LOCK)

    async def _apply(self, session: AsyncSession, change: Opening | Closing) -> None:
        if isinstance(change, Opening):
            if change.blocked_by and await self._any_open(session, change.camera_id, change.blocked_by):
                return
            await self._raise(
                session, change.camera_id, change.hall_id, change.kind, change.texts, (), change.picture
            )
            return
        now = datetime.now(UTC)
        closed = (
            await session.execute(
                update(AlarmRow)
                .where(
                    AlarmRow.camera_id == change.camera_id,
                    AlarmRow.kind.in_(change.kinds),
                    AlarmRow.cleared_at.is_(None),
                )
                .values(cleared_at=now)
                .returning(AlarmRow.id, AlarmRow.raised_at)
            )
        ).all()
        if not closed or change.then is None:
            return
        seconds = (now - min(as_utc(row.raised_at) for row in closed)).total_seconds()
        texts = describe(change.then, seconds=seconds, cleared=change.cleared)
        resolves = tuple(sorted(row.id for row in closed))
        await self._raise(session, change.camera_id, change.hall_id, change.then, texts, resolves, None)

    @staticmethod
    async def _any_open(session: AsyncSession, camera_id: str, kinds: Sequence[str]) -> bool:
        query = select(AlarmRow.id).where(
            AlarmRow.camera_id == camera_id, AlarmRow.kind.in_(kinds), AlarmRow.cleared_at.is_(None)
        )
        return (await session.scalar(query.limit(1))) is not None

    async def _raise(
        self,
        session: AsyncSession,
        camera_id: str,
        hall_id: str,
        kind: AlarmKind,
        texts: dict[str, str],
        resolves: tuple[int, ...],
        picture: bytes | None,
    ) -> None:
        now = datetime.now(UTC)
        values = {
            "camera_id": camera_id,
            "hall_id": hall_id,
            "kind": kind,
            "raised_at": now,
            "cleared_at": None if opens_trouble(kind) else now,
            "texts": json.dumps(texts, ensure_ascii=False),
            "informational": kind in INFORMATIONAL,
            "resolves": json.dumps(list(resolves)),
            "picture": picture or None,
        }
        alarm_id = (
            await session.execute(insert(AlarmRow).values(**values).returning(AlarmRow.id))
        ).scalar_one()
        if picture:
            await self._keep_within_budget(session, alarm_id)
        await session.execute(
            delete(AlarmRow).where(AlarmRow.id <= alarm_id - KEEP_ROWS, AlarmRow.cleared_at.is_not(None))
        )
        alarm = Alarm(
            alarm_id, camera_id, hall_id, kind, now, short(texts["en"]), resolves, texts, bool(picture)
        )
        await self._write_event(session, "alarm", alarm)

    async def _keep_within_budget(self, session: AsyncSession, newest: int) -> None:
        await session.execute(
            text(
                "UPDATE alarms SET picture = NULL WHERE id IN (SELECT id FROM (SELECT id, "
                "sum(octet_length(picture)) OVER (ORDER BY id DESC) AS total FROM alarms "
                "WHERE picture IS NOT NULL) AS newest_first WHERE total > :budget AND id <> :newest)"
            ),
            {"budget": self._picture_budget, "newest": newest},
        )

    async def _write_event(self, session: AsyncSession, type_: EventType, alarm: Alarm) -> None:
        data = json.dumps(alarm.as_json(), ensure_ascii=False, separators=(",", ":"))
        row = {"type": type_, "hall_id": alarm.hall_id, "data": data, "origin": self.instance}
        seq = (
            await session.execute(insert(AlarmEventRow).values(**row).returning(AlarmEventRow.seq))
        ).scalar_one()
        await session.execute(text("SELECT pg_notify(:channel, :seq)"), {"channel": CHANNEL, "seq": str(seq)})
        await session.execute(delete(AlarmEventRow).where(AlarmEventRow.seq <= seq - self._keep_events))

    # -- acknowledging and pictures --------------------------------------------------

    async def acknowledge(
        self,
        alarm_id: int,
        principal: Principal,
        hall_ids: Collection[str],
        audit: AuditLog,
        source: str | None,
    ) -> Alarm:
        """See :meth:`vms.alarms.AlarmCentre.acknowledge_recorded`."""
        try:
            async with self._db.session() as session, session.begin():
                await self._locked(session)
                alarm = await self._acknowledge(session, alarm_id, principal, hall_ids, audit, source)
        except _FAULTS as err:
            raise AuditError(f"cannot acknowledge alarm {alarm_id}: {describe_fault(err)}") from err
        self._wake.set()
        return alarm

    async def _acknowledge(
        self,
        session: AsyncSession,
        alarm_id: int,
        principal: Principal,
        hall_ids: Collection[str],
        audit: AuditLog,
        source: str | None,
    ) -> Alarm:
        halls = sorted(hall_ids)
        acked = (
            await session.execute(
                update(AlarmRow)
                .where(
                    AlarmRow.id == alarm_id,
                    AlarmRow.hall_id.in_(halls),
                    AlarmRow.informational.is_(False),
                    AlarmRow.acked_at.is_(None),
                )
                .values(acked_by=principal.username, acked_at=datetime.now(UTC))
                .returning(*_COLUMNS)
            )
        ).one_or_none()
        if acked is None:
            query = select(*_COLUMNS, AlarmRow.informational).where(AlarmRow.id == alarm_id)
            found = (await session.execute(query)).one_or_none()
            if found is None or found.hall_id not in halls:
                raise UnknownAlarm(alarm_id)
            if found.informational:
                raise NotAcknowledgeable(alarm_id)
            return _alarm(found)
        alarm = _alarm(acked)
        detail = {"alarm": alarm.id, "kind": alarm.kind}
        await audit.add(
            session,
            "alarm_ack",
            principal=principal,
            camera_id=alarm.camera_id,
            source_addr=source,
            detail=detail,
        )
        await self._write_event(session, "ack", alarm)
        return alarm

    async def picture(self, alarm_id: int) -> bytes | None:
        """The JPEG of the alarm, unless there is none (any more)."""
        async with self._db.session() as session:
            jpeg: bytes | None = await session.scalar(select(AlarmRow.picture).where(AlarmRow.id == alarm_id))
        return jpeg

    # -- reading ---------------------------------------------------------------------

    async def read_now(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109 (a bound on waiting, not a cancel scope)
        """Have the reader read at once, and wait (at most ``timeout`` seconds) until it has."""
        reads = self._reads
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._reads <= reads:
                    self._read_done.clear()
                    await self._read_done.wait()

    async def _follow(self) -> None:
        failures = 0

        def connected() -> None:
            nonlocal failures
            if failures:
                log.info("the alarms' notifications are heard again")
            failures = 0

        while True:
            try:
                await self._listen(connected)
            except _FAULTS as err:
                if failures == 0:
                    log.warning("lost the alarms' notifications, reconnecting: %s", describe_fault(err))
            failures += 1
            await asyncio.sleep(min(10.0, RETRY * 2 ** min(failures - 1, 4)))

    async def _listen(self, connected: Callable[[], None]) -> None:
        args, kwargs = self._db.engine.dialect.create_connect_args(self._db.url)
        settings = {**kwargs.pop("server_settings", {}), "application_name": self.listener_name}
        conn: asyncpg.Connection = await asyncpg.connect(
            *args, **kwargs, server_settings=settings, timeout=CONNECT_TIMEOUT
        )
        lost = asyncio.Event()

        def on_lost(_: object) -> None:
            lost.set()
            self._wake.set()

        try:
            conn.add_termination_listener(on_lost)
            await conn.add_listener(CHANNEL, lambda *_: self._wake.set())
            connected()
            while True:
                self._wake.clear()
                await self._read(conn)  # after (re)connecting: everything missed meanwhile
                if lost.is_set():
                    raise ConnectionError("the listening connection closed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)
        finally:
            conn.terminate()

    async def _read(self, conn: asyncpg.Connection) -> None:
        while True:
            rows = await conn.fetch(_READ_AFTER, self._position, READ_PAGE)
            for row in rows:
                event = self._event(
                    row["seq"], row["type"], row["hall_id"], row["data"], row["origin"] == self.instance
                )
                self._position = event.seq
                self._on_event(event)
            if len(rows) < READ_PAGE:
                break
        self._reads += 1
        self._read_done.set()

    @staticmethod
    def _event(seq: int, type_: str, hall_id: str, data: str, local: bool) -> AlarmEvent:
        event_type: EventType = "ack" if type_ == "ack" else "alarm"
        return AlarmEvent(seq, event_type, hall_id, json.loads(data), local)
