"""The blocking half of the transcoder: decode, scale down, encode to H.264.

A :class:`Pipeline` holds one decoder (whatever codec the packets say: H.264 or
H.265) and one libx264 encoder (ultrafast, zerolatency, Constrained Baseline, no
B-frames), and turns each source access unit into the H.264 access units it
completes. Keyframes are forced at each source keyframe and at the first frame
``keyframe_interval`` or more after the last keyframe (by ``pts``); each keyframe
carries SPS/PPS in-band. Output packets keep
the source packets' ``pts`` and ``received``.

Every method blocks: a pipeline belongs to one worker thread
(:mod:`streams.transcoding.transcoder`) and is never touched by the event loop.
"""

from __future__ import annotations

import fractions
import logging
from dataclasses import dataclass, field

import av
import av.error
from av.video.frame import PictureType

from streams.codecs import h264
from streams.packets import CLOCK_RATE, Codec, MediaPacket

__all__ = ["Pipeline", "PipelineResult", "PipelineSettings", "fit_size"]

log = logging.getLogger(__name__)

_DECODERS: dict[Codec, str] = {"h264": "h264", "h265": "hevc"}
_TIME_BASE = fractions.Fraction(1, CLOCK_RATE)
_PENDING_MAX = 64
"""Source packets remembered while in the decoder; more means it dropped some."""


def fit_size(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int]:
    """The largest even size within ``max_width`` x ``max_height`` with the aspect ratio of
    ``width`` x ``height``, never larger than ``width`` x ``height``."""
    scale = min(1.0, max_width / width, max_height / height)
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """What the output must look like."""

    max_width: int
    max_height: int
    bitrate: int
    """Bits per second."""
    keyframe_interval: float
    """Seconds between keyframes, at most."""

    @property
    def keyframe_ticks(self) -> int:
        return round(self.keyframe_interval * CLOCK_RATE)

    @property
    def gop_frames(self) -> int:
        """x264's own keyframe limit: a safety net, reached only if timestamps stall."""
        return max(2, round(self.keyframe_interval * 60))


@dataclass(slots=True)
class PipelineResult:
    """What one source packet produced."""

    packets: list[MediaPacket] = field(default_factory=list)
    errors: int = 0
    """Packets the decoder or the encoder rejected."""


class Pipeline:
    """Decoder, scaler and encoder of one worker. Used by the worker thread only."""

    def __init__(self, name: str, settings: PipelineSettings) -> None:
        self.name = name
        self._settings = settings
        self._decoder: av.VideoCodecContext | None = None
        self._codec: Codec | None = None
        self._need_keyframe = True
        self._encoder: av.VideoCodecContext | None = None
        self._size = (0, 0)
        self._sources: dict[int, tuple[bool, float]] = {}
        """Source packets in the decoder: pts -> (keyframe, received)."""
        self._last_key: int | None = None
        self._last_pts: int | None = None
        self._parameter_sets = h264.ParameterSets()

    def process(self, packet: MediaPacket, resync: bool) -> PipelineResult:
        """Decode one source packet and encode the frames it completes."""
        if resync:
            self._decoder = None
            self._need_keyframe = True
        if self._need_keyframe and not packet.keyframe:
            return PipelineResult([], 0)
        if self._decoder is None or packet.codec != self._codec:
            self._decoder = _open_decoder(packet.codec)
            self._codec = packet.codec
            self._sources.clear()
        av_packet = av.Packet(packet.data)
        av_packet.pts, av_packet.dts, av_packet.time_base = packet.pts, packet.decode_ts, _TIME_BASE
        self._sources[packet.pts] = (packet.keyframe, packet.received)
        try:
            frames = self._decoder.decode(av_packet)
        except av.error.FFmpegError as err:
            log.debug(
                "%s: undecodable packet (pts %d), waiting for a keyframe: %s", self.name, packet.pts, err
            )
            self._decoder = None
            self._need_keyframe = True
            return PipelineResult([], 1)
        self._need_keyframe = False
        out: list[MediaPacket] = []
        errors = 0
        for frame in frames:
            try:
                out.extend(self._encode(frame))
            except av.error.FFmpegError as err:
                log.warning("%s: encoding failed, restarting the encoder: %s", self.name, err)
                self._encoder = None
                errors += 1
        if len(self._sources) > _PENDING_MAX:  # frames the decoder never returned
            for pts in sorted(self._sources)[:-16]:
                del self._sources[pts]
        return PipelineResult(out, errors)

    def _encode(self, frame: av.VideoFrame) -> list[MediaPacket]:
        if frame.pts is None or (source := self._sources.pop(frame.pts, None)) is None:
            return []  # not a frame of ours (nothing else reaches the decoder)
        source_key, received = source
        pts = frame.pts
        for stale in [p for p in self._sources if p < pts]:
            del self._sources[stale]
        size = fit_size(frame.width, frame.height, self._settings.max_width, self._settings.max_height)
        force = source_key
        if self._encoder is None or size != self._size:
            self._encoder = _open_encoder(size, self._settings)
            self._size = size
            force = True
        if (frame.width, frame.height) != size or frame.format.name != "yuv420p":
            frame = frame.reformat(width=size[0], height=size[1], format="yuv420p")
        if self._last_key is None or not 0 <= pts - self._last_key < self._settings.keyframe_ticks:
            force = True
        # The encoder needs rising timestamps; the output keeps the source's.
        frame.pts = pts if self._last_pts is None else max(pts, self._last_pts + 1)
        self._last_pts = frame.pts
        # A decoded frame carries its own picture type, which x264 would obey: reset it.
        frame.pict_type = PictureType.I if force else PictureType.NONE
        out = []
        for encoded in self._encoder.encode(frame):
            data = bytes(encoded)
            keyframe = bool(encoded.is_keyframe)
            if keyframe:
                self._last_key = pts
                nals, _ = self._parameter_sets.complete(list(h264.split_nals(data)))
                data = h264.join_nals(nals)
            out.append(MediaPacket(data=data, pts=pts, keyframe=keyframe, codec="h264", received=received))
        return out

    def close(self) -> None:
        """Free the codec contexts."""
        self._decoder = None
        self._encoder = None
        self._sources.clear()


def _open_decoder(codec: Codec) -> av.VideoCodecContext:
    ctx = av.CodecContext.create(_DECODERS[codec], "r")
    assert isinstance(ctx, av.VideoCodecContext)
    ctx.thread_type = "SLICE"  # frame threads would hold frames back by one per thread
    return ctx


def _open_encoder(size: tuple[int, int], settings: PipelineSettings) -> av.VideoCodecContext:
    ctx = av.CodecContext.create("libx264", "w")
    assert isinstance(ctx, av.VideoCodecContext)
    ctx.width, ctx.height = size
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = _TIME_BASE
    ctx.framerate = fractions.Fraction(25, 1)  # nominal: rate control follows the timestamps
    ctx.bit_rate = settings.bitrate
    kbps = max(1, settings.bitrate // 1000)
    ctx.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "profile": "baseline",  # x264's baseline is Constrained Baseline
        "bf": "0",
        "g": str(settings.gop_frames),
        "sc_threshold": "0",
        "forced-idr": "1",
        "maxrate": f"{kbps}k",
        "bufsize": f"{kbps}k",
    }
    ctx.open()
    return ctx
