"""The audit trail: who logged in, who watched which camera, who changed what.

:class:`AuditLog` appends rows to ``audit_events`` and reads them back with
filters, newest first, as records or as CSV. It has no update API: rows are only
ever inserted, read, and deleted by retention. A change and its record go in one
transaction (:meth:`AuditLog.add`); each event carries a unique ``record_id`` so that
replaying the local journal (:mod:`vms.viewing`) never stores one twice. An hourly task owned by the log
(``start()`` / ``async stop()``) deletes rows older than ``retention_days``.

Everything runs on the event loop. Times are stored as UTC; SQLite hands them back
without a zone, so every time leaving this module is made timezone-aware UTC.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from vms.access import Principal
from vms.storage.database import Database
from vms.storage.faults import describe
from vms.storage.tables import AuditEvent

log = logging.getLogger(__name__)

PURGE_INTERVAL = 3600.0
"""Seconds between retention runs."""
EXPORT_PAGE = 500
"""Rows read per query while exporting CSV: memory stays bounded for any export size."""

_LIMITS = {
    "action": 32,
    "username": 64,
    "centre_id": 64,
    "camera_id": 64,
    "protocol": 16,
    "source_addr": 64,
}
"""Column widths: text that arrives from outside (a typed username) is cut to fit."""


class AuditError(Exception):
    """The audit trail could not be written or read."""


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive time is taken to be UTC already (as SQLite returns them)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


@dataclass(frozen=True)
class AuditRecord:
    """One audit event as read back; every time is timezone-aware UTC."""

    id: int
    at: datetime
    action: str
    user_id: int | None
    username: str | None
    centre_id: str | None
    camera_id: str | None
    protocol: str | None
    source_addr: str | None
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    bytes: int | None
    detail: str | None

    @classmethod
    def from_row(cls, row: AuditEvent) -> AuditRecord:
        return cls(
            id=row.id,
            at=as_utc(row.at),
            action=row.action,
            user_id=row.user_id,
            username=row.username,
            centre_id=row.centre_id,
            camera_id=row.camera_id,
            protocol=row.protocol,
            source_addr=row.source_addr,
            started_at=_opt_utc(row.started_at),
            ended_at=_opt_utc(row.ended_at),
            duration_seconds=row.duration_seconds,
            bytes=row.bytes,
            detail=row.detail,
        )


CSV_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(AuditRecord))


@dataclass(frozen=True)
class AuditQuery:
    """Filters for reading the trail. ``since`` is inclusive, ``until`` exclusive;
    ``limit=None`` means every matching row (CSV export)."""

    centre_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    username: str | None = None
    camera_id: str | None = None
    action: str | None = None
    limit: int | None = 100
    offset: int = 0
    unattributed: frozenset[str] = frozenset()
    """Actions whose rows with no centre are shown along with ``centre_id``'s."""

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.centre_id is not None:
            own = AuditEvent.centre_id == self.centre_id
            if self.unattributed:
                actions = sorted(self.unattributed)
                own = or_(own, and_(AuditEvent.centre_id.is_(None), AuditEvent.action.in_(actions)))
            found.append(own)
        if self.since is not None:
            found.append(AuditEvent.at >= as_utc(self.since))
        if self.until is not None:
            found.append(AuditEvent.at < as_utc(self.until))
        if self.username is not None:
            found.append(AuditEvent.username == self.username)
        if self.camera_id is not None:
            found.append(AuditEvent.camera_id == self.camera_id)
        if self.action is not None:
            found.append(AuditEvent.action == self.action)
        return found


def _cut(name: str, value: str | None) -> str | None:
    return None if value is None else value[: _LIMITS[name]]


def _csv_cell(value: object) -> object:
    """A cell safe to open in a spreadsheet: times in ISO 8601, text that a spreadsheet
    would run as a formula (a typed username such as ``=HYPERLINK(...)``) quoted with '."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_lines(records: Sequence[AuditRecord], *, header: bool) -> str:
    """CSV text of ``records`` (with the header row first when ``header``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    for record in records:
        writer.writerow([_csv_cell(getattr(record, name)) for name in CSV_COLUMNS])
    return out.getvalue()


class AuditLog:
    """Append-only audit trail over :class:`Database`, with its retention task."""

    def __init__(self, db: Database, *, retention_days: int, purge_interval: float = PURGE_INTERVAL) -> None:
        if retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        self.db = db
        self.retention_days = retention_days
        self.purge_interval = purge_interval
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @staticmethod
    def event(
        action: str,
        *,
        principal: Principal | None = None,
        user_id: int | None = None,
        username: str | None = None,
        centre_id: str | None = None,
        camera_id: str | None = None,
        protocol: str | None = None,
        source_addr: str | None = None,
        started_at: datetime | None = None,
        ended_at: datetime | None = None,
        bytes: int | None = None,
        detail: str | Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """The row of one event, with a new unique ``record_id``. Values passed explicitly
        win over those taken from ``principal``; ``duration_seconds`` is computed when both
        ``started_at`` and ``ended_at`` are given; ``at`` defaults to now."""
        if not action:
            raise ValueError("an audit event needs an action")
        if principal is not None:
            user_id = principal.user_id if user_id is None else user_id
            username = principal.username if username is None else username
            centre_id = principal.centre_id if centre_id is None else centre_id
        started_at, ended_at = _opt_utc(started_at), _opt_utc(ended_at)
        duration = None
        if started_at is not None and ended_at is not None:
            duration = max(0.0, (ended_at - started_at).total_seconds())
        if detail is not None and not isinstance(detail, str):
            detail = json.dumps(dict(detail), sort_keys=True, default=str)
        return {
            "record_id": uuid.uuid4().hex,
            "at": as_utc(at) if at is not None else datetime.now(UTC),
            "action": _cut("action", action),
            "user_id": user_id,
            "username": _cut("username", username),
            "centre_id": _cut("centre_id", centre_id),
            "camera_id": _cut("camera_id", camera_id),
            "protocol": _cut("protocol", protocol),
            "source_addr": _cut("source_addr", source_addr),
            "started_at": started_at,
            "ended_at": ended_at,
            "duration_seconds": duration,
            "bytes": bytes,
            "detail": detail,
        }

    async def record(self, action: str, **fields: Any) -> None:
        """Append one event (see :meth:`event`) in its own transaction.
        Raises :class:`AuditError` when the database refuses."""
        await self.insert([self.event(action, **fields)])

    async def add(self, session: AsyncSession, action: str, **fields: Any) -> None:
        """Append one event inside the caller's transaction: the change it records and the
        record commit together or not at all."""
        await session.execute(insert(AuditEvent).values(**self.event(action, **fields)))

    async def insert(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert rows made by :meth:`event` in one transaction; a row whose ``record_id`` is
        already stored (a journal replayed twice) is skipped. :class:`AuditError` on failure."""
        if not rows:
            return
        dialect = postgresql if self.db.dialect == "postgresql" else sqlite
        statement = dialect.insert(AuditEvent).on_conflict_do_nothing(index_elements=[AuditEvent.record_id])
        try:
            async with self.db.session() as session, session.begin():
                await session.execute(statement, [dict(row) for row in rows])
        except (SQLAlchemyError, OSError) as err:
            actions = ", ".join(sorted({str(row.get("action")) for row in rows}))
            raise AuditError(f"cannot write the audit event(s) {actions}: {describe(err)}") from err

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        """Matching events, newest first, ``query.offset`` rows skipped, at most ``query.limit``."""
        stmt = (
            select(AuditEvent)
            .where(*query.conditions())
            .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
            .offset(query.offset)
            .limit(query.limit)
        )
        try:
            async with self.db.session() as session:
                rows = (await session.scalars(stmt)).all()
        except (SQLAlchemyError, OSError) as err:
            raise AuditError(f"cannot read the audit trail: {type(err).__name__}") from err
        return [AuditRecord.from_row(row) for row in rows]

    async def export_csv(self, query: AuditQuery, *, page_size: int = EXPORT_PAGE) -> AsyncIterator[str]:
        """The matching events as CSV text chunks (header first), newest first.

        Reads ``page_size`` rows at a time, each page after the last row of the
        previous one (by time, then id), so rows added meanwhile shift nothing.
        """
        yield csv_lines([], header=True)
        remaining = query.limit
        skip = query.offset
        after: tuple[datetime, int] | None = None
        while remaining is None or remaining > 0:
            page = page_size if remaining is None else min(page_size, remaining)
            conditions = query.conditions()
            if after is not None:
                at, last_id = after
                conditions.append(or_(AuditEvent.at < at, and_(AuditEvent.at == at, AuditEvent.id < last_id)))
            stmt = (
                select(AuditEvent)
                .where(*conditions)
                .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
                .offset(skip)
                .limit(page)
            )
            skip = 0
            try:
                async with self.db.session() as session:
                    rows = (await session.scalars(stmt)).all()
            except (SQLAlchemyError, OSError) as err:
                raise AuditError(f"cannot read the audit trail: {type(err).__name__}") from err
            if not rows:
                return
            after = (rows[-1].at, rows[-1].id)
            if remaining is not None:
                remaining -= len(rows)
            yield csv_lines([AuditRecord.from_row(row) for row in rows], header=False)
            if len(rows) < page:
                return

    async def purge(self, now: datetime | None = None) -> int:
        """Delete the events older than ``retention_days``; returns how many went."""
        cutoff = (as_utc(now) if now is not None else datetime.now(UTC)) - timedelta(days=self.retention_days)
        try:
            async with self.db.session() as session, session.begin():
                result = await session.execute(delete(AuditEvent).where(AuditEvent.at < cutoff))
        except (SQLAlchemyError, OSError) as err:
            raise AuditError(f"cannot apply audit retention: {type(err).__name__}") from err
        count: int = getattr(result, "rowcount", 0) or 0
        if count:
            log.info("audit retention: deleted %d events older than %s", count, cutoff.isoformat())
        return count

    def start(self) -> None:
        """Start the retention task: one purge now, then one every ``purge_interval`` seconds."""
        if self._task is not None:
            return
        self._stopping.clear()
        self._task = asyncio.create_task(self._retention(), name="audit-retention")

    async def stop(self) -> None:
        """Stop the retention task. Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    async def _retention(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.purge()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("audit retention failed; retrying in %.0f s", self.purge_interval)
            try:
                await asyncio.wait_for(self._stopping.wait(), self.purge_interval)
            except TimeoutError:
                continue
