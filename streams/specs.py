"""The media plane's terms for what the control plane configures and reads back:
camera specs, relay settings, and each camera's live figures.

Plain frozen data, safe from any thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from streams.analysis.verdict import CLEAR_AFTER, DEFAULT_THRESHOLDS, RAISE_AFTER, Thresholds
from streams.ingest import IngestPolicy, IngestState
from streams.sources import SourceOptions

StreamName = Literal["main", "sub"]
UpstreamKind = Literal["own", "peer", "none"]
"""Where a camera is pulled from: its own source, the instance that owns it, nowhere."""


@dataclass(frozen=True, slots=True)
class RecordingSpec:
    """Continuous recording of one camera stream into fragmented MP4 segments."""

    directory: Path
    """This camera's own recordings root: segments go to ``<directory>/<YYYY-MM-DD>/``."""
    segment_seconds: float = 300.0
    """A segment is closed at the first keyframe this long after its start."""
    stream: StreamName = "main"
    """Which of the camera's streams is recorded."""
    sync_interval: float = 0.5
    """Seconds between forcing written data to the disk (``fdatasync``). With the recorder's
    half-second batches, a power cut loses at most about a second (``fdatasync`` twice a
    second cost no more than once, ``bench/record.py --overhead``)."""


@dataclass(frozen=True, slots=True)
class AnalysisSpec:
    """Picture-quality diagnosis of a camera (:mod:`streams.analysis`)."""

    interval: float = 2.0
    """Seconds between analysed pictures at least: the stream's keyframes, never more often
    than this (a camera whose keyframes are further apart is analysed at each keyframe)."""
    raise_after: float = RAISE_AFTER
    clear_after: float = CLEAR_AFTER
    thresholds: Thresholds = DEFAULT_THRESHOLDS
    jpeg_quality: int = 80
    picture_width: int = 640
    """Width of the JPEG kept with an alarm and of the reference picture."""


@dataclass(frozen=True, slots=True)
class CameraSpec:
    """One camera as the media plane needs to know it."""

    id: str
    source: SourceOptions
    enabled: bool = True
    policy: IngestPolicy = field(default_factory=IngestPolicy)
    sub_source: SourceOptions | None = None
    """A second, smaller stream of the same camera, for wall tiles; pulled once like the main one."""
    recording: RecordingSpec | None = None
    """Record this camera continuously; None: never."""
    analysis: AnalysisSpec | None = None
    """Diagnose this camera's pictures (its sub-stream when it has one); None: never."""


@dataclass(frozen=True, slots=True)
class IceServer:
    """A STUN or TURN server offered to viewers and used by the relay's own ICE agent."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True, slots=True)
class TranscodeSettings:
    """H.265 to H.264, once per stream while watched (for viewers that cannot decode H.265)."""

    max_width: int = 1280
    max_height: int = 720
    bitrate: int = 2_000_000
    keyframe_interval: float = 2.0
    idle_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class RelaySettings:
    ice_servers: Sequence[IceServer] = ()
    """Empty: no STUN/TURN server is ever asked (the default)."""
    ice_host_addresses: Sequence[str] = ()
    max_viewers_per_camera: int = 32
    """Viewers of one camera at once, every protocol together (WebRTC, MSE, MJPEG, RTSP,
    GB/T 28181 live sessions): :mod:`streams.viewers`."""
    max_viewers_total: int = 256
    """Viewers of the whole relay at once, every protocol together."""
    session_timeout: float = 10.0
    """A connected WebRTC viewer that has been silent (no RTCP) this long after a few
    seconds' grace is closed."""
    max_viewers_per_user: int = 64
    """Viewer sessions (WebRTC connected or connecting, MSE, MJPEG, RTSP) of one user, all cameras."""
    max_viewers_per_user_per_camera: int = 4
    """Viewer sessions of one user on one camera, every protocol together."""
    max_pending_per_camera: int = 8
    """WebRTC sessions of one camera answered but not yet connected."""
    max_pending_per_user: int = 32
    """WebRTC sessions of one user answered but not yet connected."""
    max_pending_total: int = 64
    """WebRTC sessions of the relay answered but not yet connected."""
    pending_timeout: float = 5.0
    """A WebRTC session not connected (ICE and DTLS) this long after its offer is closed."""
    max_remote_candidates: int = 20
    """Remote ICE candidates kept per WebRTC session; the rest are dropped."""
    ice_remote_networks: Sequence[str] = ()
    """When not empty, ICE checks go only to remote candidates inside these networks (CIDR)."""
    jpeg_quality: int = 80
    mjpeg_max_fps: float = 5.0
    snapshot_timeout: float = 5.0
    transcode: TranscodeSettings = field(default_factory=TranscodeSettings)
    info_timeout: float = 5.0
    """Seconds a new viewer waits for a starting camera's first keyframe."""
    trim_settle: float = 2.0
    """Seconds without any viewer after which freed memory is given back to the system."""
    trim_follow_up: float = 20.0
    """Seconds from that trim to one more (ingest pulls freed pages back in meanwhile)."""
    trim_idle_interval: float = 60.0
    """While nobody watches, freed memory is given back this often (seconds)."""


@dataclass(frozen=True, slots=True)
class SubStreamStats:
    """The figures of a camera's sub-stream."""

    state: IngestState
    fps: float
    codec: str | None
    width: int | None
    height: int | None
    sessions_opened: int
    reconnects: int
    last_error: str | None
    viewers: int


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
    """Every viewer of every protocol, main and sub-stream together."""
    webrtc_viewers: int
    mjpeg_viewers: int
    mse_viewers: int
    rtsp_viewers: int
    gb28181_viewers: int
    """Live sessions of superior platforms (GB/T 28181 cascade)."""
    reorders: bool
    """The main stream has B-frames: WebRTC cannot play it, MSE can."""
    transcoding: bool
    """A transcoder of one of the camera's streams is running (H.265 to H.264, AAC to Opus)."""
    transcoder_starts: int
    audio: str | None
    """The codec of the sound relayed with the main stream (``aac``, ``opus``, ``pcmu``,
    ``pcma``), or None: audio off, or the camera sends none we can relay."""
    sub: SubStreamStats | None
    upstream: UpstreamKind
    """Where the camera is pulled from (:mod:`streams.upstream`): ``own`` source, a ``peer``
    instance that owns it, or ``none`` while nobody owns it (state ``unowned``)."""
    peer: str | None
    """The owner's instance id while pulled from a peer."""
