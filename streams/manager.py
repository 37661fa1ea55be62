"""The face of the media plane: cameras in, subscriptions and statistics out.

:class:`StreamManager` owns, per camera (:mod:`streams.camera`), one or two pulled
streams (the main stream and, if the camera has one, a smaller sub-stream), each
with its own hub, ingest and outputs (picture output, on-demand H.264 transcoder,
and whatever else registers in :data:`~streams.outputs.base.OUTPUTS`), and owns the
WebRTC, MSE and RTSP outputs shared by all cameras, the viewer ledger every live
output takes its viewers' seats from (:attr:`StreamManager.viewers`: one count of
viewers per camera, in total and per user, whatever the protocol), and the memory
trimmer that gives freed memory back to the system when the last viewer has left
(:mod:`streams.memory`). The control plane (``vms``) builds it from
its configuration, starts and stops it from the app's lifespan, and asks it for
viewer sessions, pictures and statistics.

Which hub a viewer gets: the stream it asked for (main or sub); if that stream
is H.265 and the viewer cannot decode H.265 (every WebRTC viewer, and MSE
viewers whose browser says so), the stream's transcoder, which runs once per
stream while anyone watches it, whatever the protocol.

A camera configured with audio has, per stream, an audio hub beside the video
hub. WebRTC viewers get Opus and G.711 as they are and AAC through the stream's
AAC-to-Opus transcoder (once per stream, while anyone listens); MSE viewers get
AAC in the same fragmented MP4 as the video.

Where each camera is pulled from (its own source, the instance that owns it, or
nowhere) is :mod:`streams.upstream`'s; :meth:`StreamManager.repoint` switches it.

Event loop only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from aiortc import RTCIceServer

from streams.analysis.output import AnalysisOutput as AnalysisOutput  # registers the "analysis" output
from streams.camera import Camera, CameraStream
from streams.errors import StreamError
from streams.hub import Hub
from streams.ingest import IngestState, StateListener
from streams.memory import MemoryTrimmer
from streams.outputs.base import OUTPUTS, OutputRegistry, Statistic, output_of
from streams.outputs.mse import MseOutput, MseSession
from streams.outputs.pictures import MjpegFeed
from streams.recording import Recorder as Recorder  # registers the "recorder" output
from streams.rtsp_server.output import RtspOutput
from streams.specs import (
    CameraSpec,
    CameraStats,
    RelaySettings,
    StreamName,
    SubStreamStats,
)
from streams.upstream import Upstream
from streams.viewers import ViewerLedger, ViewerLimits
from streams.webrtc.output import CandidatePolicy, WebRtcOutput, WhepSession

__all__ = ["StreamManager", "UnknownCamera"]

T = TypeVar("T")


class UnknownCamera(StreamError):
    """No camera with that id is configured."""


class StreamManager:
    """Starts one ingest per camera stream and serves their hubs. See the module docstring."""

    def __init__(
        self,
        cameras: Sequence[CameraSpec],
        settings: RelaySettings | None = None,
        *,
        outputs: OutputRegistry = OUTPUTS,
    ) -> None:
        """``outputs``: what each camera stream feeds besides viewers; the registered
        outputs by default (a test may add its own to a registry of its own)."""
        self.settings = settings or RelaySettings()
        self._listeners: list[StateListener] = []
        self._session_listeners: list[Callable[[WhepSession], None]] = []
        self._output_listeners: list[Callable[[str, object], None]] = []
        self._cameras = {
            spec.id: Camera(spec, self.settings, self._on_state, outputs, self._on_output_event, self._holds)
            for spec in cameras
        }
        self.holds: Callable[[str], bool] = lambda camera_id: True
        """Whether this instance may still write what it records of a camera now: in a
        cluster, whether it holds the camera's lease. Its recorder asks before each write;
        event loop."""
        self.viewers = ViewerLedger(
            ViewerLimits(
                max_per_camera=self.settings.max_viewers_per_camera,
                max_total=self.settings.max_viewers_total,
                max_per_owner=self.settings.max_viewers_per_user,
                max_per_owner_per_camera=self.settings.max_viewers_per_user_per_camera,
                max_pending_per_camera=self.settings.max_pending_per_camera,
                max_pending_per_owner=self.settings.max_pending_per_user,
                max_pending_total=self.settings.max_pending_total,
            )
        )
        """Every viewer's seat, whatever the protocol (:mod:`streams.viewers`); a GB/T 28181
        :class:`~streams.outputs.ps_sender.PsOutput` of the control plane seats its sessions here too."""
        self.webrtc = WebRtcOutput(
            ice_servers=[
                RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                for s in self.settings.ice_servers
            ],
            ice_host_addresses=list(self.settings.ice_host_addresses) or None,
            viewers=self.viewers,
            pending_timeout=self.settings.pending_timeout,
            candidates=CandidatePolicy(
                max_candidates=self.settings.max_remote_candidates,
                networks=tuple(ipaddress.ip_network(n) for n in self.settings.ice_remote_networks),
            ),
            info_timeout=self.settings.info_timeout,
            disconnect_grace=self.settings.session_timeout,
            on_end=self._on_session_end,
        )
        self.mse = MseOutput(viewers=self.viewers)
        self.rtsp = RtspOutput(self.viewers)
        """RTSP re-serve sessions (served by :class:`~streams.rtsp_server.server.RtspServer`)."""
        self.trimmer = MemoryTrimmer(
            self.viewer_count,
            settle=self.settings.trim_settle,
            follow_up=self.settings.trim_follow_up,
            idle_interval=self.settings.trim_idle_interval,
        )
        """Gives freed memory back to the system once nobody watches (:mod:`streams.memory`)."""
        self._started = False
        self.started_at: float | None = None

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.started_at = time.time()
        for cam in self._cameras.values():
            for stream in cam.streams:
                await stream.start()
            await cam.pull.start()
        self.trimmer.start()

    async def stop(self) -> None:
        """Stop every viewer, output, transcoder and ingest; idempotent."""
        if not self._started:
            return
        self._started = False
        await self.trimmer.stop()
        await self.webrtc.stop()
        await self.mse.stop()
        await self.rtsp.stop()
        await asyncio.gather(*(stream.stop() for cam in self._cameras.values() for stream in cam.streams))

    @property
    def running(self) -> bool:
        """True while started and every enabled camera's ingest tasks are alive."""
        return self._started and all(
            stream.ingest.running
            for cam in self._cameras.values()
            if cam.spec.enabled
            for stream in cam.streams
        )

    # -- events -------------------------------------------------------------------

    def add_listener(self, listener: StateListener) -> None:
        """Be told of every camera state change (on the event loop). A camera's state is
        its main stream's; a sub-stream's state shows in its statistics only."""
        self._listeners.append(listener)

    def add_session_listener(self, listener: Callable[[WhepSession], None]) -> None:
        """Be told when a WebRTC session ends, after its resources are freed (on the event loop)."""
        self._session_listeners.append(listener)

    def add_output_listener(self, listener: Callable[[str, object], None]) -> None:
        """Be told ``(camera_id, event)`` of what stream outputs report, such as a recorded
        segment closed (on the event loop)."""
        self._output_listeners.append(listener)

    def _holds(self, camera_id: str) -> bool:
        return self.holds(camera_id)

    def _on_output_event(self, camera_id: str, event: object) -> None:
        for listener in list(self._output_listeners):
            listener(camera_id, event)

    def _on_session_end(self, session: WhepSession) -> None:
        for listener in list(self._session_listeners):
            listener(session)

    def _on_state(self, camera_id: str, old: IngestState, new: IngestState, error: str | None) -> None:
        for listener in list(self._listeners):
            listener(camera_id, old, new, error)

    # -- cameras ------------------------------------------------------------------

    def camera_ids(self) -> list[str]:
        return list(self._cameras)

    def _camera(self, camera_id: str) -> Camera:
        try:
            return self._cameras[camera_id]
        except KeyError:
            raise UnknownCamera(f"no camera {camera_id!r}") from None

    def hub(self, camera_id: str, stream: StreamName = "main") -> Hub:
        return self._camera(camera_id).stream(stream).hub

    def has_sub_stream(self, camera_id: str) -> bool:
        return self._camera(camera_id).sub is not None

    async def repoint(self, camera_id: str, upstream: Upstream) -> None:
        """Pull the camera from ``upstream`` from now on: :data:`~streams.upstream.OWN` (this
        instance owns it; the default), ``Upstream.of(peer)`` (the peer owns it) or
        :data:`~streams.upstream.NOWHERE`. Its viewers stay (see :mod:`streams.upstream`)."""
        await self._camera(camera_id).pull.repoint(upstream, running=self._started)

    def upstream(self, camera_id: str) -> Upstream:
        """Where the camera is pulled from now."""
        return self._camera(camera_id).pull.upstream

    def stats(self, camera_id: str) -> CameraStats:
        cam = self._camera(camera_id)
        main = cam.main
        ingest, hub = main.ingest, main.hub
        fps, bitrate = _rates(main)
        info = hub.info
        webrtc_viewers = self.webrtc.session_count(camera_id)
        mse_viewers = self.mse.session_count(camera_id)
        rtsp_viewers = self.rtsp.session_count(camera_id)
        mjpeg_viewers = sum(stream.pictures.viewer_count for stream in cam.streams)
        gb28181_viewers = self.viewers.count(camera_id=camera_id, protocol="gb28181")
        upstream = cam.pull.upstream
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
            viewers=webrtc_viewers + mjpeg_viewers + mse_viewers + rtsp_viewers + gb28181_viewers,
            webrtc_viewers=webrtc_viewers,
            mjpeg_viewers=mjpeg_viewers,
            mse_viewers=mse_viewers,
            rtsp_viewers=rtsp_viewers,
            gb28181_viewers=gb28181_viewers,
            reorders=hub.reorders,
            transcoding=any(t.running for stream in cam.streams for t in stream.transcoders),
            transcoder_starts=sum(t.starts for stream in cam.streams for t in stream.transcoders),
            audio=main.audio_hub.audio.codec if main.audio_hub and main.audio_hub.audio else None,
            sub=self._sub_stats(cam),
            upstream=upstream.kind,
            peer=upstream.peer.instance if upstream.peer is not None else None,
        )

    def _sub_stats(self, cam: Camera) -> SubStreamStats | None:
        sub = cam.sub
        if sub is None:
            return None
        info = sub.hub.info
        return SubStreamStats(
            state=sub.ingest.state,
            fps=round(_rates(sub)[0], 2),
            codec=info.codec if info else None,
            width=info.width if info else None,
            height=info.height if info else None,
            sessions_opened=sub.ingest.sessions_opened,
            reconnects=sub.ingest.reconnects,
            last_error=sub.ingest.last_error,
            viewers=_viewers_of(sub, self.webrtc, self.mse),
        )

    def output_statistics(self, camera_id: str) -> dict[str, dict[str, dict[str, Statistic]]]:
        """Each output's :meth:`~streams.outputs.base.StreamOutput.statistics`, by stream
        (``main``, ``sub``) and kind."""
        cam = self._camera(camera_id)
        return {
            stream.kind: {kind: output.statistics() for kind, output in stream.outputs.items()}
            for stream in cam.streams
        }

    def statistics_of(self, kind: str) -> dict[str, dict[str, Statistic]]:
        """The statistics of every camera's output of ``kind`` (``recorder``...), by camera;
        cameras without one are left out (a camera records one of its streams at most)."""
        return {
            camera_id: output.statistics()
            for camera_id, cam in self._cameras.items()
            for stream in cam.streams
            if (output := stream.outputs.get(kind)) is not None
        }

    def output(self, camera_id: str, kind: str, cls: type[T]) -> T | None:
        """The camera's output of ``kind``, on whichever of its streams has one, or None."""
        for stream in self._camera(camera_id).streams:
            found = output_of(stream.outputs, kind, cls)
            if found is not None:
                return found
        return None

    def all_stats(self) -> list[CameraStats]:
        return [self.stats(cid) for cid in self._cameras]

    # -- viewers ------------------------------------------------------------------

    def viewer_count(self) -> int:
        """Viewers of every camera and protocol; WebRTC sessions still closing count."""
        pictures = sum(
            stream.pictures.viewer_count for cam in self._cameras.values() for stream in cam.streams
        )
        return (
            self.webrtc.busy_count()
            + self.mse.session_count()
            + self.rtsp.session_count()
            + self.viewers.count(protocol="gb28181")
            + pictures
        )

    async def _playable(self, camera_id: str, stream: StreamName, *, h265: bool) -> Hub:
        """The hub a viewer of ``stream`` gets: the stream itself, or its H.264 transcode
        when the stream is H.265 and the viewer cannot decode that."""
        cam = self._camera(camera_id)
        await cam.pull.wait_pulled(self.settings.info_timeout)
        source = cam.stream(stream)
        info = await source.hub.described(self.settings.info_timeout)
        if info.codec == "h265" and not h265:
            return source.transcoder.output
        return source.hub

    async def whep_offer(
        self, camera_id: str, offer_sdp: str, stream: StreamName = "main", *, owner: str | None = None
    ) -> WhepSession:
        """Answer a WHEP offer. ``owner`` is an opaque key of the asking user, for the
        per-user caps (:class:`~streams.errors.OwnerCapacityError`)."""
        hub = await self._playable(camera_id, stream, h265=False)
        audio = self._camera(camera_id).stream(stream).webrtc_audio()
        return await self.webrtc.create_session(camera_id, hub, offer_sdp, audio, owner=owner)

    async def whep_close(self, session_id: str) -> bool:
        return await self.webrtc.close_session(session_id)

    async def mse_session(
        self,
        camera_id: str,
        stream: StreamName = "main",
        *,
        h265: bool = False,
        audio: bool = True,
        owner: str | None = None,
    ) -> MseSession:
        """An MSE viewer session. ``h265``: the viewer's browser decodes H.265 (``hvc1``);
        ``audio``: it plays AAC, so the camera's sound (if relayed) may come along;
        ``owner``: as for :meth:`whep_offer`."""
        hub = await self._playable(camera_id, stream, h265=h265)
        audio_hub = self._camera(camera_id).stream(stream).audio_hub if audio else None
        return self.mse.open(camera_id, hub, audio_hub, owner=owner)

    def rtsp_media(self, camera_id: str, stream: StreamName = "main") -> tuple[Hub, Hub | None]:
        """The hubs an RTSP client gets: the stream's own video, as the camera sends it, and
        its audio hub when the camera's sound is relayed. Raises
        :class:`~streams.upstream.CameraUnowned` while nobody pulls the camera."""
        cam = self._camera(camera_id)
        cam.pull.check_pulled()
        source = cam.stream(stream)
        return source.hub, source.audio_hub

    async def snapshot(self, camera_id: str) -> bytes:
        cam = self._camera(camera_id)
        await cam.pull.wait_pulled(self.settings.snapshot_timeout)
        return await cam.main.pictures.snapshot(timeout=self.settings.snapshot_timeout)

    def mjpeg(self, camera_id: str, stream: StreamName = "main", *, owner: str | None = None) -> MjpegFeed:
        """An MJPEG viewer's pictures, seated now (so a full camera refuses it with
        :class:`~streams.errors.CapacityError` before anything is sent); ``owner``: as for
        :meth:`whep_offer`."""
        pictures = self._camera(camera_id).stream(stream).pictures
        seat = self.viewers.admit(camera_id, "mjpeg", owner)
        return MjpegFeed(pictures.mjpeg(), self.viewers, seat)


def _rates(stream: CameraStream) -> tuple[float, float]:
    if stream.ingest.state is not IngestState.ONLINE:
        return 0.0, 0.0
    return stream.hub.stats.rates()


def _viewers_of(stream: CameraStream, webrtc: WebRtcOutput, mse: MseOutput) -> int:
    hubs = (stream.hub, stream.transcoder.output)
    return (
        sum(1 for s in webrtc.sessions() if s.stream in hubs)
        + sum(1 for s in mse.sessions() if s.hub in hubs)
        + stream.pictures.viewer_count
    )
