"""Live video over WebSockets: MSE (fragmented MP4) and MJPEG, one socket per tile.

WebSockets carry video where WebRTC cannot (no UDP between the browser and the
service, common on government intranets) and beat plain HTTP streams in a grid:
a browser opens at most six HTTP/1.1 connections per host, so sixteen
``multipart/x-mixed-replace`` tiles would stall, while sixteen WebSockets do not.
Both pass through an HTTP reverse proxy that forwards the ``Upgrade`` handshake
(the README has an nginx example).

* ``mse.ws``: a text message ``{"type": "init", "codec", "mime", "width",
  "height", "transcoded", "audio"}`` (``audio``: the AAC track's codec string,
  or null) followed by one binary message, the init segment; then one binary
  message per access unit or audio frame (``moof`` + ``mdat``). Another ``init``
  pair comes before a keyframe whose stream description changed. The stream
  starts at the camera's latest keyframe, so the first picture comes at once;
  the player jumps to the live edge. ``stream=sub`` plays the sub-stream;
  ``hevc=1`` says the browser decodes H.265, else an H.265 camera is transcoded;
  ``audio=0`` says it cannot play AAC, so a camera's sound is left out.
* ``mjpeg.ws``: one binary message per JPEG, the newest picture each time, at
  most the relay's MJPEG frame rate.

The WebSocket is authenticated like any request (session cookie or bearer token).
Browsers send cookies on cross-site WebSocket handshakes and no CORS rule applies
to them, so the handshake's ``Origin`` must name this service's own host (the
``Host`` header; a reverse proxy must pass it through): a page of another site
cannot ride a user's session. A foreign origin is refused before the handshake
completes (HTTP 403). Any other refusal completes the handshake and closes at
once with code ``4000 + HTTP status`` and the reason, since a browser script sees
close codes but never the handshake's HTTP status: 4401 (log in again), 4403 (the
role may not watch), 4404 (no such camera in the user's halls), 4503 (starting,
stopping, or the camera cannot be played yet). The end of the stream closes with
1001; a client that does not read its messages is disconnected with 1008 (and,
below the app, the server cuts a connection whose client leaves what is sent
unread for ``server.write_timeout``: see :mod:`vms.server`).

Each viewing is recorded in the audit trail when the viewer leaves.

Event loop only; each viewer is one pump task (take the next message, send it)
and one task waiting for the client to leave, both owned and awaited by the
endpoint.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket
from starlette.datastructures import Headers
from starlette.websockets import WebSocketDisconnect

from streams import MseInit, MseSession, StreamError, StreamManager, StreamName
from vms.access import Permission, Principal
from vms.config import Config
from vms.deps import optional_user, visible_camera
from vms.problems import Problem
from vms.viewing import RecordRefused, Viewer, ViewingRecorder

log = logging.getLogger(__name__)

router = APIRouter(tags=["live video"])

SEND_TIMEOUT = 15.0
"""Seconds one message may take to leave; a client stuck longer is disconnected."""
CLOSE_TIMEOUT = 2.0
"""Seconds the closing handshake may take to leave."""
_CLOSE_REASON_BYTES = 123
"""The most a WebSocket close reason may hold (RFC 6455, 5.5)."""

Message = str | bytes
Feed = AsyncIterator[Message]


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


@router.websocket("/cameras/{camera_id}/mse.ws")
async def mse_ws(
    websocket: WebSocket, camera_id: str, stream: StreamName = "main", hevc: bool = False, audio: bool = True
) -> None:
    """Fragmented MP4 for Media Source Extensions; see the module docstring."""

    async def open_feed(manager: StreamManager, owner: str) -> Feed:
        session = await manager.mse_session(camera_id, stream, h265=hevc, audio=audio, owner=owner)
        return _mse_messages(session, transcoded=session.hub is not manager.hub(camera_id, stream))

    await _serve(websocket, camera_id, "mse", open_feed)


@router.websocket("/cameras/{camera_id}/mjpeg.ws")
async def mjpeg_ws(websocket: WebSocket, camera_id: str, stream: StreamName = "main") -> None:
    """Motion JPEG, one binary message per picture; see the module docstring."""

    async def open_feed(manager: StreamManager, owner: str) -> Feed:
        return manager.mjpeg(camera_id, stream, owner=owner)

    await _serve(websocket, camera_id, "mjpeg", open_feed)


async def _mse_messages(session: MseSession, *, transcoded: bool) -> AsyncGenerator[Message, None]:
    try:
        async for message in session:
            if isinstance(message, MseInit):
                yield json.dumps(
                    {
                        "type": "init",
                        "codec": message.codec,
                        "mime": message.mime,
                        "width": message.width,
                        "height": message.height,
                        "transcoded": transcoded,
                        "audio": message.audio,
                    }
                )
            yield message.data
    finally:
        session.close()


async def _serve(
    websocket: WebSocket,
    camera_id: str,
    protocol: str,
    open_feed: Callable[[StreamManager, str], Awaitable[Feed]],
) -> None:
    """Serve one viewer the feed ``open_feed`` opens, seated as its user (``str(user_id)``,
    as for WHEP: the per-user viewer caps count every protocol)."""
    if not same_origin(websocket.headers):
        log.warning(
            "refused a %s WebSocket for %s from origin %r (host %r)",
            protocol,
            camera_id,
            websocket.headers.get("origin"),
            websocket.headers.get("host"),
        )
        await websocket.close(code=4403)  # before accepting: the handshake is refused with 403
        return
    try:
        principal, manager, viewing = await admit(websocket, camera_id)
        feed = await open_feed(manager, str(principal.user_id))
    except Problem as problem:
        await websocket.accept()
        await close_socket(websocket, 4000 + problem.status, problem.detail)
        return
    except StreamError as err:
        await websocket.accept()
        await close_socket(websocket, 4503, str(err) or "the stream is not available")
        return
    client = websocket.client.host if websocket.client else None
    viewer = Viewer(principal, camera_id, protocol, client, datetime.now(UTC))
    await websocket.accept()
    sent = 0

    async def pump() -> None:
        nonlocal sent
        try:
            async for message in feed:
                async with asyncio.timeout(SEND_TIMEOUT):
                    if isinstance(message, bytes):
                        await websocket.send_bytes(message)
                    else:
                        await websocket.send_text(message)
                sent += len(message)
        finally:
            await _aclose(feed)

    async def until_gone() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # the client has nothing to say; anything it sends is ignored

    pumping = asyncio.create_task(pump(), name=f"{protocol}.ws {camera_id}")
    waiting = asyncio.create_task(until_gone(), name=f"{protocol}.ws {camera_id} reader")
    try:
        try:
            await asyncio.wait({pumping, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            pumping.cancel()
            waiting.cancel()
            await asyncio.wait({pumping, waiting})
            await _aclose(feed)
    finally:
        viewing.viewing_ended(viewer, sent)
    await _after_pump(websocket, pumping, waiting, f"{protocol} viewer of {camera_id}")


_MAY_NOT: dict[Permission, str] = {"watch": "watch video", "playback": "play recordings"}


async def admit(
    websocket: WebSocket, camera_id: str, permission: Permission = "watch"
) -> tuple[Principal, StreamManager, ViewingRecorder]:
    """Who may watch ``camera_id`` (or do what ``permission`` allows) here; :class:`Problem`
    with the status otherwise."""
    principal = await optional_user(websocket)
    if principal is None:
        raise Problem(401, "log in, or send 'Authorization: Bearer <API token>'")
    if not principal.can(permission):
        raise Problem(403, f"the role {principal.role} may not {_MAY_NOT.get(permission, permission)}")
    state = websocket.app.state
    config: Config = state.config
    visible_camera(config, principal, camera_id)
    manager: StreamManager | None = getattr(state, "manager", None)
    viewing: ViewingRecorder | None = getattr(state, "viewing", None)
    if manager is None or viewing is None:
        raise Problem(503, "the service is starting or stopping")
    try:
        viewing.check_recordable()  # a viewing that could be recorded nowhere is not started
    except RecordRefused as err:
        raise Problem(503, str(err)) from err
    return principal, manager, viewing


async def _aclose(feed: Feed) -> None:
    aclose = getattr(feed, "aclose", None)
    if aclose is not None:
        await aclose()


async def close_socket(websocket: WebSocket, code: int, reason: str = "") -> None:
    reason = reason.encode("utf-8")[:_CLOSE_REASON_BYTES].decode("utf-8", errors="ignore")
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await websocket.close(code=code, reason=reason)
    except (TimeoutError, OSError, RuntimeError, WebSocketDisconnect):
        log.debug("a live WebSocket could not be closed cleanly (code %d)", code)


async def _after_pump(
    websocket: WebSocket, pumping: asyncio.Task[None], waiting: asyncio.Task[None], who: str
) -> None:
    """Close the WebSocket as the pump's end says; the client leaving needs nothing more."""
    departure = None if waiting.cancelled() else waiting.exception()
    error = None if pumping.cancelled() else pumping.exception()
    if departure is not None:
        log.debug("WebSocket %s: %s", who, type(departure).__name__)
    if error is not None and not isinstance(error, (TimeoutError, WebSocketDisconnect, OSError)):
        raise error
    if waiting.done() and not waiting.cancelled():
        return  # the client left (or broke the connection)
    if error is None:
        await close_socket(websocket, 1001, "the stream ended")
    elif isinstance(error, TimeoutError):
        log.info("WebSocket %s too slow: disconnected", who)
        await close_socket(websocket, 1008, "the client does not read its frames")
