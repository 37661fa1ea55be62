"""Response bodies of the JSON API. Nothing here can carry a credential."""

from __future__ import annotations

from pydantic import BaseModel


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
    webrtc_viewers: int
    mjpeg_viewers: int
    dropped_packets: int


class CameraOut(BaseModel):
    id: str
    name: str
    hall: str
    source: str
    """The source URL without user-info; credentials are never shown."""
    transport: str
    enabled: bool
    live: CameraState
    links: dict[str, str]


class HallOut(BaseModel):
    id: str
    name: str
    department: str
    cameras: list[str]
    online: int
    total: int


class CentreOut(BaseModel):
    id: str
    name: str
    halls: list[str]
