"""Response bodies of the JSON API, and the bounded integer types of its parameters.

Nothing here can carry a credential.
"""

from __future__ import annotations

from typing import Annotated, Literal

from annotated_types import Ge, Le
from pydantic import BaseModel

DB_INT_MAX = (1 << 63) - 1
"""The largest integer a database column holds (SQLite INTEGER, PostgreSQL BIGINT)."""

DbId = Annotated[int, Ge(1), Le(DB_INT_MAX)]
"""A database row id in a path: out of range is a 422, never an overflow in the driver."""

Offset = Annotated[int, Ge(0), Le(DB_INT_MAX)]
"""How many rows a listing skips."""


class SubStreamState(BaseModel):
    state: str
    fps: float
    codec: str | None
    width: int | None
    height: int | None
    sessions_opened: int
    reconnects: int
    last_error: str | None
    viewers: int


class CameraState(BaseModel):
    state: str
    since: float
    fps: float
    bitrate: float
    keyframe_interval: float | None
    codec: str | None
    profile: str | None
    width: int | None
    height: int | None
    reconnects: int
    sessions_opened: int
    """Source sessions (RTSP connections) opened since start: one per reconnect, never one per viewer."""
    stalls: int
    last_error: str | None
    last_error_at: float | None
    viewers: int
    """Every viewer of every protocol, main and sub-stream together."""
    webrtc_viewers: int
    mjpeg_viewers: int
    mse_viewers: int
    rtsp_viewers: int
    gb28181_viewers: int
    """Live sessions of superior platforms (GB/T 28181 cascade)."""
    dropped_packets: int
    reorders: bool
    """The stream has B-frames: WebRTC cannot play it (409), MSE can."""
    transcoding: bool
    """A transcoder of this camera is running (H.265 to H.264, AAC to Opus): someone watches."""
    transcoder_starts: int
    audio: str | None
    """The codec of the relayed sound (aac, opus, pcmu, pcma), or null: audio is off for the
    camera, or it sends none that can be relayed."""
    sub: SubStreamState | None
    """The sub-stream's figures, or null for a camera without one."""
    upstream: Literal["own", "peer", "none"]
    """Where this instance pulls the camera from: its ``own`` source, the ``peer`` instance that
    owns it, or ``none`` while no instance owns it (state ``unowned``)."""
    peer: str | None
    """The owning instance's id while the camera is pulled from a ``peer``."""


class CameraOut(BaseModel):
    id: str
    name: str
    hall: str
    source: str
    """The source URL without user-info; credentials are never shown."""
    transport: str
    enabled: bool
    streams: list[str]
    """``["main"]``, or ``["main", "sub"]`` for a camera with a sub-stream (``?stream=sub``)."""
    live: CameraState
    links: dict[str, str]


class HallOut(BaseModel):
    id: str
    name: str
    department: str
    plate: str
    """The hall's second name plate (e.g. 兴宁市政务服务中心税务分厅); empty if it has none."""
    cameras: list[str]
    online: int
    total: int


class CentreOut(BaseModel):
    id: str
    name: str
    halls: list[str]
