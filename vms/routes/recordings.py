"""A camera's recordings: the recorded spans and gaps of a time range, from the index."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from vms.audit import as_utc
from vms.deps import ConfigDep, PlaybackUser, visible_camera
from vms.problems import Problem
from vms.recordings import RecordingIndex

router = APIRouter(tags=["recordings"])

MAX_RANGE = timedelta(days=31)


class SpanOut(BaseModel):
    start: datetime
    end: datetime


class RecordingsOut(BaseModel):
    camera_id: str
    stream: Literal["main", "sub"]
    start: datetime
    end: datetime
    recording: bool
    """Whether the camera is configured to record now."""
    spans: list[SpanOut]
    """Recorded without interruption (segments less than a second apart are one span)."""
    gaps: list[SpanOut]
    """Nothing recorded: the camera was offline, the service stopped, or recording was off."""
    segments: int
    bytes: int


@router.get("/cameras/{camera_id}/recordings")
async def list_recordings(
    camera_id: str,
    request: Request,
    config: ConfigDep,
    user: PlaybackUser,
    start: Annotated[datetime | None, Query(description="From (ISO 8601); default: end minus 24 h.")] = None,
    end: Annotated[datetime | None, Query(description="Until (ISO 8601); default: now.")] = None,
    stream: Literal["main", "sub"] | None = None,
) -> RecordingsOut:
    """What was recorded of the camera between ``start`` and ``end`` (at most 31 days)."""
    camera = visible_camera(config, user, camera_id)
    until = as_utc(end) if end is not None else datetime.now(UTC)
    since = as_utc(start) if start is not None else until - timedelta(hours=24)
    if since >= until:
        raise Problem(400, "start must be before end")
    if until - since > MAX_RANGE:
        raise Problem(400, "ask for at most 31 days at a time")
    index: RecordingIndex = request.app.state.recordings
    which = stream or config.record_stream(camera)
    found = await index.spans(camera.id, which, since, until)
    return RecordingsOut(
        camera_id=camera.id,
        stream=which,
        start=since,
        end=until,
        recording=config.records(camera),
        spans=[SpanOut(start=s.start, end=s.end) for s in found.spans],
        gaps=[SpanOut(start=g.start, end=g.end) for g in found.gaps],
        segments=found.segments,
        bytes=found.bytes,
    )
