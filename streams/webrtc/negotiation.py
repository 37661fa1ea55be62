"""Reading a viewer's SDP offer and choosing the H.264 format to answer with.

aiortc knows H.264 only as Constrained Baseline (profile-level-ids 42001f and
42e01f), whatever a camera really sends. For passthrough the answer must name
the camera's own profile and level, under the payload type the viewer offered
for that profile with ``packetization-mode=1`` (the only mode aiortc's
packetizer produces: single NAL units, STAP-A, FU-A). :func:`select_h264` makes
that choice from the parsed offer; the WebRTC output then installs the result as
the transceiver's negotiated codec list, so that the SDP answer and the RTP
sender agree on it.

When the viewer offered no payload type of the camera's profile (Chromium, for
one, offers no High profile format yet decodes High profile), the first offered
``packetization-mode=1`` payload type is answered with the camera's true
profile-level-id and ``level-asymmetry-allowed=1``: the answer describes what will
really be sent (RFC 6184, 8.2.2: the sender's profile may differ from the
receiver's in a sendonly stream), and the browser's decoder is set up for it.

Pure functions, any thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiortc import RTCRtpCodecParameters
from aiortc import sdp as aiortc_sdp
from aiortc.rtcrtpparameters import RTCRtcpFeedback

from streams.errors import NegotiationError

log = logging.getLogger(__name__)

_SUPPORTED_FEEDBACK = (
    RTCRtcpFeedback(type="nack"),
    RTCRtcpFeedback(type="nack", parameter="pli"),
    RTCRtcpFeedback(type="goog-remb"),
)
_NOT_A_CODEC = {"rtx", "red", "ulpfec", "flexfec-03", "cn", "telephone-event"}
MAX_OFFER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class H264Choice:
    """The codec list to install on the sending transceiver."""

    codecs: list[RTCRtpCodecParameters]
    """The chosen H.264 format first, then its RTX format if one was offered."""
    exact_profile: bool
    """False when the viewer offered no format of the stream's profile."""

    @property
    def payload_type(self) -> int:
        return int(self.codecs[0].payloadType or 0)

    @property
    def profile_level_id(self) -> str:
        return str(self.codecs[0].parameters.get("profile-level-id", ""))


def parse_offer(offer_sdp: str) -> aiortc_sdp.SessionDescription:
    """Parse an offer; anything unusable raises NegotiationError."""
    if not isinstance(offer_sdp, str) or not offer_sdp.strip():
        raise NegotiationError("the offer is empty")
    if len(offer_sdp) > MAX_OFFER_BYTES:
        raise NegotiationError("the offer is too large")
    if not offer_sdp.lstrip().startswith("v=0"):
        raise NegotiationError("the offer is not SDP (it must start with v=0)")
    try:
        description = aiortc_sdp.SessionDescription.parse(offer_sdp)
    except Exception as err:  # aiortc's parser raises whatever the input provokes
        raise NegotiationError(f"the offer is malformed SDP: {type(err).__name__}") from err
    description.type = "offer"
    return description


def video_media(description: aiortc_sdp.SessionDescription) -> aiortc_sdp.MediaDescription:
    """The first video m-line, which the relay's transceiver will answer."""
    for media in description.media:
        if media.kind == "video":
            if media.direction not in (None, "recvonly", "sendrecv"):
                raise NegotiationError(f"the offer's video is {media.direction}: it does not receive")
            return media
    kinds = ", ".join(m.kind for m in description.media) or "none"
    raise NegotiationError(f"the offer has no video m-line (media offered: {kinds})")


def offered_codec_names(media: aiortc_sdp.MediaDescription) -> list[str]:
    """Codec names offered on an m-line, in order, without repeats or helper formats."""
    names: list[str] = []
    for codec in media.rtp.codecs:
        name = codec.mimeType.split("/", 1)[-1]
        if name.lower() not in _NOT_A_CODEC and name not in names:
            names.append(name)
    return names


def _packetization_mode(codec: RTCRtpCodecParameters) -> str:
    return str(codec.parameters.get("packetization-mode", "0"))


def _profile(profile_level_id: object) -> aiortc_sdp.H264Profile | None:
    try:
        return aiortc_sdp.parse_h264_profile_level_id(str(profile_level_id))[0]
    except ValueError:
        return None


def select_h264(media: aiortc_sdp.MediaDescription, profile_level_id: str) -> H264Choice:
    """Choose the offered H.264 format for a stream of ``profile_level_id``."""
    h264 = [c for c in media.rtp.codecs if c.mimeType.lower() == "video/h264"]
    if not h264:
        names = ", ".join(offered_codec_names(media)) or "nothing"
        raise NegotiationError(f"the browser offered no H.264; offered: {names}")
    mode1 = [c for c in h264 if _packetization_mode(c) == "1"]
    if not mode1:
        raise NegotiationError("the browser offered H.264 only without packetization-mode=1")
    wanted = _profile(profile_level_id)
    if wanted is None:
        raise NegotiationError(f"the stream's profile-level-id {profile_level_id!r} is not valid")
    same = [c for c in mode1 if _profile(c.parameters.get("profile-level-id", "42e01f")) == wanted]
    offered = same[0] if same else mode1[0]
    parameters: dict[str, int | str | None] = {"packetization-mode": 1}
    if same:
        if "level-asymmetry-allowed" in offered.parameters:
            parameters["level-asymmetry-allowed"] = offered.parameters["level-asymmetry-allowed"]
    else:
        # Browsers rarely offer High profile, yet decode it (common, not alarming).
        log.debug(
            "viewer offered no H.264 format of profile-level-id %s; answering it under payload type %s",
            profile_level_id,
            offered.payloadType,
        )
        parameters["level-asymmetry-allowed"] = 1
    parameters["profile-level-id"] = profile_level_id.lower()
    codecs = [
        RTCRtpCodecParameters(
            mimeType="video/H264",
            clockRate=90000,
            payloadType=offered.payloadType,
            rtcpFeedback=[fb for fb in _SUPPORTED_FEEDBACK if fb in offered.rtcpFeedback],
            parameters=parameters,
        )
    ]
    for codec in media.rtp.codecs:
        if codec.mimeType.lower() == "video/rtx" and codec.parameters.get("apt") == offered.payloadType:
            codecs.append(
                RTCRtpCodecParameters(
                    mimeType="video/rtx",
                    clockRate=90000,
                    payloadType=codec.payloadType,
                    parameters={"apt": offered.payloadType},
                )
            )
            break
    return H264Choice(codecs=codecs, exact_profile=bool(same))
