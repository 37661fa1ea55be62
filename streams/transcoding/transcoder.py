"""H.264 for cameras whose codec a viewer cannot play: one transcode per camera, only while watched.

A :class:`Transcoder` sits on a camera's :class:`~streams.hub.Hub` (typically H.265,
which WebRTC cannot carry and many browsers cannot play over MSE) and owns an output
hub of H.264 Constrained Baseline without B-frames, which WebRTC, MSE and MJPEG
can all use. The output hub's first subscriber starts the worker, whoever
subscribes (:meth:`Transcoder.subscribe`, or an output handed the hub itself);
the worker stops by itself once the output hub has had no subscriber for
``idle_timeout`` seconds, and the next subscriber starts it again. However many
viewers, there is one worker per camera.

The worker subscribes to the source hub (starting at its cached keyframe),
decodes whatever codec the packets say, scales down to fit ``max_width`` x
``max_height`` (keeping the aspect ratio, never up, even dimensions) and encodes
with libx264 (ultrafast, zerolatency). It forces a keyframe at every source
keyframe and at the first frame ``keyframe_interval`` seconds or more after the
last one, and every keyframe carries SPS/PPS in-band. Output packets keep the
source packets' ``pts`` and ``received`` times (after a restart the output hub
shifts ``pts`` by a constant, so that its timeline never goes back).

Lifecycle, threads and queueing are :class:`~streams.transcoding.on_demand.OnDemandWorker`'s:
the public API, the output hub and every counter belong to the event loop;
decoding, scaling and encoding block, so they run in one thread per running
transcoder, which alone touches the codec contexts
(:mod:`streams.transcoding.pipeline`). A packet the decoder rejects costs the rest
of its GOP, never the worker; a source reconnect (a hub discontinuity) is just a
new keyframe to the worker.
"""

from __future__ import annotations

from streams.hub import Hub
from streams.outputs.base import OUTPUTS, StreamContext
from streams.transcoding.on_demand import DEFAULT_QUEUE_PACKETS, DEFAULT_RESTART_DELAY, OnDemandWorker
from streams.transcoding.pipeline import Pipeline, PipelineSettings, fit_size

__all__ = ["DEFAULT_QUEUE_PACKETS", "DEFAULT_RESTART_DELAY", "Transcoder", "fit_size"]


class Transcoder(OnDemandWorker):
    """One camera's H.264 transcode, running only while someone watches. See the module docstring."""

    _kind = "transcoder"
    _thread_prefix = "transcode"

    def __init__(
        self,
        source: Hub,
        *,
        name: str,
        max_width: int,
        max_height: int,
        bitrate: int,
        keyframe_interval: float = 2.0,
        idle_timeout: float = 2.0,
        queue_packets: int = DEFAULT_QUEUE_PACKETS,
        restart_delay: float = DEFAULT_RESTART_DELAY,
    ) -> None:
        if max_width < 2 or max_height < 2:
            raise ValueError(f"max size must be at least 2x2, not {max_width}x{max_height}")
        if bitrate <= 0 or keyframe_interval <= 0 or idle_timeout < 0 or queue_packets < 1:
            raise ValueError("bitrate, keyframe_interval and queue_packets must be positive")
        super().__init__(
            source,
            name=name,
            idle_timeout=idle_timeout,
            queue_packets=queue_packets,
            restart_delay=restart_delay,
        )
        self._settings = PipelineSettings(max_width, max_height, bitrate, keyframe_interval)

    def _open_stage(self) -> Pipeline:
        return Pipeline(self.name, self._settings)


@OUTPUTS.register("h264")
def _h264(context: StreamContext) -> Transcoder:
    """Every stream may be asked for H.264; the transcoder only runs while watched."""
    t = context.settings.transcode
    return Transcoder(
        context.hub,
        name=f"{context.name}/h264",
        max_width=t.max_width,
        max_height=t.max_height,
        bitrate=t.bitrate,
        keyframe_interval=t.keyframe_interval,
        idle_timeout=t.idle_timeout,
    )
