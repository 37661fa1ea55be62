"""The configuration models: what a Hallwatch site file may say, and the checks across it.

One YAML file describes the site (see ``default_config.yaml`` next to this module,
which doubles as the annotated example). These pydantic models are its schema (the
sections of the media plane are in :mod:`vms.config_media`, those of storage and access
in :mod:`vms.config_access`): every model forbids unknown keys and is frozen,
credentials are ``SecretStr``, and timeouts and backoff are fields so tests tune them
instead of patching.

Reading the file and turning validation errors into messages that name a line is
:mod:`vms.config_loader`'s job. Cross-references (a camera in an unknown hall, a
duplicate id), checked by :mod:`vms.config_checks`, are raised by :class:`Config`
as one ``config_inconsistent`` error whose context lists each ``Inconsistency``
with the location of the offending item, so the loader can point at its line.

Pure data, no I/O: any thread may read a loaded config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    IPvAnyNetwork,
    SecretStr,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from vms.config_access import AuditSettings, AuthSettings, DatabaseSettings, MetricsSettings
from vms.config_checks import WHEP_SCHEMES, check_source_url, inconsistencies, invalid
from vms.config_cluster import ClusterSettings
from vms.config_gb28181 import Gb28181Settings, gb28181_problems
from vms.config_media import (
    AnalysisOverrides,
    AnalysisSettings,
    ExportSettings,
    IngestOverrides,
    IngestSettings,
    PictureSettings,
    RecordingSettings,
    RtspServerSettings,
    Seconds,
    TranscodeSettings,
    WebRtcSettings,
)
from vms.config_webhook import WebhookSettings

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
"""An id: 1-64 lowercase letters, digits, ``-`` or ``_``, starting with a letter or digit."""

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _Model(BaseModel):
    # Inputs stay out of ValidationError's text: a URL or a password must never be echoed.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class ServerSettings(_Model):
    """The HTTP server and where the service keeps its files."""

    host: Text = Field(
        default="127.0.0.1", description="Address to listen on; 0.0.0.0 listens on every interface."
    )
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port to listen on; 0 picks a free port.")
    data_dir: Path = Field(
        default=Path("data"),
        description="Directory for recordings, the user store and audit logs; "
        "a relative path is taken from the working directory.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="Least severe level that is logged."
    )
    store_marker: Path | None = Field(
        default=None,
        description="A file outside the data directory (another disk, /etc) that keeps the store's "
        "identity, so that a start over a removed data directory is refused instead of creating "
        "new first administrators; a marker inside the data directory is always kept.",
    )
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="Reverse proxies (addresses or networks) whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed; from any other client they are ignored. Empty: "
        "no proxy, every client's own address is the one recorded.",
    )
    header_timeout: Seconds = Field(
        default=10.0,
        description="Seconds a client has to send a request's head (request line and headers); "
        "a connection that takes longer is closed.",
    )
    body_timeout: Seconds = Field(
        default=30.0,
        description="Seconds a client has to send a request's body once its head is in.",
    )
    write_timeout: Seconds = Field(
        default=10.0,
        description="Seconds a client may leave what is sent to it unread (its connection's send "
        "buffers full) before the connection is closed: a frozen MJPEG, MSE or alarm viewer is "
        "let go and its viewing recorded.",
    )
    max_connections: int = Field(
        default=2000,
        ge=16,
        le=1_000_000,
        description="Most connections open at once (also kept below the process's file limit). "
        "At the cap, a new connection replaces the oldest one still waiting for a request, "
        "else it is closed at once.",
    )
    max_connections_per_address: int = Field(
        default=200,
        ge=1,
        le=1_000_000,
        description="Most connections open at once from one client address (trusted proxies "
        "excepted); a dashboard with 16 tiles holds about 20.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


def _centre_halls_shape(value: Any) -> str:
    return "all" if isinstance(value, str) else "list"


class Centre(_Model):
    """A monitoring centre and the halls its users may see."""

    id: Slug = Field(description="Stable id used in URLs and user records.")
    name: Text = Field(description="Display name.")
    halls: Annotated[
        Annotated[list[Slug], Tag("list")] | Annotated[Literal["all"], Tag("all")],
        Discriminator(_centre_halls_shape),
    ] = Field(default="all", description="The word all, or a list of hall ids.")
    webhook: WebhookSettings | None = Field(
        default=None,
        description="Also post the alarms of the centre's halls to this address (its duty phone "
        "system or its own platform), whether or not a dashboard is open.",
    )

    @field_validator("halls", mode="before")
    @classmethod
    def _all_or_list(cls, value: object) -> object:
        if isinstance(value, str) and value != "all":
            raise invalid(
                "centre_halls",
                f"expected the word all or a list of hall ids, found {value[:40]!r}; "
                f"write halls: all, or halls: [{value[:40]}] for a single hall",
            )
        if not isinstance(value, str | list):
            raise invalid("centre_halls", "expected the word all or a list of hall ids, e.g. [tax, police]")
        return value


class Hall(_Model):
    """A branch hall: the place cameras belong to."""

    id: Slug = Field(description="Stable id used in URLs and camera entries.")
    name: Text = Field(description="Display name.")
    department: str = Field(default="", description="The department that supervises the hall.")
    plate: str = Field(
        default="",
        max_length=64,
        description="The hall's second name plate, shown under its name, e.g. 兴宁市政务服务中心税务分厅 "
        "(a branch hall of a government service centre). Empty for none.",
    )


class Credentials(_Model):
    """RTSP login. Kept out of the URL so that it never reaches a log line."""

    username: Text
    password: SecretStr


class Camera(_Model):
    """One video source, pulled once and served to every viewer."""

    id: Slug = Field(description="Stable id used in URLs.")
    name: Text = Field(description="Display name.")
    hall: Slug = Field(description="Id of the hall the camera is in.")
    url: str = Field(
        description="rtsp://, rtsps://, whep://, wheps://, file:///path or demo://name; no credentials in it."
    )
    sub_url: str | None = Field(
        default=None,
        description="A second, smaller stream of the same camera (same credentials and transport): "
        "wall tiles play it, full screen plays url.",
    )
    transport: Literal["tcp", "udp"] = Field(default="tcp", description="RTSP transport (rtsp/rtsps only).")
    enabled: bool = Field(default=True, description="A disabled camera is listed but never pulled.")
    on_demand: bool = Field(
        default=False,
        description="Pull the camera only while someone here watches it (or records it: a recorded "
        "camera is pulled always), for a camera that is another Hallwatch's RTSP re-serve or WHEP endpoint.",
    )
    idle_timeout: Seconds = Field(
        default=10.0, description="An on_demand camera is disconnected this long after its last viewer."
    )
    audio: bool = Field(
        default=False,
        description="Relay the camera's sound too. Off by default: halls are public spaces, and "
        "recording or relaying speech needs a policy. G.711 and Opus go to WebRTC as they are; "
        "AAC goes to MSE as it is and to WebRTC transcoded to Opus.",
    )
    credentials: Credentials | None = Field(default=None, description="RTSP user name and password.")
    token: SecretStr | None = Field(
        default=None,
        description="whep:// and wheps:// only: the API token sent as the bearer token of the WHEP "
        "requests (for another Hallwatch, a token of a user who may watch the camera there).",
    )
    ingest: IngestOverrides | None = Field(
        default=None, description="Replaces some of the site's ingest settings."
    )
    record: bool | None = Field(
        default=None, description="Record this camera continuously; empty: the site's recording.record."
    )
    record_stream: Literal["main", "sub"] | None = Field(
        default=None,
        description="Which stream to record; empty: the site's recording.stream. sub needs sub_url.",
    )
    retention_days: float | None = Field(
        default=None,
        gt=0,
        le=3650,
        allow_inf_nan=False,
        description="Keep this camera's recordings this many days; "
        "empty: the site's recording.retention_days.",
    )
    analysis: AnalysisOverrides | None = Field(
        default=None, description="Replaces some of the site's picture-diagnosis settings."
    )

    @field_validator("url", "sub_url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        if url is not None:
            check_source_url(url)
        return url

    @model_validator(mode="after")
    def _credentials_need_rtsp(self) -> Self:
        if self.credentials is not None and self.scheme in WHEP_SCHEMES:
            raise invalid(
                "credentials_unused",
                f"a {self.scheme}:// camera logs in with an API token, not credentials; "
                "write token: ... instead of credentials:",
            )
        if self.credentials is not None and self.scheme not in ("rtsp", "rtsps"):
            raise invalid(
                "credentials_unused",
                f"credentials are only used by rtsp:// and rtsps:// cameras, this one is {self.scheme}://; "
                "remove credentials: or fix the url",
            )
        return self

    @model_validator(mode="after")
    def _token_needs_whep(self) -> Self:
        whep = self.scheme in WHEP_SCHEMES
        if self.token is not None and not whep:
            raise invalid(
                "token_unused",
                f"token is only used by whep:// and wheps:// cameras, this one is {self.scheme}://; "
                "remove token: or fix the url",
            )
        if whep and self.audio:
            raise invalid(
                "whep_audio",
                "audio is not pulled over WHEP; remove audio: true, or pull the upstream's RTSP "
                "re-serve (rtsp://) for its sound",
            )
        return self

    @model_validator(mode="after")
    def _sub_stream_to_record(self) -> Self:
        if self.record_stream == "sub" and self.sub_url is None:
            raise invalid(
                "record_stream_missing",
                "record_stream: sub needs the camera's sub_url; add sub_url or record the main stream",
            )
        return self

    @property
    def scheme(self) -> str:
        """The URL scheme in lower case: rtsp, rtsps, whep, wheps, file or demo."""
        return urlsplit(self.url).scheme.lower()

    @property
    def redacted_url(self) -> str:
        """The URL without any ``user:password@`` part: safe for logs and API answers."""
        return _without_userinfo(self.url)


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


class Config(_Model):
    """The whole site: service settings, centres, halls and cameras."""

    server: ServerSettings = Field(default_factory=ServerSettings)
    webrtc: WebRtcSettings = Field(default_factory=WebRtcSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    pictures: PictureSettings = Field(default_factory=PictureSettings)
    transcode: TranscodeSettings = Field(default_factory=TranscodeSettings)
    recording: RecordingSettings = Field(default_factory=RecordingSettings)
    exports: ExportSettings = Field(default_factory=ExportSettings)
    analysis: AnalysisSettings = Field(default_factory=AnalysisSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    rtsp_server: RtspServerSettings = Field(default_factory=RtspServerSettings)
    centres: list[Centre] = Field(default_factory=list, description="Monitoring centres.")
    halls: list[Hall] = Field(default_factory=list, description="Branch halls.")
    cameras: list[Camera] = Field(default_factory=list, description="Video sources.")
    gb28181: Gb28181Settings = Field(
        default_factory=Gb28181Settings,
        description="GB/T 28181 cascade: the superior platforms this site registers with "
        "as a lower platform.",
    )
    cluster: ClusterSettings | None = Field(
        default=None,
        description="Run as one of several instances sharing the cameras through a PostgreSQL "
        "database; empty (or on SQLite): this instance owns every camera.",
    )

    @model_validator(mode="after")
    def _cross_check(self) -> Self:
        problems = inconsistencies(self) + gb28181_problems(self)
        if problems:
            raise PydanticCustomError(
                "config_inconsistent",
                "{summary}",
                {"summary": "; ".join(p.message for p in problems), "problems": tuple(problems)},
            )
        return self

    def camera(self, camera_id: str) -> Camera:
        """The camera with this id; ``KeyError`` if there is none."""
        for camera in self.cameras:
            if camera.id == camera_id:
                return camera
        raise KeyError(camera_id)

    def hall(self, hall_id: str) -> Hall:
        """The hall with this id; ``KeyError`` if there is none."""
        for hall in self.halls:
            if hall.id == hall_id:
                return hall
        raise KeyError(hall_id)

    def centre(self, centre_id: str) -> Centre:
        """The centre with this id; ``KeyError`` if there is none."""
        for centre in self.centres:
            if centre.id == centre_id:
                return centre
        raise KeyError(centre_id)

    def halls_for_centre(self, centre_id: str) -> list[Hall]:
        """The halls a centre may see, in the order of ``halls:``; ``KeyError`` for an unknown centre."""
        selection = self.centre(centre_id).halls
        if selection == "all":
            return list(self.halls)
        return [hall for hall in self.halls if hall.id in selection]

    def cameras_in_hall(self, hall_id: str) -> list[Camera]:
        """The cameras of one hall, in config order."""
        return [camera for camera in self.cameras if camera.hall == hall_id]

    def records(self, camera: Camera) -> bool:
        """Whether the camera is recorded: its own ``record``, else the site's; never when disabled."""
        wanted = self.recording.record if camera.record is None else camera.record
        return wanted and camera.enabled

    def record_stream(self, camera: Camera) -> Literal["main", "sub"]:
        """The recorded stream; with the site's ``stream: sub``, a camera without a
        sub-stream records its main one."""
        stream = camera.record_stream or self.recording.stream
        return stream if camera.sub_url is not None else "main"

    def analyses(self, camera: Camera) -> bool:
        """Whether the camera's pictures are diagnosed: its own ``analysis.enabled``, else the
        site's; an on-demand camera only by its own (diagnosis would keep it pulled, and the
        instance it comes from diagnoses it already)."""
        own = camera.analysis.enabled if camera.analysis is not None else None
        if own is None:
            return self.analysis.enabled and not camera.on_demand
        return own

    def recordings_dir(self) -> Path:
        """The recordings' root: ``recording.directory`` or ``data_dir/recordings``."""
        return self.recording.directory or self.server.data_dir / "recordings"

    def exports_dir(self) -> Path:
        """Where exports go: ``exports.directory`` or ``data_dir/exports``."""
        return self.exports.directory or self.server.data_dir / "exports"

    def retention_for(self, camera: Camera) -> float:
        """Days this camera's recordings are kept."""
        return camera.retention_days or self.recording.retention_days

    def ingest_for(self, camera_id: str) -> IngestSettings:
        """The site's ingest settings with this camera's overrides applied."""
        overrides = self.camera(camera_id).ingest
        if overrides is None:
            return self.ingest
        merged = self.ingest.model_dump() | overrides.model_dump(exclude_none=True)
        return IngestSettings.model_validate(merged)
