"""Request and response bodies of the dashboard's own routes: saved walls and the status bar."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class LayoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    layout: int = Field(description="Tiles on the wall: 1, 4, 9 or 16.")
    tiles: list[str | None] = Field(
        max_length=16, description="One entry per tile: a camera id, or null for a free tile."
    )


class LayoutOut(BaseModel):
    layout: int
    tiles: list[str | None]
    saved: bool
    """False while the user has never saved a wall: this is the default one."""
    updated_at: datetime | None


class PlatformState(BaseModel):
    """A GB/T 28181 superior platform cascading the caller's centre (admins only)."""

    name: str
    registered: bool
    since: datetime | None
    last_error: str | None


class StatusOut(BaseModel):
    online: int
    """Cameras online, among those the caller may see."""
    total: int
    """Cameras the caller may see."""
    viewers: int
    """WebRTC and MJPEG viewers of those cameras, all users together."""
    ready: bool
    """The same verdict as ``/readyz``."""
    platforms: list[PlatformState] = []
    """The superior platforms of the caller's centre and their registration (admins only)."""
