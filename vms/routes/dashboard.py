"""What the browser dashboard needs beyond the resource routes: the user's saved
wall and the status bar's figures. Live video over WebSockets is in
:mod:`vms.routes.live_ws`.

Event loop only.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request

from streams import IngestState, StreamManager
from vms import layouts
from vms.deps import ConfigDep, CurrentUser
from vms.gb28181 import Cascade
from vms.problems import Problem
from vms.routes.health import readiness
from vms.schemas_dashboard import LayoutIn, LayoutOut, PlatformState, StatusOut
from vms.storage import Database

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
            viewers += stats.viewers
    reasons = await readiness(request.app)
    cascade: Cascade | None = getattr(request.app.state, "gb28181", None)
    platforms = [
        PlatformState(
            name=p.settings.name,
            registered=p.status.registered,
            since=p.status.since,
            last_error=p.status.last_error,
        )
        for p in (cascade.platforms if cascade is not None and user.can("admin") else [])
        if p.settings.centre == user.centre_id
    ]
    return StatusOut(
        online=online, total=len(cameras), viewers=viewers, ready=not reasons, platforms=platforms
    )
