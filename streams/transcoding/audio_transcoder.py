"""Opus for cameras that send AAC: one transcode per audio stream, only while someone listens.

WebRTC carries Opus and G.711 but not AAC, which many cameras send. An
:class:`AudioTranscoder` sits on a camera's audio :class:`~streams.hub.Hub`
(whose ``audio`` describes the AAC stream: its AudioSpecificConfig is the
decoder's extradata) and owns an output hub of Opus packets, 20 ms each, at
48 kHz, mono or stereo as the source (``output.audio`` says which). Like the
video transcoder it is an :class:`~streams.transcoding.on_demand.OnDemandWorker`: the output
hub's first subscriber starts it, it stops after ``idle_timeout`` seconds
without one, and there is one per stream however many listeners.

The stage (:class:`OpusStage`) decodes each AAC frame with PyAV's ``aac``
decoder, resamples to 48 kHz in 960-sample frames and encodes them with libopus.
Timing: the first source packet of a run (or after a gap) anchors the output
timeline; each Opus packet's ``pts`` (90 kHz) is that anchor plus the samples
encoded before it, so packets are exactly 1800 ticks apart. A source timestamp
that strays more than ``_MAX_DRIFT`` from the anchor plus the samples decoded
since (lost frames, a reconnect) starts the codecs afresh on a new anchor, as
does a gap in the subscription (the worker's ``resync``). Output packets carry the
``received`` time of the source packet that completed them.

Threads: the public API, the output hub and the counters belong to the event
loop; the codecs belong to the worker thread (one per running transcoder) and
are never touched by the loop.
"""

from __future__ import annotations

import fractions
import logging

import av
import av.error

from streams.hub import Hub
from streams.outputs.base import OUTPUTS, StreamContext
from streams.packets import CLOCK_RATE, AudioInfo, MediaPacket
from streams.transcoding.on_demand import DEFAULT_QUEUE_PACKETS, DEFAULT_RESTART_DELAY, OnDemandWorker
from streams.transcoding.pipeline import PipelineResult

__all__ = ["OPUS_FRAME_SAMPLES", "OPUS_RATE", "AudioTranscoder", "OpusStage"]

log = logging.getLogger(__name__)

OPUS_RATE = 48_000
OPUS_FRAME_SAMPLES = 960
"""20 ms at 48 kHz."""
DEFAULT_BITRATE = 32_000
_OPUS_TIME_BASE = fractions.Fraction(1, OPUS_RATE)
_MAX_DRIFT = CLOCK_RATE // 5
"""Ticks a source timestamp may stray from the sample count before the timeline is re-anchored."""


class AudioTranscoder(OnDemandWorker):
    """AAC to Opus for one audio hub, running only while someone listens.

    ``output`` is the Opus hub; see :class:`~streams.transcoding.on_demand.OnDemandWorker` for
    ``subscribe``, ``stop``, ``running`` and the counters.
    """

    _kind = "audio transcoder"
    _thread_prefix = "transcode-audio"

    def __init__(
        self,
        source: Hub,
        *,
        name: str,
        idle_timeout: float = 2.0,
        bitrate: int = DEFAULT_BITRATE,
        queue_packets: int = DEFAULT_QUEUE_PACKETS,
        restart_delay: float = DEFAULT_RESTART_DELAY,
    ) -> None:
        if bitrate <= 0:
            raise ValueError("bitrate must be positive")
        super().__init__(
            source,
            name=name,
            idle_timeout=idle_timeout,
            queue_packets=queue_packets,
            restart_delay=restart_delay,
        )
        self._bitrate = bitrate
        self._output.audio = _opus_info(source.audio)

    def _open_stage(self) -> OpusStage:
        # The source's description may have arrived (or changed) since the last run.
        info = self._source.audio
        self._output.audio = _opus_info(info)
        return OpusStage(self.name, info, channels=self._output.audio.channels, bitrate=self._bitrate)


def _opus_info(source: AudioInfo | None) -> AudioInfo:
    channels = 1 if source is None else min(2, max(1, source.channels))
    return AudioInfo("opus", OPUS_RATE, channels)


class OpusStage:
    """Decoder, resampler and Opus encoder of one run. Used by the worker thread only."""

    def __init__(self, name: str, info: AudioInfo | None, *, channels: int, bitrate: int) -> None:
        self.name = name
        self._config = info.config if info is not None else b""
        self._layout = "mono" if channels == 1 else "stereo"
        self._bitrate = bitrate
        self._decoder: av.AudioCodecContext | None = None
        self._resampler: av.AudioResampler | None = None
        self._encoder: av.AudioCodecContext | None = None
        self._anchor = 0
        """The output timeline's origin (90 kHz): the first source pts after a reset."""
        self._samples = 0
        """48 kHz samples handed to the encoder since the anchor."""
        self._decoded = 0.0
        """Source ticks (90 kHz) decoded since the anchor: where the next source pts should be."""

    def process(self, packet: MediaPacket, resync: bool) -> PipelineResult:
        if packet.codec != "aac":
            return PipelineResult([], 1)
        drift = packet.pts - (self._anchor + self._decoded)
        if self._decoder is not None and abs(drift) > _MAX_DRIFT:
            log.debug(
                "%s: audio timestamps strayed %d ticks from the samples, re-anchoring", self.name, drift
            )
            resync = True
        if resync or self._decoder is None:
            self._reset(packet.pts)
        assert self._decoder is not None
        try:
            frames = self._decoder.decode(av.Packet(packet.data))
        except av.error.FFmpegError as err:
            log.debug("%s: undecodable AAC frame (pts %d): %s", self.name, packet.pts, err)
            self._decoder = None
            return PipelineResult([], 1)
        out: list[MediaPacket] = []
        for frame in frames:
            self._decoded += frame.samples * CLOCK_RATE / frame.sample_rate
            try:
                out.extend(self._encode(frame, packet.received))
            except av.error.FFmpegError as err:
                log.warning("%s: Opus encoding failed, starting afresh: %s", self.name, err)
                self._decoder = None
                return PipelineResult(out, 1)
        return PipelineResult(out, 0)

    def _encode(self, frame: av.AudioFrame, received: float) -> list[MediaPacket]:
        assert self._resampler is not None and self._encoder is not None
        frame.pts = None  # the resampler's own sample count is the timeline
        out = []
        for chunk in self._resampler.resample(frame):
            chunk.pts = self._samples
            self._samples += chunk.samples
            for encoded in self._encoder.encode(chunk):
                ticks = (encoded.pts or 0) * CLOCK_RATE // OPUS_RATE
                out.append(
                    MediaPacket(
                        bytes(encoded),
                        pts=self._anchor + ticks,
                        keyframe=True,
                        codec="opus",
                        received=received,
                    )
                )
        return out

    def _reset(self, pts: int) -> None:
        """Fresh codecs, and the output timeline anchored at ``pts``."""
        decoder = av.CodecContext.create("aac", "r")
        assert isinstance(decoder, av.AudioCodecContext)
        if self._config:
            decoder.extradata = self._config
        encoder = av.CodecContext.create("libopus", "w")
        assert isinstance(encoder, av.AudioCodecContext)
        encoder.sample_rate = OPUS_RATE
        encoder.layout = self._layout
        encoder.format = "s16"
        encoder.bit_rate = self._bitrate
        encoder.time_base = _OPUS_TIME_BASE
        encoder.options = {"frame_duration": "20"}
        self._decoder = decoder
        self._encoder = encoder
        self._resampler = av.AudioResampler(
            format="s16", layout=self._layout, rate=OPUS_RATE, frame_size=OPUS_FRAME_SAMPLES
        )
        self._anchor = pts
        self._samples = 0
        self._decoded = 0.0

    def close(self) -> None:
        """Free the codec contexts."""
        self._decoder = None
        self._encoder = None
        self._resampler = None


@OUTPUTS.register("opus")
def _opus(context: StreamContext) -> AudioTranscoder | None:
    """A stream with sound may be asked for Opus (AAC cameras, for WebRTC viewers)."""
    if context.audio_hub is None:
        return None
    idle_timeout = context.settings.transcode.idle_timeout
    return AudioTranscoder(context.audio_hub, name=f"{context.name}/opus", idle_timeout=idle_timeout)
