"""Configuration sections of the media plane: WebRTC viewers, ingest, pictures, transcoding,
recording, exports.

Kept apart from :mod:`vms.config` (the site: server, centres, halls, cameras) and
:mod:`vms.config_access` (storage, access, audit) so each module stays one concern.
Same rules: unknown keys are errors, inputs never echoed, secrets are ``SecretStr``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    IPvAnyNetwork,
    SecretStr,
    field_validator,
    model_validator,
)

from vms.config_checks import ingest_order_problem, invalid

Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
"""A positive, finite number of seconds."""

ICE_SCHEMES = ("stun", "stuns", "turn", "turns")


class _Model(BaseModel):
    # Inputs stay out of ValidationError's text: a URL or a password must never be echoed.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class IceServer(_Model):
    """A STUN or TURN server offered to viewers' browsers and used by the relay's own ICE agent."""

    urls: list[str] = Field(min_length=1, description="stun:, stuns:, turn: or turns: URLs (one or a list).")
    username: str | None = Field(default=None, description="TURN user name.")
    credential: SecretStr | None = Field(default=None, description="TURN password.")

    @field_validator("urls", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            scheme = url.partition(":")[0].lower()
            if scheme not in ICE_SCHEMES or not url.partition(":")[2]:
                raise invalid(
                    "ice_url",
                    f"{url!r} is not a STUN or TURN URL; write it like stun:stun.example.org:3478 "
                    "or turn:turn.example.org:3478?transport=udp",
                )
        return urls

    @model_validator(mode="after")
    def _turn_needs_credentials(self) -> Self:
        is_turn = any(url.lower().startswith("turn") for url in self.urls)
        if is_turn and (self.username is None or self.credential is None):
            raise invalid(
                "turn_credentials", "a TURN server needs a username and a credential; add both next to urls"
            )
        return self


class WebRtcSettings(_Model):
    """WebRTC (WHEP) viewers: ICE and limits."""

    ice_servers: list[IceServer] = Field(
        default_factory=list,
        description="STUN/TURN servers. Empty by default: the service never contacts a public STUN server.",
    )
    ice_host_addresses: list[IPvAnyAddress] = Field(
        default_factory=list,
        description="Host addresses offered as ICE candidates. Empty means the machine's own interfaces; "
        "add 127.0.0.1 for loopback-only setups and tests.",
    )
    max_viewers_per_camera: int = Field(
        default=32,
        ge=1,
        description="Viewers one camera may have at once, every protocol together: WebRTC, MSE and "
        "MJPEG (WebSocket or HTTP), RTSP re-serve and GB/T 28181 live sessions; beyond it the next "
        "is refused (HTTP 503, WebSocket 4503, RTSP 453, SIP 486).",
    )
    max_viewers_total: int = Field(
        default=256, ge=1, description="Viewers the whole service may have at once, every protocol together."
    )
    session_timeout: Seconds = Field(
        default=10.0,
        description="A connected viewer session that stays disconnected (silent) this long is closed.",
    )
    max_viewers_per_user: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description="Viewer sessions one user may hold at once, all cameras: WebRTC (connected or "
        "connecting), MSE, MJPEG and RTSP; beyond it HTTP answers 429.",
    )
    max_viewers_per_user_per_camera: int = Field(
        default=4,
        ge=1,
        le=100_000,
        description="Viewer sessions one user may hold of one camera, every protocol together; "
        "beyond it HTTP answers 429.",
    )
    max_pending_per_camera: int = Field(
        default=8,
        ge=1,
        le=100_000,
        description="WebRTC sessions of one camera answered but not yet connected. They do not take the "
        "camera's viewer slots; beyond this cap the offer is answered 503.",
    )
    max_pending_per_user: int = Field(
        default=32,
        ge=1,
        le=100_000,
        description="WebRTC sessions of one user answered but not yet connected (a whole video wall "
        "opening at once); beyond it the offer is answered 429.",
    )
    max_pending_total: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description="WebRTC sessions of the whole service answered but not yet connected; "
        "beyond it the offer is answered 503.",
    )
    pending_timeout: Seconds = Field(
        default=5.0,
        le=120,
        description="A WebRTC session whose connection (ICE and DTLS) is not up this many seconds "
        "after its offer is closed, freeing its place.",
    )
    max_remote_candidates: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Remote ICE candidates of one viewer session that the service sends connectivity "
        "checks to; further candidates in the offer are dropped.",
    )
    ice_remote_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="When not empty, connectivity checks go only to viewers' candidates inside these "
        "networks (CIDR). Always: only address families the service has host addresses in, never "
        "multicast, unspecified or broadcast addresses, loopback or link-local only when the service "
        "offers such an address itself.",
    )


class IngestSettings(_Model):
    """How cameras are pulled: timeouts, the stall watchdog and the reconnect backoff."""

    connect_timeout: Seconds = Field(
        default=5.0, description="Seconds to open a source (TCP connect and RTSP setup)."
    )
    read_timeout: Seconds = Field(default=5.0, description="Seconds one network read may block.")
    stall_timeout: Seconds = Field(
        default=5.0,
        description="Watchdog: no packet for this many seconds means stalled, and the source reconnects.",
    )
    offline_after: Seconds = Field(
        default=15.0, description="Seconds without a packet after which the camera is reported offline."
    )
    backoff_initial: Seconds = Field(
        default=1.0, description="First wait before reconnecting; doubles each failure."
    )
    backoff_max: Seconds = Field(default=30.0, description="Longest wait between reconnect attempts.")
    backoff_reset_after: Seconds = Field(
        default=30.0,
        description="A run this many seconds long without trouble resets the backoff to its start.",
    )
    keepalive_interval: Seconds = Field(
        default=20.0,
        description="Seconds between RTSP keep-alive requests (must be below the camera's session timeout).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        problem = ingest_order_problem(self.model_dump())
        if problem:
            raise invalid("ingest_order", problem)
        return self


class IngestOverrides(_Model):
    """Per-camera replacements for some :class:`IngestSettings` values; unset keys keep the site value."""

    connect_timeout: Seconds | None = None
    read_timeout: Seconds | None = None
    stall_timeout: Seconds | None = None
    offline_after: Seconds | None = None
    backoff_initial: Seconds | None = None
    backoff_max: Seconds | None = None
    backoff_reset_after: Seconds | None = None
    keepalive_interval: Seconds | None = None


class PictureSettings(_Model):
    """Still pictures decoded from the stream: snapshots and MJPEG."""

    jpeg_quality: int = Field(
        default=80, ge=1, le=100, description="JPEG quality, 1 (smallest) to 100 (best)."
    )
    mjpeg_max_fps: float = Field(
        default=5.0, gt=0, le=30, description="Most frames per second an MJPEG stream sends."
    )
    snapshot_timeout: Seconds = Field(
        default=5.0, description="Seconds to wait for a decodable picture before a snapshot request fails."
    )


class TranscodeSettings(_Model):
    """H.265 cameras for browsers that cannot decode H.265: transcoded to H.264 once per
    camera, only while someone watches, and shared by every viewer and protocol."""

    max_width: int = Field(default=1280, ge=16, le=7680, description="Widest picture sent; never scaled up.")
    max_height: int = Field(default=720, ge=16, le=4320, description="Tallest picture sent; never scaled up.")
    bitrate_kbps: int = Field(default=2000, ge=100, le=50_000, description="H.264 bit rate, kbit/s.")
    keyframe_interval: Seconds = Field(
        default=2.0, description="Longest gap between keyframes, seconds (also at every camera keyframe)."
    )
    idle_timeout: Seconds = Field(
        default=5.0, description="Seconds without a viewer after which the transcoder stops."
    )


class RecordingSettings(_Model):
    """Continuous recording: which cameras by default, how files are cut, how long they stay."""

    record: bool = Field(
        default=False,
        description="Record every camera that does not say otherwise (a camera's own record: wins).",
    )
    stream: Literal["main", "sub"] = Field(
        default="main", description="The stream recorded by default: main, or a camera's sub-stream."
    )
    directory: Path | None = Field(
        default=None,
        description="Where segments are written, <camera>/<date>/<time>.mp4 below it; "
        "empty: recordings/ in server.data_dir.",
    )
    segment_seconds: Seconds = Field(
        default=300.0,
        ge=2,
        le=3600,
        description="Length of one segment file; each is cut at the first keyframe after this long.",
    )
    retention_days: float = Field(
        default=30.0,
        gt=0,
        le=3650,
        allow_inf_nan=False,
        description="Segments older than this many days are deleted (a camera may keep its own).",
    )
    max_bytes: int | None = Field(
        default=None,
        ge=0,
        description="Most bytes all recordings may take; beyond, the oldest segments go first, "
        "whatever their camera. Empty: no limit but min_free_bytes.",
    )
    min_free_bytes: int = Field(
        default=2 * 1024**3,
        ge=0,
        description="Free space to keep on the recordings' file system; below it, the oldest "
        "segments go first, whatever their camera.",
    )


class ExportSettings(_Model):
    """Exports: a recorded range copied into one signed MP4 file for handing over."""

    directory: Path | None = Field(
        default=None,
        description="Where export files and their manifests go; empty: exports/ in server.data_dir.",
    )
    retention_days: float = Field(
        default=30.0,
        gt=0,
        le=3650,
        allow_inf_nan=False,
        description="Exports older than this many days are deleted, file, manifest and entry.",
    )
    max_concurrent: int = Field(
        default=2, ge=1, le=16, description="Exports made at once; more wait their turn."
    )


class AnalysisThresholds(_Model):
    """Thresholds of the picture checks; unset keys keep the built-in values, which come
    from measurements (see ``streams/analysis/verdict.py``)."""

    dark_brightness: float | None = Field(
        default=None, ge=0, le=255, description="Mean luma (0-255) below which the picture is dark."
    )
    dark_ratio: float | None = Field(
        default=None, ge=0, le=1, description="Mean luma against the camera's usual, below which it is dark."
    )
    overexposed_clipped: float | None = Field(
        default=None, gt=0, le=1, description="Share of blown-out pixels above which it is overexposed."
    )
    covered_share: float | None = Field(
        default=None, gt=0, le=1, description="Share of the picture that lost its texture: covered lens."
    )
    blurred_ratio: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Sharpness against the usual, below which it is blurred.",
    )
    frozen_ratio: float | None = Field(
        default=None, gt=0, le=1, description="Change between pictures against the noise, below which frozen."
    )
    moved_in_place: float | None = Field(
        default=None, gt=0, le=1, description="Share of reference features in place, below which it moved."
    )
    moved_ratio: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Features in place against the camera's usual share, below which moved.",
    )
    colour_cast: float | None = Field(
        default=None, gt=0, le=100, description="Cast factor above which the picture is tinted."
    )
    noisy_sigma: float | None = Field(
        default=None, gt=0, le=255, description="Noise in levels above which the picture is noisy or snowy."
    )


class AnalysisSettings(_Model):
    """Picture-quality diagnosis: alarms when a picture goes dark, covered, blurred, frozen,
    moved, tinted or snowy while the camera still sends."""

    enabled: bool = Field(default=True, description="Diagnose every camera that does not say otherwise.")
    interval: Seconds = Field(
        default=2.0, ge=0.2, le=60, description="Seconds between analysed pictures (the camera's keyframes)."
    )
    raise_after: Seconds = Field(
        default=5.0, le=3600, description="Seconds a condition must last before its alarm."
    )
    clear_after: Seconds = Field(
        default=10.0, le=3600, description="Seconds a condition must be gone before it clears."
    )
    thresholds: AnalysisThresholds = Field(default_factory=AnalysisThresholds)


class AnalysisOverrides(_Model):
    """A camera's own diagnosis settings; unset keys keep the site's ``analysis:``."""

    enabled: bool | None = Field(default=None, description="Diagnose this camera; empty: the site's.")
    thresholds: AnalysisThresholds | None = Field(
        default=None, description="Thresholds for this camera; unset keys keep the site's."
    )


class RtspServerSettings(_Model):
    """RTSP re-serve: the cameras as ``rtsp://host:port/<camera>[/sub]`` for NVRs, VLC and FFmpeg."""

    enabled: bool = Field(default=False, description="Serve RTSP (off unless a site asks for it).")
    bind: IPvAnyAddress = Field(default="0.0.0.0", description="Address the RTSP server listens on.")  # type: ignore[assignment]
    port: int = Field(default=8554, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    udp: bool = Field(default=True, description="Also offer RTP over UDP (a port pair picked at start).")
    session_timeout: Seconds = Field(
        default=60.0, description="Seconds a UDP session lives without a keep-alive from its client."
    )
