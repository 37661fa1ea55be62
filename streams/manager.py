"""The face of the media plane: cameras in, subscriptions and statistics out.

:class:`StreamManager` owns, per camera, one hub, one ingest and one picture
output, and owns the WebRTC output shared by all cameras. The control plane
(``vms``) builds it from its configuration, starts and stops it from the app's
lifespan, and asks it for viewer sessions, pictures and statistics.

Event loop only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from aiortc import RTCIceServer

from streams.errors import StreamError
from streams.hub import Hub
from streams.ingest import Ingest, IngestPolicy, IngestState, StateListener
from streams.outputs.pictures import PictureOutput
from streams.outputs.webrtc import WebRtcOutput, WhepSession
from streams.sources import SourceOptions, open_source


class UnknownCamera(StreamError):
    """No camera with that id is configured."""


@dataclass(frozen=True, slots=True)
class CameraSpec:
    """One camera as the media plane needs to know it."""

    id: str
    source: SourceOptions
    enabled: bool = True
    policy: IngestPolicy = field(default_factory=IngestPolicy)


@dataclass(frozen=True, slots=True)
class IceServer:
    """A STUN or TURN server offered to viewers and used by the relay's own ICE agent."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True, slots=True)
class RelaySettings:
    ice_servers: Sequence[IceServer] = ()
    """Empty: no STUN/TURN server is ever asked (the default)."""
    ice_host_addresses: Sequence[str] = ()
    max_viewers_per_camera: int = 32
    max_viewers_total: int = 256
    session_timeout: float = 10.0
    """A WebRTC viewer that has not connected within this many seconds, or has been
    silent (no RTCP) this long after a few seconds' grace, is closed."""
    jpeg_quality: int = 80
    mjpeg_max_fps: float = 5.0
    snapshot_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class CameraStats:
    """A camera's live figures, safe to show to anyone allowed to see the camera."""

    id: str
    state: IngestState
    state_since: float
    fps: float
    bitrate: float
    keyframe_interval: float | None
    codec: str | None
    profile: str | None
    width: int | None
    height: int | None
    reconnects: int
    sessions_opened: int
    stalls: int
    last_error: str | None
    last_error_at: float | None
    packets: int
    bytes: int
    dropped: int
    viewers: int
    webrtc_viewers: int
    mjpeg_viewers: int


class _Camera:
    def __init__(self, spec: CameraSpec, settings: RelaySettings, listener: StateListener) -> None:
        self.spec = spec
        self.hub = Hub(spec.id)
        secrets = [spec.source.password] if spec.source.password else []
        self.ingest = Ingest(
            spec.id,
            open_source(spec.source),
            self.hub,
            spec.policy,
            enabled=spec.enabled,
            listener=listener,
            secrets=secrets,
        )
        self.pictures = PictureOutput(
            self.hub, jpeg_quality=settings.jpeg_quality, max_fps=settings.mjpeg_max_fps
        )


class StreamManager:
    """Starts one ingest per camera and serves their hubs. See the module docstring."""

    def __init__(self, cameras: Sequence[CameraSpec], settings: RelaySettings | None = None) -> None:
        self.settings = settings or RelaySettings()
        self._listeners: list[StateListener] = []
        self._session_listeners: list[Callable[[WhepSession], None]] = []
        self._cameras = {spec.id: _Camera(spec, self.settings, self._on_state) for spec in cameras}
        self.webrtc = WebRtcOutput(
            ice_servers=[
                RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                for s in self.settings.ice_servers
            ],
            ice_host_addresses=list(self.settings.ice_host_addresses) or None,
            max_sessions_per_camera=self.settings.max_viewers_per_camera,
            max_sessions_total=self.settings.max_viewers_total,
            connect_timeout=self.settings.session_timeout,
            disconnect_grace=self.settings.session_timeout,
            on_end=self._on_session_end,
        )
        self._started = False
        self.started_at: float | None = None

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.started_at = time.time()
        for cam in self._cameras.values():
            cam.ingest.start()

    async def stop(self) -> None:
        """Stop every viewer, output and ingest; idempotent."""
        if not self._started:
            return
        self._started = False
        await self.webrtc.stop()
        await asyncio.gather(*(cam.pictures.stop() for cam in self._cameras.values()))
        await asyncio.gather(*(cam.ingest.stop() for cam in self._cameras.values()))
        for cam in self._cameras.values():
            cam.hub.close()

    @property
    def running(self) -> bool:
        """True while started and every enabled camera's ingest task is alive."""
        return self._started and all(cam.ingest.running for cam in self._cameras.values() if cam.spec.enabled)

    # -- events -------------------------------------------------------------------

    def add_listener(self, listener: StateListener) -> None:
        """Be told of every camera state change (on the event loop)."""
        self._listeners.append(listener)

    def add_session_listener(self, listener: Callable[[WhepSession], None]) -> None:
        """Be told when a WebRTC session ends, after its resources are freed (on the event loop)."""
        self._session_listeners.append(listener)

    def _on_session_end(self, session: WhepSession) -> None:
        for listener in list(self._session_listeners):
            listener(session)

    def _on_state(self, camera_id: str, old: IngestState, new: IngestState, error: str | None) -> None:
        for listener in list(self._listeners):
            listener(camera_id, old, new, error)

    # -- cameras ------------------------------------------------------------------

    def camera_ids(self) -> list[str]:
        return list(self._cameras)

    def _camera(self, camera_id: str) -> _Camera:
        try:
            return self._cameras[camera_id]
        except KeyError:
            raise UnknownCamera(f"no camera {camera_id!r}") from None

    def hub(self, camera_id: str) -> Hub:
        return self._camera(camera_id).hub

    def stats(self, camera_id: str) -> CameraStats:
        cam = self._camera(camera_id)
        ingest, hub = cam.ingest, cam.hub
        fps, bitrate = hub.stats.rates()
        if ingest.state is not IngestState.ONLINE:
            fps, bitrate = 0.0, 0.0
        info = hub.info
        webrtc_viewers = self.webrtc.session_count(camera_id)
        mjpeg_viewers = cam.pictures.viewer_count
        return CameraStats(
            id=camera_id,
            state=ingest.state,
            state_since=ingest.state_since,
            fps=round(fps, 2),
            bitrate=round(bitrate),
            keyframe_interval=(
                round(hub.stats.keyframe_interval, 3) if hub.stats.keyframe_interval is not None else None
            ),
            codec=info.codec if info else None,
            profile=info.profile if info else None,
            width=info.width if info else None,
            height=info.height if info else None,
            reconnects=ingest.reconnects,
            sessions_opened=ingest.sessions_opened,
            stalls=ingest.stalls,
            last_error=ingest.last_error,
            last_error_at=ingest.last_error_at,
            packets=hub.stats.packets,
            bytes=hub.stats.bytes,
            dropped=hub.stats.dropped,
            viewers=webrtc_viewers + mjpeg_viewers,
            webrtc_viewers=webrtc_viewers,
            mjpeg_viewers=mjpeg_viewers,
        )

    def all_stats(self) -> list[CameraStats]:
        return [self.stats(cid) for cid in self._cameras]

    # -- viewers ------------------------------------------------------------------

    async def whep_offer(self, camera_id: str, offer_sdp: str) -> WhepSession:
        return await self.webrtc.create_session(camera_id, self._camera(camera_id).hub, offer_sdp)

    async def whep_close(self, session_id: str) -> bool:
        return await self.webrtc.close_session(session_id)

    async def snapshot(self, camera_id: str) -> bytes:
        return await self._camera(camera_id).pictures.snapshot(timeout=self.settings.snapshot_timeout)

    def mjpeg(self, camera_id: str) -> AsyncIterator[bytes]:
        return self._camera(camera_id).pictures.mjpeg()
