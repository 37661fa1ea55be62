"""The SDP of an RTSP camera's DESCRIBE answer: session control and the video track.

:func:`parse_sdp` picks the first H.264 or H.265 video format and its parameter
sets (``sprop-parameter-sets``, ``sprop-vps/sps/pps``); the audio track is read
by :mod:`streams.sources.rtsp.sdp_audio` with the helpers here.

Pure code on text, any thread.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass

from streams.codecs import h264, h265
from streams.errors import SourceProtocolError, UnsupportedCodec
from streams.packets import CLOCK_RATE, Codec, StreamInfo

log = logging.getLogger(__name__)


@dataclass(slots=True)
class VideoTrack:
    """What the SDP says about the first video media."""

    control: str
    payload_type: int
    clock_rate: int = CLOCK_RATE
    codec: Codec = "h264"
    sps: bytes | None = None
    pps: bytes | None = None
    vps: bytes | None = None
    """H.265 only."""
    info: StreamInfo | None = None


@dataclass(slots=True)
class SessionDescription:
    control: str | None
    video: VideoTrack


def sdp_sections(sdp: str) -> tuple[list[str], list[list[str]]]:
    """The session-level lines and, per ``m=`` line, that media's lines (the ``m=`` line first)."""
    session: list[str] = []
    media: list[list[str]] = []
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            media.append([line])
        elif line:
            (media[-1] if media else session).append(line)
    return session, media


def sdp_attribute(lines: list[str], name: str) -> list[str]:
    """The values of every ``a=name:value`` line."""
    prefix = f"a={name}:"
    return [line[len(prefix) :].strip() for line in lines if line.startswith(prefix)]


_CODECS: dict[str, Codec] = {"H264": "h264", "H265": "h265"}


def _encoding(rtpmap: dict[int, tuple[str, int]], payload_type: int) -> str:
    return rtpmap.get(payload_type, ("",))[0]


def _base64_nals(text: str) -> list[bytes]:
    """The NAL units of a comma-separated base64 list; undecodable items are left out."""
    out = []
    for item in text.split(","):
        try:
            nal = base64.b64decode(item.strip(), validate=False) if item.strip() else b""
        except binascii.Error:
            continue
        if nal:
            out.append(nal)
    return out


def _h264_parameters(track: VideoTrack, params: dict[str, str]) -> None:
    if params.get("packetization-mode", "0") not in ("0", "1"):
        raise UnsupportedCodec("H.264 interleaved packetization (mode 2) is not supported")
    for nal in _base64_nals(params.get("sprop-parameter-sets", "")):
        if h264.nal_type(nal) == h264.NAL_SPS:
            track.sps = nal
        elif h264.nal_type(nal) == h264.NAL_PPS:
            track.pps = nal
    if track.sps is not None:
        try:
            track.info = h264.parse_sps(track.sps)
        except h264.BitstreamError:
            log.debug("unparsable SPS in SDP")


def _h265_parameters(track: VideoTrack, params: dict[str, str]) -> None:
    don_diff = params.get("sprop-max-don-diff", "0")
    if not don_diff.isdigit() or int(don_diff) > 0:
        raise UnsupportedCodec("H.265 with decoding-order numbers (sprop-max-don-diff > 0) is not supported")

    def first(name: str, kind: int) -> bytes | None:
        nals = _base64_nals(params.get(name, ""))
        return next((n for n in nals if len(n) > 2 and h265.nal_type(n) == kind), None)

    track.vps = first("sprop-vps", h265.NAL_VPS)
    track.sps = first("sprop-sps", h265.NAL_SPS)
    track.pps = first("sprop-pps", h265.NAL_PPS)
    if track.sps is not None:
        try:
            track.info = h265.parse_sps(track.sps)
        except h265.BitstreamError:
            log.debug("unparsable H.265 SPS in SDP")


def parse_sdp(sdp: str) -> SessionDescription:
    """The session control and first video track of an SDP answer to DESCRIBE.

    The first offered format that is H.264 or H.265 is chosen. Raises
    SourceProtocolError without a video track, UnsupportedCodec when no format is
    either codec or the packetization is one we do not read (H.264 interleaved
    mode, H.265 with decoding-order numbers).
    """
    session, media = sdp_sections(sdp)
    video = next((m for m in media if m[0].startswith("m=video")), None)
    if video is None:
        raise SourceProtocolError("the stream has no video track")
    formats = video[0].split()[3:]
    rtpmap: dict[int, tuple[str, int]] = {}
    for value in sdp_attribute(video, "rtpmap"):
        pt_text, _, encoding = value.partition(" ")
        name, _, rate = encoding.partition("/")
        if pt_text.isdigit():
            rtpmap[int(pt_text)] = (name.upper(), int(rate.split("/")[0] or CLOCK_RATE))
    fmtp: dict[int, dict[str, str]] = {}
    for value in sdp_attribute(video, "fmtp"):
        pt_text, _, fmtp_text = value.partition(" ")
        if pt_text.isdigit():
            pairs = (item.strip().partition("=") for item in fmtp_text.split(";") if item.strip())
            fmtp[int(pt_text)] = {k.strip().lower(): v.strip() for k, _, v in pairs}
    chosen = next((int(f) for f in formats if f.isdigit() and _encoding(rtpmap, int(f)) in _CODECS), None)
    if chosen is None:
        names = [_encoding(rtpmap, int(f)) or f"payload type {f}" for f in formats if f.isdigit()]
        raise UnsupportedCodec(
            f"video codec {', '.join(names) or 'unknown'} is not supported (H.264 or H.265)"
        )
    params = fmtp.get(chosen, {})
    controls = sdp_attribute(video, "control")
    track = VideoTrack(control=controls[0] if controls else "*", payload_type=chosen)
    track.clock_rate = rtpmap[chosen][1]
    track.codec = _CODECS[rtpmap[chosen][0]]
    if track.codec == "h264":
        _h264_parameters(track, params)
    else:
        _h265_parameters(track, params)
    session_controls = sdp_attribute(session, "control")
    return SessionDescription(control=session_controls[0] if session_controls else None, video=track)
