"""Saved video walls: each user's layout (1, 4, 9 or 16 tiles) and the camera in each tile.

A wall is checked against what the user may see when it is saved (a camera of a
hall outside the user's centre is refused) and again when it is read back (a
camera that has since left the configuration, or the centre's halls, shows as a
free tile). A user who never saved a wall gets a default one: four tiles with the
cameras of the first visible hall that has cameras.

Rows live in the ``layouts`` table; a save is one atomic upsert on
``(user_id, name)``, so two tabs saving at once leave one of the two walls, whole.
Event loop only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from vms.access import Principal
from vms.config import Config
from vms.storage import Database
from vms.storage.tables import SavedLayout

log = logging.getLogger(__name__)

LAYOUTS = (1, 4, 9, 16)
"""The tile counts a wall may have: 1×1, 2×2, 3×3, 4×4."""
DEFAULT_LAYOUT = 4
CURRENT = "current"
"""The name under which the dashboard keeps a user's wall."""


class InvalidLayout(ValueError):
    """A wall that cannot be saved; the message says why, for the person who sent it."""


@dataclass(frozen=True, slots=True)
class Wall:
    """A video wall: ``layout`` tiles, each a camera id or ``None`` (free)."""

    layout: int
    tiles: tuple[str | None, ...]
    updated_at: datetime | None = None
    """When it was saved; ``None`` for the default wall of a user who never saved one."""

    @property
    def saved(self) -> bool:
        return self.updated_at is not None


def _visible_cameras(config: Config, principal: Principal) -> list[str]:
    halls = principal.visible_hall_ids(config)
    return [camera.id for camera in config.cameras if camera.hall in halls]


def default_wall(config: Config, principal: Principal) -> Wall:
    """Four tiles holding the cameras of the first visible hall that has any."""
    visible = principal.visible_hall_ids(config)
    cameras: list[str] = []
    for hall in config.halls:
        if hall.id in visible:
            cameras = [camera.id for camera in config.cameras_in_hall(hall.id)]
            if cameras:
                break
    tiles = [*cameras[:DEFAULT_LAYOUT], *([None] * DEFAULT_LAYOUT)][:DEFAULT_LAYOUT]
    return Wall(DEFAULT_LAYOUT, tuple(tiles))


def check_wall(config: Config, principal: Principal, layout: int, tiles: list[str | None]) -> Wall:
    """The wall if it may be saved by ``principal``; :class:`InvalidLayout` otherwise."""
    if layout not in LAYOUTS:
        raise InvalidLayout(f"layout must be one of {', '.join(map(str, LAYOUTS))} (tiles on the wall)")
    if len(tiles) != layout:
        raise InvalidLayout(f"a wall of layout {layout} has {layout} tiles; {len(tiles)} were sent")
    visible = set(_visible_cameras(config, principal))
    for index, camera_id in enumerate(tiles):
        if camera_id is not None and camera_id not in visible:
            raise InvalidLayout(f"tile {index}: no camera {camera_id!r} in the halls your centre may see")
    return Wall(layout, tuple(tiles))


def _from_row(config: Config, principal: Principal, row: SavedLayout) -> Wall | None:
    """The stored wall with cameras no longer visible freed; ``None`` if the row is unreadable."""
    try:
        stored: Any = json.loads(row.tiles)
    except ValueError:
        stored = None
    if row.layout not in LAYOUTS or not isinstance(stored, list) or len(stored) != row.layout:
        log.warning("user %d: saved layout %r is unreadable; using the default", row.user_id, row.name)
        return None
    visible = set(_visible_cameras(config, principal))
    tiles = tuple(entry if isinstance(entry, str) and entry in visible else None for entry in stored)
    return Wall(row.layout, tiles, row.updated_at)


async def load_wall(db: Database, config: Config, principal: Principal, name: str = CURRENT) -> Wall:
    """The user's saved wall, else :func:`default_wall`."""
    async with db.session() as s:
        row = await s.scalar(
            select(SavedLayout).where(SavedLayout.user_id == principal.user_id, SavedLayout.name == name)
        )
    wall = _from_row(config, principal, row) if row is not None else None
    return wall if wall is not None else default_wall(config, principal)


async def save_wall(db: Database, principal: Principal, wall: Wall, name: str = CURRENT) -> Wall:
    """Store ``wall`` (checked by :func:`check_wall`) as the user's, replacing any before it."""
    now = datetime.now(UTC)
    values = {
        "user_id": principal.user_id,
        "name": name,
        "layout": wall.layout,
        "tiles": json.dumps(list(wall.tiles)),
        "updated_at": now,
    }
    insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
    statement = insert(SavedLayout).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[SavedLayout.user_id, SavedLayout.name],
        set_={"layout": wall.layout, "tiles": values["tiles"], "updated_at": now},
    )
    async with db.session() as s, s.begin():
        await s.execute(statement)
    return Wall(wall.layout, wall.tiles, now)
