"""Playing recordings back over a WebSocket to a Media Source: seeking, pacing, speed.

``playback.ws?start=&stream=`` is admitted like the live ``mse.ws`` (same-origin
handshake, session cookie or bearer token, refusals closed with ``4000 + HTTP
status``), with the ``playback`` permission. The server sends, as text JSON:

* ``{"type": "init", "generation", "mime", "codec", "audio", "width", "height"}``
  then one binary message, the init segment. A generation begins at each seek and
  where the codec parameters change; its media time 0 is its first keyframe;
* ``{"type": "map", "generation", "media", "wall"}``: from media time ``media``
  (seconds) on the picture shows wall clock ``wall``: right after ``init`` and
  after each gap squeezed out of the media timeline;
* binary messages of ``moof`` + ``mdat`` fragments of the current generation;
* ``{"type": "end", "generation", "wall"}``: nothing is recorded after ``wall``
  yet; the socket stays open for a seek;
* ``{"type": "error", "detail"}``, then the socket closes.

The client sends ``{"type": "seek", "to"}``, ``{"type": "position",
"generation", "media"}`` (its ``currentTime``, at least every 250 ms) and
``{"type": "speed", "value": 1|2|4|8}``. Fragments go out while the media time
sent is below the client's position plus :data:`LEAD` × speed, so a paused
player stops the flow and the first seconds go at once.

One ``playback`` audit record per socket, with the wall clock ranges sent.

Event loop only: one task reads the client's messages, one plays; the endpoint
owns and awaits both.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from streams import PlaybackInit, PlaybackJump, PlaybackMedia, PlaybackStop, StreamName, play
from vms.audit import as_utc
from vms.config import Config
from vms.deps import visible_camera
from vms.problems import Problem
from vms.recordings import RecordingIndex, to_ms
from vms.routes.live_ws import SEND_TIMEOUT, admit, close_socket, same_origin
from vms.routes.playback import NOTHING_RECORDED, iso, playback_recorder, segment_sources
from vms.viewing import Viewer, ViewingRecorder

log = logging.getLogger(__name__)

router = APIRouter(tags=["recordings"])

LEAD = 4.0
"""Seconds of media sent ahead of the client's position, at normal speed."""
SPEEDS = frozenset({1, 2, 4, 8})
MAX_RANGES = 50
"""Wall clock ranges listed in the audit record at most."""


@dataclass
class _Session:
    """What the client asked for, and what was sent."""

    stream: str
    generation: int = 0
    position: float = 0.0
    speed: int = 1
    seek: datetime | None = None
    media_sent: float = 0.0
    """Where the video sent in this generation ends (seconds)."""
    sent: int = 0
    ranges: list[list[int]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def heard(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "seek":
            self.seek = as_utc(datetime.fromisoformat(str(message["to"])))
        elif kind == "position" and message.get("generation") == self.generation:
            self.position = float(message["media"])
        elif kind == "speed" and message.get("value") in SPEEDS:
            self.speed = int(message["value"])
        self.wake.set()

    def wanted(self, media: float) -> bool:
        """Whether media sent up to ``media`` seconds is within the lead."""
        return media < self.position + LEAD * self.speed

    def range_from(self, wall_ms: int) -> None:
        if len(self.ranges) < MAX_RANGES:
            self.ranges.append([wall_ms, wall_ms])

    def range_to(self, wall_ms: int) -> None:
        if self.ranges:
            self.ranges[-1][1] = max(self.ranges[-1][1], wall_ms)


Outcome = tuple[Literal["seek", "changed", "end"], datetime | int | None]


@router.websocket("/cameras/{camera_id}/playback.ws")
async def playback_ws(
    websocket: WebSocket, camera_id: str, start: str = "", stream: StreamName | None = None
) -> None:
    """Recorded video for Media Source Extensions; see the module docstring."""
    if not same_origin(websocket.headers):
        await websocket.close(code=4403)
        return
    try:
        principal, _, _ = await admit(websocket, camera_id, "playback")
        config: Config = websocket.app.state.config
        camera = visible_camera(config, principal, camera_id)
        index, viewing = playback_recorder(websocket.app.state)
        try:
            since = as_utc(datetime.fromisoformat(start))
        except ValueError as err:
            raise Problem(400, "start must be an ISO 8601 time, e.g. 2026-05-01T09:30:00+08:00") from err
    except Problem as problem:
        await websocket.accept()
        await close_socket(websocket, 4000 + problem.status, problem.detail)
        return
    client = websocket.client.host if websocket.client else None
    viewer = Viewer(principal, camera.id, "mse", client, datetime.now(UTC))
    session = _Session(stream or config.record_stream(camera))
    await websocket.accept()
    player = _Player(websocket, index, camera.id, session)
    playing = asyncio.create_task(player.run(since), name=f"playback.ws {camera_id}")
    listening = asyncio.create_task(_listen(websocket, session), name=f"playback.ws {camera_id} reader")
    try:
        await asyncio.wait({playing, listening}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        playing.cancel()
        listening.cancel()
        await asyncio.wait({playing, listening})
        _audit(viewing, viewer, session)
    await _close_after(websocket, playing, listening, camera_id)


async def _listen(websocket: WebSocket, session: _Session) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        try:
            session.heard(json.loads(message.get("text") or "{}"))
        except (ValueError, KeyError, TypeError) as err:
            raise _ClientError(f"cannot understand the message: {err}") from err


class _ClientError(Exception):
    """The client sent something that is not a message of this protocol."""


class _Player:
    """Plays generation after generation: at the start, after each seek, after a change of parameters."""

    def __init__(
        self, websocket: WebSocket, index: RecordingIndex, camera_id: str, session: _Session
    ) -> None:
        self.websocket, self.index, self.camera_id, self.session = websocket, index, camera_id, session

    async def send(self, message: str | bytes) -> None:
        async with asyncio.timeout(SEND_TIMEOUT):
            if isinstance(message, bytes):
                await self.websocket.send_bytes(message)
            else:
                await self.websocket.send_text(message)
        self.session.sent += len(message)

    async def send_json(self, **fields: object) -> None:
        await self.send(json.dumps(fields))

    async def run(self, since: datetime) -> None:
        session = self.session
        at: datetime | int = since
        first = True
        while True:
            session.generation += 1
            session.position = session.media_sent = 0.0
            kind, where = await self.generation(at)
            if kind == "end" and first and where is None:
                await self.send_json(type="error", detail=NOTHING_RECORDED)
                await close_socket(self.websocket, 4404, NOTHING_RECORDED)
                return
            first = False
            if kind == "end":
                wall = where if isinstance(where, int) else to_ms(at if isinstance(at, datetime) else since)
                await self.send_json(type="end", generation=session.generation, wall=iso(wall))
                while session.seek is None:
                    session.wake.clear()
                    await session.wake.wait()
            if kind == "changed" and where is not None:
                at = where
                continue
            seek, session.seek = session.seek, None
            if seek is not None:
                at = seek

    async def generation(self, at: datetime | int) -> Outcome:
        """Play from ``at`` (a time asked, or the start of a segment in ms) until a seek,
        a change of parameters, or the end of what is recorded."""
        session = self.session
        start = at if isinstance(at, datetime) else datetime.fromtimestamp(at / 1000, UTC)
        sources = segment_sources(self.index, self.camera_id, session.stream, start, None)
        items = play(sources, to_ms(start))
        started = False
        try:
            async for item in items:
                if session.seek is not None:
                    return "seek", session.seek
                if isinstance(item, PlaybackInit):
                    started = True
                    await self.send_json(
                        type="init", generation=session.generation, mime=item.mime, codec=item.codec,
                        audio=item.audio is not None, width=item.width, height=item.height,
                    )  # fmt: skip
                    await self.send(item.data)
                    await self.send_json(
                        type="map", generation=session.generation, media=0.0, wall=iso(item.wall_ms)
                    )
                    session.range_from(item.wall_ms)
                elif isinstance(item, PlaybackJump):
                    await self.send_json(
                        type="map", generation=session.generation, media=item.media, wall=iso(item.wall_ms)
                    )
                    session.range_from(item.wall_ms)
                elif isinstance(item, PlaybackMedia):
                    if not await self.paced():
                        return "seek", session.seek
                    await self.send(item.data)
                    session.media_sent = item.media_end
                    session.range_to(item.wall_end_ms)
                elif isinstance(item, PlaybackStop):
                    if item.reason == "changed":
                        return "changed", item.wall_ms
                    return "end", item.wall_ms if started else None
        finally:
            await items.aclose()
        return "end", None

    async def paced(self) -> bool:
        """Wait until the client wants more; False when it seeks meanwhile."""
        session = self.session
        while not session.wanted(session.media_sent):
            if session.seek is not None:
                return False
            session.wake.clear()
            await session.wake.wait()
        return session.seek is None


def _audit(viewing: ViewingRecorder, viewer: Viewer, session: _Session) -> None:
    ranges = [[iso(a), iso(b)] for a, b in session.ranges]
    viewing.viewing_ended(
        viewer, session.sent, {"stream": session.stream, "ranges": ranges}, action="playback"
    )


async def _close_after(
    websocket: WebSocket, playing: asyncio.Task[None], listening: asyncio.Task[None], camera_id: str
) -> None:
    """Close the socket as the end of the two tasks says; the client leaving needs nothing more."""
    heard = None if listening.cancelled() else listening.exception()
    error = None if playing.cancelled() else playing.exception()
    if isinstance(heard, _ClientError):
        await _error(websocket, 4400, str(heard))
        return
    if listening.done() and not listening.cancelled():
        return
    if isinstance(error, TimeoutError):
        log.info("playback of %s: the client does not read its messages, disconnected", camera_id)
        await close_socket(websocket, 1008, "the client does not read its frames")
    elif error is not None and not isinstance(error, (WebSocketDisconnect, OSError)):
        raise error


async def _error(websocket: WebSocket, code: int, detail: str) -> None:
    try:
        async with asyncio.timeout(SEND_TIMEOUT):
            await websocket.send_text(json.dumps({"type": "error", "detail": detail}))
    except (TimeoutError, OSError, RuntimeError, WebSocketDisconnect):
        return
    await close_socket(websocket, code, detail)
