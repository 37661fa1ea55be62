"""Blocking picture work: encoded access units to frames, frames to JPEG.

Owns the PyAV decoders and the OpenCV JPEG encoder used by the picture outputs.
Every function here blocks and runs in a worker thread, never on the event loop.
A :class:`PacketDecoder` holds codec state and is used by one thread at a time
(its owner awaits each call before making the next); frames it returns are
reference-counted by PyAV and may be read from another thread afterwards, by
several at once: :func:`to_bgr` converts them with the calling thread's own scaler.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import av
import av.error
import cv2
import numpy as np
import numpy.typing as npt
from av.video.reformatter import VideoReformatter

from streams.errors import StreamError
from streams.packets import Codec, MediaPacket

log = logging.getLogger(__name__)

Frame = av.VideoFrame
"""A decoded picture, as PyAV returns it."""

_DECODERS: dict[Codec, str] = {"h264": "h264", "h265": "hevc"}


class NoPicture(StreamError):
    """No picture can be made: no keyframe yet, the output stopped, or decoding failed."""


@dataclass(frozen=True, slots=True)
class DecodeResult:
    """What one :meth:`PacketDecoder.decode` call produced."""

    frame: Frame | None
    """The newest decoded frame of the batch, if any."""
    keyframe: Frame | None
    """The newest decoded keyframe of the batch, if any."""
    frames: int
    """Frames decoded."""
    errors: int
    """Packets the decoder rejected."""
    skipped: int
    """Packets not decoded because the decoder was waiting for a keyframe."""


class PacketDecoder:
    """Decodes a live stream packet by packet and keeps only the newest frame.

    The decoder must see every packet of a GOP. When a packet is rejected the
    codec context is thrown away and decoding resumes at the next keyframe, so a
    corrupt packet costs at most the rest of its GOP.
    """

    def __init__(self, name: str = "") -> None:
        self._name = name
        self._ctx: av.VideoCodecContext | None = None
        self._codec: Codec | None = None
        self._need_keyframe = True

    def decode(self, packets: Iterable[MediaPacket]) -> DecodeResult:
        newest: Frame | None = None
        newest_key: Frame | None = None
        frames = errors = skipped = 0
        for packet in packets:
            if self._need_keyframe and not packet.keyframe:
                skipped += 1
                continue
            if self._ctx is None or packet.codec != self._codec:
                self._ctx = _open(packet.codec)
                self._codec = packet.codec
            try:
                decoded = self._ctx.decode(_av_packet(packet))
            except av.error.FFmpegError as err:
                log.debug(
                    "%s: undecodable packet (pts %d), waiting for a keyframe: %s", self._name, packet.pts, err
                )
                errors += 1
                self._ctx = None
                self._need_keyframe = True
                continue
            self._need_keyframe = False
            if decoded:
                newest = decoded[-1]
                frames += len(decoded)
                newest_key = next((f for f in reversed(decoded) if f.key_frame), newest_key)
        return DecodeResult(newest, newest_key, frames, errors, skipped)


def _av_packet(packet: MediaPacket) -> av.Packet[Any]:
    """The access unit for PyAV, with its timestamps, so that frames carry ``pts`` (90 kHz)."""
    av_packet = av.Packet(packet.data)
    av_packet.pts = packet.pts
    av_packet.dts = packet.decode_ts
    return av_packet


def _open(codec: Codec) -> av.VideoCodecContext:
    ctx = av.CodecContext.create(_DECODERS[codec], "r")
    assert isinstance(ctx, av.VideoCodecContext)
    # Slice threads add no delay; frame threads would hold frames back by one per thread.
    ctx.thread_type = "SLICE"
    return ctx


def decode_keyframe(packet: MediaPacket) -> Frame:
    """The picture of one keyframe, decoded by a fresh decoder. Raises :class:`NoPicture`."""
    ctx = _open(packet.codec)
    try:
        frames = ctx.decode(_av_packet(packet))
        frames += ctx.decode(None)
    except av.error.FFmpegError as err:
        raise NoPicture("the latest keyframe could not be decoded") from err
    if not frames:
        raise NoPicture("the latest keyframe could not be decoded")
    return frames[0]


_scalers = threading.local()


def _scaler() -> VideoReformatter:
    """The calling thread's own scaler.

    ``VideoFrame.to_ndarray`` converts with a scaler PyAV keeps on the frame. One decoded
    frame goes to the analysis, the snapshots and the MJPEG viewers, each converting it in
    a worker thread, so two threads drove one swscale context at once. Its slice threads
    then waited on each other for ever: the worker thread never returned, and the output
    awaiting it hung."""
    scaler: VideoReformatter | None = getattr(_scalers, "scaler", None)
    if scaler is None:
        scaler = _scalers.scaler = VideoReformatter()
    return scaler


def to_bgr(frame: Frame, max_width: int | None = None) -> npt.NDArray[np.uint8]:
    """The frame as a BGR array, scaled down (by PyAV's scaler) to at most ``max_width``.
    Safe to call from several threads with the same frame."""
    width, height = frame.width, frame.height
    if max_width is not None and width > max_width:
        width = max(2, max_width - max_width % 2)
        height = max(2, round(frame.height * width / frame.width / 2) * 2)
    bgr = _scaler().reformat(frame, width=width, height=height, format="bgr24")
    return cast("npt.NDArray[np.uint8]", bgr.to_ndarray())  # bgr24 is always 8-bit


def encode_jpeg(image: npt.NDArray[np.uint8], quality: int) -> bytes:
    """JPEG bytes of a BGR array. Raises :class:`NoPicture` if OpenCV refuses it."""
    ok, buffer = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), quality])
    if not ok:
        raise NoPicture("the picture could not be encoded as JPEG")
    return buffer.tobytes()


def frame_to_jpeg(frame: Frame, *, quality: int, max_width: int | None = None) -> bytes:
    """Convert and encode one decoded frame."""
    return encode_jpeg(to_bgr(frame, max_width), quality)


def keyframe_to_jpeg(packet: MediaPacket, *, quality: int, max_width: int | None = None) -> bytes:
    """Decode one keyframe and encode it as JPEG."""
    return frame_to_jpeg(decode_keyframe(packet), quality=quality, max_width=max_width)
