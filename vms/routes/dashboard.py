"""What the browser dashboard needs beyond the resource routes: the user's saved
wall, MJPEG over a WebSocket, and the status bar's figures.

MJPEG over WebSocket exists because a browser opens at most six HTTP/1.1
connections per host: a grid of sixteen ``multipart/x-mixed-replace`` tiles would
stall, sixteen WebSockets do not. Each binary message is one JPEG.

The WebSocket is authenticated like any request (session cookie or bearer token).
Browsers send cookies on cross-site WebSocket handshakes and no CORS rule applies
to them, so the handshake's ``Origin`` must name this service's own host (the
``Host`` header; a reverse proxy must pass it through): a page of another site
cannot ride a user's session. A foreign origin is refused before the handshake
completes (HTTP 403). Any other refusal completes the handshake and closes at
once with code ``4000 + HTTP status`` and the reason, since a browser script sees
close codes but never the handshake's HTTP status: 4401 (log in again), 4403 (the
role may not watch), 4404 (no such camera in the user's halls), 4503 (starting or
stopping).

Event loop only; each WebSocket viewer is one pump task (pull the newest frame,
send it, pull the next) and one task waiting for the client to leave, both owned
and awaited by the endpoint.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, WebSocket
from starlette.datastructures import Headers
from starlette.websockets import WebSocketDisconnect

from streams import IngestState, StreamError, StreamManager
from vms import layouts
from vms.access import Principal
from vms.config import Config
from vms.deps import ConfigDep, CurrentUser, optional_user, visible_camera
from vms.problems import Problem
from vms.routes.health import readiness
from vms.schemas_dashboard import LayoutIn, LayoutOut, StatusOut
from vms.storage import Database
from vms.viewing import Viewer, ViewingRecorder

log = logging.getLogger(__name__)

router = APIRouter(tags=["dashboard"])

SEND_TIMEOUT = 15.0
"""Seconds one frame may take to leave; a client stuck longer is disconnected."""
CLOSE_TIMEOUT = 2.0
"""Seconds the closing handshake may take to leave."""
_CLOSE_REASON_BYTES = 123
"""The most a WebSocket close reason may hold (RFC 6455, 5.5)."""


# -- saved walls -------------------------------------------------------------------


def _database(request: Request) -> Database:
    db: Database | None = getattr(request.app.state, "db", None)
    if db is None:
        raise Problem(503, "the service is starting or stopping")
    return db


def _layout_out(wall: layouts.Wall) -> LayoutOut:
    return LayoutOut(layout=wall.layout, tiles=list(wall.tiles), saved=wall.saved, updated_at=wall.updated_at)


@router.get("/layouts/current")
async def get_layout(request: Request, config: ConfigDep, user: CurrentUser) -> LayoutOut:
    """The caller's saved wall; a default one (four tiles, the first hall's cameras) if none was saved."""
    return _layout_out(await layouts.load_wall(_database(request), config, user))


@router.put("/layouts/current")
async def put_layout(body: LayoutIn, request: Request, config: ConfigDep, user: CurrentUser) -> LayoutOut:
    """Save the caller's wall: ``layout`` 1, 4, 9 or 16 and as many tiles, each a visible camera or null."""
    try:
        wall = layouts.check_wall(config, user, body.layout, body.tiles)
    except layouts.InvalidLayout as err:
        raise Problem(422, str(err)) from err
    return _layout_out(await layouts.save_wall(_database(request), user, wall))


# -- status bar --------------------------------------------------------------------


@router.get("/status")
async def status(request: Request, config: ConfigDep, user: CurrentUser) -> StatusOut:
    """Cameras online and in total, and their viewers, over the caller's halls; and readiness."""
    halls = user.visible_hall_ids(config)
    cameras = [camera.id for camera in config.cameras if camera.hall in halls]
    manager: StreamManager | None = getattr(request.app.state, "manager", None)
    online = viewers = 0
    if manager is not None:
        for camera_id in cameras:
            stats = manager.stats(camera_id)
            online += stats.state is IngestState.ONLINE
            viewers += stats.webrtc_viewers + stats.mjpeg_viewers
    reasons = await readiness(request.app)
    return StatusOut(online=online, total=len(cameras), viewers=viewers, ready=not reasons)


# -- MJPEG over WebSocket ----------------------------------------------------------


def _authority(scheme: str, netloc: str) -> str:
    """``host[:port]`` in lower case, without the scheme's default port."""
    netloc = netloc.strip().lower()
    default = ":443" if scheme == "https" else ":80"
    return netloc.removesuffix(default)


def same_origin(headers: Headers) -> bool:
    """Whether a WebSocket handshake comes from a page of this service (or from no page at all).

    Browsers always send ``Origin`` on a WebSocket handshake; a client without
    one is a program, which a cross-site page cannot drive, so it passes.
    """
    origin = headers.get("origin")
    if origin is None:
        return True
    host = headers.get("host")
    parts = urlsplit(origin)
    if not host or parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return _authority(parts.scheme, parts.netloc) == _authority(parts.scheme, host)


async def _close(websocket: WebSocket, code: int, reason: str = "") -> None:
    reason = reason.encode("utf-8")[:_CLOSE_REASON_BYTES].decode("utf-8", errors="ignore")
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await websocket.close(code=code, reason=reason)
    except (TimeoutError, OSError, RuntimeError, WebSocketDisconnect):
        log.debug("the MJPEG WebSocket could not be closed cleanly (code %d)", code)


async def _viewer(websocket: WebSocket, camera_id: str) -> tuple[Principal, StreamManager, ViewingRecorder]:
    """Who may watch ``camera_id`` here; :class:`Problem` with the status otherwise."""
    principal = await optional_user(websocket)
    if principal is None:
        raise Problem(401, "log in, or send 'Authorization: Bearer <API token>'")
    if not principal.can("watch"):
        raise Problem(403, f"the role {principal.role} may not watch video")
    state = websocket.app.state
    config: Config = state.config
    visible_camera(config, principal, camera_id)
    manager: StreamManager | None = getattr(state, "manager", None)
    viewing: ViewingRecorder | None = getattr(state, "viewing", None)
    if manager is None or viewing is None:
        raise Problem(503, "the service is starting or stopping")
    return principal, manager, viewing


@router.websocket("/cameras/{camera_id}/mjpeg.ws")
async def mjpeg_ws(websocket: WebSocket, camera_id: str) -> None:
    """MJPEG over a WebSocket: one binary message per JPEG, the newest picture each time,
    at most the relay's MJPEG frame rate. Recorded in the audit trail when the viewer leaves."""
    if not same_origin(websocket.headers):
        log.warning(
            "refused an MJPEG WebSocket for %s from origin %r (host %r)",
            camera_id,
            websocket.headers.get("origin"),
            websocket.headers.get("host"),
        )
        await websocket.close(code=4403)  # before accepting: the handshake is refused with 403
        return
    try:
        principal, manager, viewing = await _viewer(websocket, camera_id)
        frames = manager.mjpeg(camera_id)
    except Problem as problem:
        await websocket.accept()
        await _close(websocket, 4000 + problem.status, problem.detail)
        return
    except StreamError as err:
        await websocket.accept()
        await _close(websocket, 4503, str(err) or "the stream is not available")
        return
    client = websocket.client.host if websocket.client else None
    viewer = Viewer(principal, camera_id, "mjpeg", client, datetime.now(UTC))
    await websocket.accept()
    sent = 0

    async def pump() -> None:
        nonlocal sent
        try:
            async for jpeg in frames:
                async with asyncio.timeout(SEND_TIMEOUT):
                    await websocket.send_bytes(jpeg)
                sent += len(jpeg)
        finally:
            await _aclose(frames)

    async def until_gone() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # the client has nothing to say; anything it sends is ignored

    pumping = asyncio.create_task(pump(), name=f"mjpeg.ws {camera_id}")
    waiting = asyncio.create_task(until_gone(), name=f"mjpeg.ws {camera_id} reader")
    try:
        try:
            await asyncio.wait({pumping, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            pumping.cancel()
            waiting.cancel()
            await asyncio.wait({pumping, waiting})
            await _aclose(frames)
    finally:
        viewing.viewing_ended(viewer, sent)
    await _after_pump(websocket, pumping, waiting, camera_id)


async def _aclose(frames: AsyncIterator[bytes]) -> None:
    aclose = getattr(frames, "aclose", None)
    if aclose is not None:
        await aclose()


async def _after_pump(
    websocket: WebSocket, pumping: asyncio.Task[None], waiting: asyncio.Task[None], camera_id: str
) -> None:
    """Close the WebSocket as the pump's end says; the client leaving needs nothing more."""
    departure = None if waiting.cancelled() else waiting.exception()
    error = None if pumping.cancelled() else pumping.exception()
    if departure is not None:
        log.debug("MJPEG WebSocket of %s: %s", camera_id, type(departure).__name__)
    if error is not None and not isinstance(error, (TimeoutError, WebSocketDisconnect, OSError)):
        raise error
    if waiting.done() and not waiting.cancelled():
        return  # the client left (or broke the connection)
    if error is None:
        await _close(websocket, 1001, "the stream ended")
    elif isinstance(error, TimeoutError):
        log.info("MJPEG WebSocket viewer of %s too slow: disconnected", camera_id)
        await _close(websocket, 1008, "the client does not read its frames")
