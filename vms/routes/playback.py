"""Playing a camera's recordings back: a progressive MP4 for ``<video src>``, and MSE over a WebSocket.

``playback.mp4?start=&duration=&stream=`` answers one fragmented MP4, streamed as
the segment files are read (never assembled in memory): it begins at the keyframe
at or before ``start`` (the first one after it when ``start`` falls in a gap),
media time 0 is that keyframe (its wall clock is in ``X-Playback-Start``), the
segments follow each other with gaps squeezed out, and it stops after the first
picture that reaches ``start + duration`` or at a segment whose codec parameters
differ from the first's. See :mod:`vms.routes.playback_ws` for the WebSocket.

Each playback leaves one ``playback`` record in the audit trail with the wall
clock range served; one that could be recorded nowhere is not started (503).

Event loop only; the files are read in worker threads by the media plane.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from streams import PlaybackInit, PlaybackMedia, SourceSegment, play
from vms.audit import as_utc
from vms.deps import ConfigDep, PlaybackUser, visible_camera
from vms.problems import Problem
from vms.recordings import RecordingIndex, from_ms, to_ms
from vms.viewing import RecordRefused, Viewer, ViewingRecorder

router = APIRouter(tags=["recordings"])

MAX_DURATION = 3600.0
PAGE = timedelta(hours=1)
"""Segments are asked of the index this much time at a time."""
NOTHING_RECORDED = "nothing recorded"


def iso(ms: int) -> str:
    """A wall clock in milliseconds as ISO 8601 in UTC."""
    return from_ms(ms).isoformat().replace("+00:00", "Z")


def playback_recorder(state: object) -> tuple[RecordingIndex, ViewingRecorder]:
    """The recordings and the audit of viewings, when a new playback can be recorded;
    :class:`Problem` 503 otherwise."""
    index: RecordingIndex | None = getattr(state, "recordings", None)
    viewing: ViewingRecorder | None = getattr(state, "viewing", None)
    if index is None or viewing is None:
        raise Problem(503, "the service is starting or stopping")
    try:
        viewing.check_recordable()
    except RecordRefused as err:
        raise Problem(503, str(err)) from err
    return index, viewing


async def segment_sources(
    index: RecordingIndex, camera_id: str, stream: str, start: datetime, end: datetime | None
) -> AsyncIterator[SourceSegment]:
    """The segments from ``start`` on, until ``end`` or what is recorded now, asked of the
    index :data:`PAGE` at a time."""
    at = start
    seen: set[Path] = set()
    while end is None or at < end:
        until = at + PAGE if end is None else min(end, at + PAGE)
        page = await index.playable(camera_id, stream, at, until)
        for source in page:
            if source.path not in seen:
                yield source
        seen = {source.path for source in page}  # a segment may overlap the next page
        if until >= datetime.now(UTC):
            return
        at = until


@router.get(
    "/cameras/{camera_id}/playback.mp4",
    response_class=StreamingResponse,
    responses={200: {"content": {"video/mp4": {}}}},
)
async def playback_mp4(
    camera_id: str,
    request: Request,
    config: ConfigDep,
    user: PlaybackUser,
    start: Annotated[datetime, Query(description="From (ISO 8601).")],
    duration: Annotated[float, Query(gt=0, le=MAX_DURATION, description="Seconds.")] = 60.0,
    stream: Literal["main", "sub"] | None = None,
) -> StreamingResponse:
    """The recording of ``duration`` seconds from ``start`` as one fragmented MP4."""
    camera = visible_camera(config, user, camera_id)
    index, viewing = playback_recorder(request.app.state)
    which = stream or config.record_stream(camera)
    since = as_utc(start)
    until = since + timedelta(seconds=duration)
    items = play(segment_sources(index, camera.id, which, since, until), to_ms(since), to_ms(until))
    first = await anext(items)
    if not isinstance(first, PlaybackInit):
        await items.aclose()
        raise Problem(404, NOTHING_RECORDED)
    client = request.client.host if request.client else None
    viewer = Viewer(user, camera.id, "mp4", client, datetime.now(UTC))

    async def body() -> AsyncIterator[bytes]:
        sent, last = 0, first.wall_ms
        try:
            yield first.data
            sent += len(first.data)
            async for item in items:
                if isinstance(item, PlaybackMedia):
                    yield item.data
                    sent += len(item.data)
                    last = item.wall_end_ms
        finally:
            await items.aclose()
            detail = {"stream": which, "from": iso(first.wall_ms), "to": iso(last)}
            viewing.viewing_ended(viewer, sent, detail, action="playback")

    headers = {"X-Playback-Start": iso(first.wall_ms), "Cache-Control": "no-store"}
    return StreamingResponse(body(), media_type="video/mp4", headers=headers)
