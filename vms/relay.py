"""Turns the configuration into the media plane's terms and builds the stream manager.

The only place where configuration models meet ``streams``: secrets leave their
``SecretStr`` here, on their way to the source that needs them, and nowhere else.
"""

from __future__ import annotations

from streams import (
    AnalysisSpec,
    CameraSpec,
    IceServer,
    IngestPolicy,
    RecordingSpec,
    RelaySettings,
    SourceOptions,
    StreamManager,
    Thresholds,
    TranscodeSettings,
)
from vms.config import Camera, Config


def analysis_spec(config: Config, camera: Camera) -> AnalysisSpec | None:
    """The camera's diagnosis settings (site's, then the camera's own thresholds), or None."""
    if not config.analyses(camera):
        return None
    site = config.analysis
    thresholds = site.thresholds.model_dump(exclude_none=True)
    if camera.analysis is not None and camera.analysis.thresholds is not None:
        thresholds |= camera.analysis.thresholds.model_dump(exclude_none=True)
    return AnalysisSpec(
        interval=site.interval,
        raise_after=site.raise_after,
        clear_after=site.clear_after,
        thresholds=Thresholds(**thresholds),
        jpeg_quality=config.pictures.jpeg_quality,
    )


def camera_spec(config: Config, camera: Camera) -> CameraSpec:
    ingest = config.ingest_for(camera.id)
    creds = camera.credentials
    hall = config.hall(camera.hall)
    password = creds.password if creds else camera.token

    def source(url: str, label: str) -> SourceOptions:
        return SourceOptions(
            url=url,
            transport=camera.transport,
            username=creds.username if creds else None,
            password=password.get_secret_value() if password else None,
            connect_timeout=ingest.connect_timeout,
            read_timeout=ingest.read_timeout,
            keepalive_interval=ingest.keepalive_interval,
            label=label,
            audio=camera.audio,
            ice_servers=ice_servers(config),
            ice_host_addresses=tuple(str(a) for a in config.webrtc.ice_host_addresses),
        )

    label = f"{hall.id} / {camera.id}"
    return CameraSpec(
        id=camera.id,
        enabled=camera.enabled,
        source=source(camera.url, label),
        sub_source=source(camera.sub_url, f"{label} (sub)") if camera.sub_url else None,
        policy=IngestPolicy(
            stall_timeout=ingest.stall_timeout,
            first_packet_timeout=ingest.connect_timeout + ingest.stall_timeout,
            # Opening includes the service's own start-up work (a demo card's first encode
            # queues behind the others on a busy machine): never less than the built-in bound.
            open_timeout=max(IngestPolicy().open_timeout, ingest.connect_timeout + ingest.offline_after),
            backoff_initial=ingest.backoff_initial,
            backoff_max=ingest.backoff_max,
            backoff_reset_after=ingest.backoff_reset_after,
            on_demand=camera.on_demand,
            idle_timeout=camera.idle_timeout,
        ),
        recording=(
            RecordingSpec(
                directory=config.recordings_dir() / camera.id,
                segment_seconds=config.recording.segment_seconds,
                stream=config.record_stream(camera),
            )
            if config.records(camera)
            else None
        ),
        analysis=analysis_spec(config, camera),
    )


def ice_servers(config: Config) -> tuple[IceServer, ...]:
    """The STUN/TURN servers of the service's ICE agents: for viewers and for WHEP cameras."""
    return tuple(
        IceServer(
            urls=tuple(server.urls),
            username=server.username,
            credential=server.credential.get_secret_value() if server.credential else None,
        )
        for server in config.webrtc.ice_servers
    )


def relay_settings(config: Config) -> RelaySettings:
    webrtc, transcode = config.webrtc, config.transcode
    return RelaySettings(
        ice_servers=list(ice_servers(config)),
        ice_host_addresses=[str(a) for a in webrtc.ice_host_addresses],
        max_viewers_per_camera=webrtc.max_viewers_per_camera,
        max_viewers_total=webrtc.max_viewers_total,
        session_timeout=webrtc.session_timeout,
        max_viewers_per_user=webrtc.max_viewers_per_user,
        max_viewers_per_user_per_camera=webrtc.max_viewers_per_user_per_camera,
        max_pending_per_camera=webrtc.max_pending_per_camera,
        max_pending_per_user=webrtc.max_pending_per_user,
        max_pending_total=webrtc.max_pending_total,
        pending_timeout=webrtc.pending_timeout,
        max_remote_candidates=webrtc.max_remote_candidates,
        ice_remote_networks=[str(n) for n in webrtc.ice_remote_networks],
        jpeg_quality=config.pictures.jpeg_quality,
        mjpeg_max_fps=config.pictures.mjpeg_max_fps,
        snapshot_timeout=config.pictures.snapshot_timeout,
        transcode=TranscodeSettings(
            max_width=transcode.max_width,
            max_height=transcode.max_height,
            bitrate=transcode.bitrate_kbps * 1000,
            keyframe_interval=transcode.keyframe_interval,
            idle_timeout=transcode.idle_timeout,
        ),
    )


def build_manager(config: Config) -> StreamManager:
    return StreamManager([camera_spec(config, cam) for cam in config.cameras], relay_settings(config))
