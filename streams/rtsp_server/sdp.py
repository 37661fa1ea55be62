"""The SDP of the RTSP server's DESCRIBE answer: the mirror of :mod:`streams.sources.rtsp.sdp`.

The video track carries the camera's own parameter sets, taken from the hub's
latest keyframe (``sprop-parameter-sets`` for H.264, ``sprop-vps/sps/pps`` for
H.265), so a client configures its decoder from the answer and decodes the
first keyframe at once. The audio track, when the camera's sound is relayed,
describes AAC (RFC 3640, ``AAC-hbr``, with the AudioSpecificConfig), G.711
(static payload types 0 and 8) or Opus (RFC 7587).

Tracks are controlled as ``trackID=0`` (video) and ``trackID=1`` (audio),
relative to the ``Content-Base`` the server sends.

Pure code on bytes and text; any thread.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from streams.codecs import h264, h265
from streams.packets import CLOCK_RATE, AudioInfo, MediaPacket, StreamInfo

VIDEO_PAYLOAD_TYPE = 96
AAC_PAYLOAD_TYPE = 97
OPUS_PAYLOAD_TYPE = 111
_STATIC = {"pcmu": 0, "pcma": 8}
VIDEO_TRACK = 0
AUDIO_TRACK = 1


@dataclass(frozen=True, slots=True)
class AudioTrack:
    payload_type: int
    clock_rate: int
    lines: list[str]


def audio_track(info: AudioInfo) -> AudioTrack:
    """The payload type, RTP clock and SDP lines of an audio stream."""
    if info.codec in _STATIC:
        pt = _STATIC[info.codec]
        return AudioTrack(pt, 8000, [f"m=audio 0 RTP/AVP {pt}", f"a=rtpmap:{pt} {info.codec.upper()}/8000"])
    if info.codec == "opus":
        pt = OPUS_PAYLOAD_TYPE
        return AudioTrack(pt, 48000, [f"m=audio 0 RTP/AVP {pt}", f"a=rtpmap:{pt} opus/48000/2"])
    pt = AAC_PAYLOAD_TYPE
    fmtp = (
        f"a=fmtp:{pt} streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;"
        f"indexdeltalength=3;config={info.config.hex()}"
    )
    rtpmap = f"a=rtpmap:{pt} MPEG4-GENERIC/{info.sample_rate}/{info.channels}"
    return AudioTrack(pt, info.sample_rate, [f"m=audio 0 RTP/AVP {pt}", rtpmap, fmtp])


def video_lines(info: StreamInfo, keyframe: MediaPacket | None) -> list[str]:
    """The video media section, with the parameter sets of ``keyframe`` when there is one."""
    pt = VIDEO_PAYLOAD_TYPE
    sets = _parameter_sets(info.codec, keyframe.data) if keyframe is not None else {}
    if info.codec == "h265":
        props = [f"sprop-{name}={_b64(sets[name])}" for name in ("vps", "sps", "pps") if name in sets]
        fmtp = ";".join(props)
        rtpmap = f"a=rtpmap:{pt} H265/{CLOCK_RATE}"
    else:
        props = ["packetization-mode=1", f"profile-level-id={info.profile_level_id}"]
        if "sps" in sets and "pps" in sets:
            props.append(f"sprop-parameter-sets={_b64(sets['sps'])},{_b64(sets['pps'])}")
        fmtp = ";".join(props)
        rtpmap = f"a=rtpmap:{pt} H264/{CLOCK_RATE}"
    lines = [f"m=video 0 RTP/AVP {pt}", rtpmap]
    if fmtp:
        lines.append(f"a=fmtp:{pt} {fmtp}")
    return lines


def describe(
    session_id: int,
    name: str,
    info: StreamInfo,
    keyframe: MediaPacket | None,
    audio: AudioTrack | None,
) -> str:
    """The whole session description."""
    lines = [
        "v=0",
        f"o=- {session_id} 1 IN IP4 0.0.0.0",
        f"s={name}",
        "c=IN IP4 0.0.0.0",
        "t=0 0",
        "a=control:*",
        "a=range:npt=now-",
        *video_lines(info, keyframe),
        f"a=control:trackID={VIDEO_TRACK}",
    ]
    if audio is not None:
        lines += [*audio.lines, f"a=control:trackID={AUDIO_TRACK}"]
    return "\r\n".join(lines) + "\r\n"


def _parameter_sets(codec: str, data: bytes) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for nal in h264.split_nals(data):
        if codec == "h265":
            kind = h265.nal_type(nal)
            name = {h265.NAL_VPS: "vps", h265.NAL_SPS: "sps", h265.NAL_PPS: "pps"}.get(kind)
        else:
            name = {h264.NAL_SPS: "sps", h264.NAL_PPS: "pps"}.get(h264.nal_type(nal))
        if name is not None:
            found.setdefault(name, nal)
    return found


def _b64(nal: bytes) -> str:
    return base64.b64encode(nal).decode()
