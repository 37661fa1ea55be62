"""Camera alarms over HTTP: the list, the acknowledgement, and a live Server-Sent Events stream.

Everyone logged in sees the alarms of the halls their centre may see (alarms hold
no video); acknowledging needs the "acknowledge" permission (operators and admins).
An alarm in a hall the caller may not see answers 404, like one that never existed.

Each acknowledgement is written to the audit trail *before* it takes effect (or in
the same transaction, when the alarms are shared by several instances), rather than
through the viewing recorder's queue: if the database refuses, the answer is 503 and
the alarm stays unacknowledged, so no acknowledgement is shown that the durable
record does not hold.

With several instances (:mod:`vms.alarms_shared`) every instance serves the same list
and the same event numbers, so a stream may resume on another instance.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from vms.access import Principal
from vms.alarm_events import AlarmEvent
from vms.alarms import Alarm, AlarmCentre, NotAcknowledgeable, UnknownAlarm
from vms.audit import AuditError, AuditLog
from vms.deps import ConfigDep, CurrentUser, SnapshotUser, require
from vms.problems import Problem
from vms.schemas import DbId
from vms.viewing import RecordRefused, ViewingRecorder

router = APIRouter(tags=["alarms"])

MAX_LIMIT = 1000
UNACKNOWLEDGED_HEADER = "X-Unacknowledged-Count"
RECONNECT_MS = 2000
"""How long a browser waits before reconnecting a closed event stream."""

AckUser = Annotated[Principal, Depends(require("acknowledge"))]


class AlarmOut(BaseModel):
    id: int
    camera_id: str
    hall_id: str
    kind: str
    at: datetime
    message: str
    """In English; ``texts`` has it by language."""
    texts: dict[str, str]
    """The message by language: ``zh-CN`` and ``en``."""
    picture: str | None
    """The URL of the picture that raised it (``/api/v1/alarms/{id}/picture``), or null:
    the same form as in the event stream."""
    informational: bool
    """True for ``online``, ``recording_resumed`` and ``picture_ok`` events: nothing to acknowledge."""
    resolves: list[int]
    acknowledged_by: str | None
    acknowledged_at: datetime | None


class AlarmList(BaseModel):
    unacknowledged: int
    """Alarms in the caller's halls still waiting for an operator (whatever the filters)."""
    alarms: list[AlarmOut]


def _out(alarm: Alarm) -> AlarmOut:
    return AlarmOut.model_validate(alarm.as_json())


def _centre(request: Request) -> AlarmCentre:
    centre: AlarmCentre | None = getattr(request.app.state, "alarms", None)
    if centre is None:
        raise Problem(503, "the service is starting or stopping")
    return centre


def _audit(request: Request) -> AuditLog:
    audit: AuditLog | None = getattr(request.app.state, "audit", None)
    if audit is None:
        raise Problem(503, "the audit trail is not available")
    return audit


@router.get("/alarms")
async def list_alarms(
    request: Request,
    response: Response,
    user: CurrentUser,
    config: ConfigDep,
    unacknowledged: Annotated[bool, Query(description="only alarms waiting for an operator")] = False,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> AlarmList:
    """Alarms of the caller's halls, newest first, with the count still unacknowledged."""
    centre = _centre(request)
    halls = user.visible_hall_ids(config)
    found = centre.alarms(halls, unacknowledged=unacknowledged, limit=limit)
    count = centre.unacknowledged_count(halls)
    response.headers[UNACKNOWLEDGED_HEADER] = str(count)
    response.headers["Cache-Control"] = "no-store"
    return AlarmList(unacknowledged=count, alarms=[_out(a) for a in found])


@router.post("/alarms/{alarm_id}/ack")
async def acknowledge(alarm_id: DbId, request: Request, user: AckUser, config: ConfigDep) -> AlarmOut:
    """Acknowledge an alarm (operators and admins); again later answers the first acknowledgement."""
    centre = _centre(request)
    source = request.client.host if request.client else None
    try:
        alarm = await centre.acknowledge_recorded(
            alarm_id, user, user.visible_hall_ids(config), _audit(request), source
        )
    except UnknownAlarm:
        raise Problem(404, f"no alarm {alarm_id} (alarms are kept in memory, the newest first)") from None
    except NotAcknowledgeable:
        raise Problem(409, f"alarm {alarm_id} is informational: it needs no acknowledgement") from None
    except AuditError as err:
        raise Problem(
            503, "the acknowledgement could not be recorded; try again", {"Retry-After": "5"}
        ) from err
    return _out(alarm)


@router.get("/alarms/{alarm_id}/picture", response_class=Response)
async def alarm_picture(alarm_id: DbId, request: Request, user: SnapshotUser, config: ConfigDep) -> Response:
    """The JPEG of the picture that raised a picture alarm (operators and admins), recorded in
    the audit trail like a snapshot before it is served. The picture never changes: browsers
    may keep it."""
    centre = _centre(request)
    try:
        alarm, jpeg = await centre.fetch_picture(alarm_id, user.visible_hall_ids(config))
    except UnknownAlarm:
        raise Problem(404, f"no picture of alarm {alarm_id}") from None
    viewing: ViewingRecorder | None = getattr(request.app.state, "viewing", None)
    if viewing is None:
        raise Problem(503, "the service is starting or stopping")
    try:
        await viewing.record_now(
            "snapshot",
            principal=user,
            camera_id=alarm.camera_id,
            protocol="alarm_picture",
            source_addr=request.client.host if request.client else None,
            bytes=len(jpeg),
            detail={"alarm": alarm.id},
        )
    except RecordRefused as err:
        raise Problem(503, str(err), {"Retry-After": "5"}) from err
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


def sse_frame(event: AlarmEvent) -> bytes:
    data = json.dumps(event.data, separators=(",", ":"), ensure_ascii=False)
    return f"id: {event.seq}\nevent: {event.type}\ndata: {data}\n\n".encode()


@router.get("/alarms/events", response_class=StreamingResponse)
async def alarm_events(
    request: Request,
    user: CurrentUser,
    config: ConfigDep,
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
) -> StreamingResponse:
    """Server-Sent Events: ``alarm`` (a new alarm) and ``ack`` (an acknowledgement), each with
    the alarm as JSON; a comment every few seconds keeps the line open.

    With ``Last-Event-ID`` the missed events still in memory come first; an id the
    server no longer knows (too old, or from before a restart) gets one ``resync``
    event instead: reload ``GET /api/v1/alarms``. A client that falls far behind
    has its stream ended; reconnecting with ``Last-Event-ID`` catches it up.
    """
    centre = _centre(request)
    halls = user.visible_hall_ids(config)
    await centre.catch_up(last_event_id)  # an id another instance gave may be newer than ours

    async def body() -> AsyncIterator[bytes]:
        # Subscribing here, not before, means a client gone before the first byte leaves nothing behind.
        sub = centre.subscribe(halls, last_event_id)
        try:
            yield f"retry: {RECONNECT_MS}\n\n".encode()
            if sub.resync:
                yield f"id: {sub.position}\nevent: resync\ndata: {{}}\n\n".encode()
            for missed in sub.replay:
                yield sse_frame(missed)
            while True:
                try:
                    event = await asyncio.wait_for(sub.get(), centre.heartbeat)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if event is None:
                    return
                yield sse_frame(event)
        finally:
            sub.close()

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
