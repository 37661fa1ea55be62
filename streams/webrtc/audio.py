"""A WebRTC viewer's audio: a camera's Opus or G.711 passed through, never re-encoded.

A WHEP session gets audio when its output is handed an audio hub whose codec a
viewer can play (``opus``, ``pcmu``, ``pcma``: an AAC camera's audio goes through
:class:`~streams.transcoding.audio_transcoder.AudioTranscoder` first, and the session is
handed its output hub) and the offer's first audio m-line receives that codec
(``opus/48000/2``, ``PCMU/8000``, ``PCMA/8000``). :func:`plan_audio` makes that
choice from the parsed offer before anything is negotiated, and says at DEBUG
why a session goes without audio; the output then adds a send-only audio
transceiver whose track is an :class:`AudioHubTrack` and, once aiortc has
applied the offer, keeps only the chosen format among its negotiated codecs
(:func:`install_codec`). Without a plan the audio m-line is answered inactive
(aiortc's own receive-only transceiver meets the viewer's receive-only offer).

Sending is aiortc's own RTP sender: it calls ``recv()`` and hands the
``av.Packet`` to its codec's ``pack()``, which only converts the timestamp to the
codec's clock and sends the bytes as one RTP payload. No audio encoder is ever
opened. The cost is aiortc's per-packet Python path (header extensions, SRTP)
for 50 packets a second per listener: at most about 2 % of a core per listener
on the project's 2-core machines (measured with the receiving aiortc peers in
the same process, so less for the relay alone). Audio stays off the video fast
path (:mod:`streams.webrtc.fanout`).

Event loop only; :func:`plan_audio` and :func:`install_codec` are pure functions.
"""

from __future__ import annotations

import fractions
import logging
from dataclasses import dataclass
from typing import Any

import av
from aiortc import RTCRtpTransceiver
from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from streams.hub import Hub, HubClosed, Subscription
from streams.packets import CLOCK_RATE

__all__ = ["AudioHubTrack", "AudioPlan", "install_codec", "plan_audio"]

log = logging.getLogger(__name__)

TIME_BASE = fractions.Fraction(1, CLOCK_RATE)
_RTP_FORMATS = {
    # hub codec -> (RTP mime type, clock rate, channels the hub must have at most)
    "opus": ("audio/opus", 48_000, 2),
    "pcmu": ("audio/PCMU", 8_000, 1),
    "pcma": ("audio/PCMA", 8_000, 1),
}


@dataclass(frozen=True, slots=True)
class AudioPlan:
    """The audio a session will send: its hub and the RTP format answered."""

    hub: Hub
    mime_type: str
    """``audio/opus``, ``audio/PCMU`` or ``audio/PCMA``."""
    clock_rate: int

    @property
    def codec_name(self) -> str:
        return self.mime_type.split("/", 1)[1]


def plan_audio(
    description: aiortc_sdp.SessionDescription, audio_hub: Hub | None, camera_id: str
) -> AudioPlan | None:
    """The audio to send for this offer, or None (with the reason logged at DEBUG)."""
    if audio_hub is None:
        return None
    media = next((m for m in description.media if m.kind == "audio"), None)
    if media is None:
        log.debug("WHEP offer for %s: no audio m-line, video only", camera_id)
        return None
    if media.direction not in (None, "recvonly", "sendrecv"):
        log.debug(
            "WHEP offer for %s: audio is %s, it does not receive; video only", camera_id, media.direction
        )
        return None
    info = audio_hub.audio
    if info is None:
        log.debug("WHEP offer for %s: the audio stream is not described yet; video only", camera_id)
        return None
    rtp_format = _RTP_FORMATS.get(info.codec)
    if rtp_format is None:
        log.debug("WHEP offer for %s: %s audio cannot go over WebRTC; video only", camera_id, info.codec)
        return None
    mime_type, clock_rate, max_channels = rtp_format
    if info.sample_rate != clock_rate or info.channels > max_channels:
        log.debug(
            "WHEP offer for %s: %s audio at %d Hz, %d channels is not WebRTC's; video only",
            camera_id,
            info.codec,
            info.sample_rate,
            info.channels,
        )
        return None
    if not any(
        _matches(codec.mimeType, codec.clockRate, mime_type, clock_rate) for codec in media.rtp.codecs
    ):
        log.debug("WHEP offer for %s: the viewer offered no %s audio; video only", camera_id, mime_type)
        return None
    return AudioPlan(audio_hub, mime_type, clock_rate)


def install_codec(transceiver: RTCRtpTransceiver, plan: AudioPlan) -> bool:
    """Keep only the planned format among the codecs aiortc negotiated from the offer, so
    that the answer and the RTP sender use it. If it is missing, the transceiver is made
    inactive instead (the session goes without audio); returns whether it was installed."""
    if transceiver.mid is None:  # matched no m-line
        return False
    chosen = [
        c for c in transceiver._codecs if _matches(c.mimeType, c.clockRate, plan.mime_type, plan.clock_rate)
    ]
    if not chosen:
        log.debug("aiortc did not negotiate %s audio; answering it inactive", plan.mime_type)
        transceiver.direction = "inactive"
        return False
    transceiver._codecs = chosen[:1]
    return True


def _matches(mime_type: str, clock_rate: int | None, wanted: str, wanted_rate: int) -> bool:
    return mime_type.lower() == wanted.lower() and clock_rate == wanted_rate


class AudioHubTrack(MediaStreamTrack):
    """An audio track fed by one hub subscription, taken on the first ``recv`` (once the
    connection is up). Packets go out as the hub delivers them, keeping their ``pts``.
    ``stop()`` closes the subscription; the hub closing ends the track (the video goes on).
    """

    kind = "audio"

    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self._hub = hub
        self._subscription: Subscription | None = None
        self.frames = 0
        self.bytes = 0

    @property
    def dropped(self) -> int:
        """Frames the hub skipped for this listener because it fell behind."""
        return self._subscription.dropped if self._subscription is not None else 0

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            if self._subscription is None:
                self._subscription = self._hub.subscribe()
            media = await self._subscription.get()
        except HubClosed as err:
            self.stop()
            raise MediaStreamError from err
        packet = av.Packet(media.data)
        packet.pts = packet.dts = media.pts
        packet.time_base = TIME_BASE
        self.frames += 1
        self.bytes += len(media.data)
        return packet

    def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
        super().stop()
