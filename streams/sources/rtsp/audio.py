"""The audio track of one RTSP session, for :class:`~streams.sources.rtsp.source.RtspSource`.

:func:`choose_audio` picks the track from the SDP (logging, once, why there is
none), :class:`AudioSession` holds where its RTP arrives (an interleaved channel
or its own UDP port pair) and turns each RTP packet into audio frames on the
video's timeline, and :func:`rtp_info_time` reads the PLAY answer's RTP-Info,
which ties the two streams' RTP clocks together.

Event loop only: everything belongs to the ``packets()`` generator of one RTSP source.
"""

from __future__ import annotations

import logging

from streams.packets import MediaPacket
from streams.redact import redact_url
from streams.sources.rtsp.connection import RtspMessage, UdpReceiver
from streams.sources.rtsp.rtp import parse_rtp
from streams.sources.rtsp.rtp_audio import AudioDepacketizer, AvSync, audio_depacketizer
from streams.sources.rtsp.sdp_audio import (
    AudioTrack,
    UnsupportedAudio,
    describe_refusal,
    parse_audio_sdp,
)

log = logging.getLogger(__name__)


def choose_audio(sdp: str, url: str) -> AudioTrack | None:
    """The audio track to set up, or None (with one INFO line saying why); ``url`` is redacted."""
    audio = parse_audio_sdp(sdp)
    if isinstance(audio, UnsupportedAudio):
        log.info("%s: %s", url, describe_refusal(UnsupportedAudio(tuple(map(_known_format, audio.formats)))))
        return None
    if audio is None:
        log.info("%s: the camera offers no audio", url)
    return audio


_KNOWN_ENCODINGS = frozenset(
    "AC3 AMR AMR-WB DVI4 EAC3 G722 G7221 G723 G726-16 G726-24 G726-32 G726-40 G728 G729 G729D "  # noqa: SIM905
    "G729E GSM ILBC L8 L16 L24 LPC MP4A-LATM MPA MPEG4-GENERIC OPUS PCMA PCMU QCELP SPEEX VORBIS".split()
)


def _known_format(offered: str) -> str:
    """``offered`` (``NAME/rate``) if it names an encoding we know, else words of our own:
    an SDP is the camera's free text, and this line is logged at INFO."""
    name, _, rate = offered.partition("/")
    known = name in _KNOWN_ENCODINGS and (not rate or rate.replace("/", "").isdigit()) and len(offered) < 32
    return offered if known else "an unknown format"


def rtp_info_time(reply: RtspMessage, track_url: str, control: str) -> int | None:
    """The ``rtptime`` that a PLAY answer's RTP-Info header gives for one track, if any."""
    suffix = "/" + control.lstrip("/") if control not in ("", "*") and "://" not in control else None
    for entry in (reply.get("RTP-Info") or "").split(","):
        fields = dict(item.strip().partition("=")[::2] for item in entry.split(";"))
        url = fields.get("url", "").strip()
        if url and (redact_url(url) == track_url or (suffix is not None and url.endswith(suffix))):
            rtptime = fields.get("rtptime", "").strip()
            return int(rtptime) & 0xFFFFFFFF if rtptime.isdigit() else None
    return None


class AudioSession:
    """The audio track of one session: where its RTP arrives and how it becomes frames.

    ``sync`` is anchored once PLAY has answered (RTP-Info); the video reader tells
    it about the video's first frame.
    """

    def __init__(self, track: AudioTrack, url: str, udp: UdpReceiver | None, video_clock: int) -> None:
        self.track, self.url, self.udp = track, url, udp
        self.channel = -1
        """The interleaved channel of its RTP (TCP), once set up."""
        self.depacketizer: AudioDepacketizer = audio_depacketizer(track)
        self.sync = AvSync(video_clock, track.clock_rate)

    def push(self, data: bytes, received: float) -> list[MediaPacket]:
        """One RTP datagram or interleaved frame in; the audio frames it completes out."""
        packet = parse_rtp(data)
        if packet is None:
            return []
        return self.sync.audio(self.depacketizer.push(packet, received), self.depacketizer.origin)

    def close(self) -> None:
        if self.udp is not None:
            self.udp.close()
