"""The WHEP source: a camera that is another service's WebRTC egress (WHEP, RFC 9725),
typically another Hallwatch's ``/api/v1/cameras/{id}/whep``, pulled as H.264 access units.

One session per iteration of :meth:`WhepSource.packets`: an aiortc peer connection
with one receive-only H.264 transceiver gathers its ICE candidates (on the
configured host addresses and ICE servers), the complete offer is POSTed
(:mod:`streams.sources.whep.signalling`), the answer applied, and from then on the
receiver's RTP is taken before aiortc would decode it
(:mod:`streams.sources.whep.tap`) and depacketized into Annex-B access units on
the marker bit, with SPS/PPS in front of every keyframe (from the stream, or the
answer's ``sprop-parameter-sets``). Nothing is decoded or re-encoded.

Keyframes are asked for (PLI) as soon as the first packet shows the sender's
SSRC and again, at most once a second, while a loss keeps the depacketizer
waiting for one. A WebRTC connection that fails, or no RTP for ``read_timeout``,
ends the session with a :class:`~streams.errors.SourceError`; the ingest
reconnects with its backoff. Closing the generator DELETEs the session on the
server (best effort, short timeout) and closes the peer connection.

Video only: audio is not offered (the configuration refuses ``audio`` for WHEP
cameras).

Event loop only; no task of its own (aiortc runs its transports' tasks).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncGenerator

import httpx
from aiortc import RTCIceServer, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from streams.codecs import h264
from streams.errors import SourceError, SourceProtocolError, UnsupportedCodec
from streams.packets import MediaPacket
from streams.sources.base import Source
from streams.sources.failures import NO_H264, NOT_WHEP, WEBRTC_FAILED, no_rtp_reason
from streams.sources.rtsp.rtp import H264Depacketizer
from streams.sources.rtsp.sdp import parse_sdp
from streams.sources.whep.signalling import Endpoint, delete_session, endpoint, post_offer
from streams.sources.whep.tap import ReceiverTap
from streams.webrtc import ice

log = logging.getLogger(__name__)

KEYFRAME_REQUEST_INTERVAL = 1.0
"""Seconds between two keyframe requests while waiting for a keyframe."""
DELETE_TIMEOUT = 2.0

_PROFILE = re.compile(r"^(a=fmtp:(\d+) .*profile-level-id=)([0-9a-fA-F]{6})", re.MULTILINE)


def answer_as_offered(answer_sdp: str, offer_sdp: str) -> str:
    """The answer with each H.264 profile-level-id put back to the one offered for its
    payload type. A relay answers a stream's true profile (High, say) even under a
    Constrained Baseline payload type; aiortc refuses any answer whose profile it did
    not offer, although what it receives is only passed on, never decoded here."""
    offered = {int(m[2]): m[3] for m in _PROFILE.finditer(offer_sdp)}
    return _PROFILE.sub(lambda m: m[1] + offered.get(int(m[2]), m[3]), answer_sdp)


def _h264_only() -> list[RTCRtpCodecCapability]:
    capabilities = RTCRtpReceiver.getCapabilities("video")
    assert capabilities is not None
    return [c for c in capabilities.codecs if c.mimeType.lower() == "video/h264"]


def _depacketizer(answer: str, ep: Endpoint) -> H264Depacketizer:
    """The depacketizer for the answer's video, primed with its parameter sets if it has any."""
    try:
        track = parse_sdp(answer).video
    except SourceError as err:
        raise SourceProtocolError(f"{ep.shown}: {err}", public=NO_H264) from err
    if track.codec != "h264" or _video_port(answer) == "0":
        raise UnsupportedCodec(f"{ep.shown}: the answer declines H.264 video", public=NO_H264)
    return H264Depacketizer(
        h264.ParameterSets(track.sps, track.pps), payload_type=track.payload_type, clock_rate=track.clock_rate
    )


def _video_port(sdp: str) -> str:
    """The port of the first video media: ``0`` when the answer rejects it."""
    line = next((line for line in sdp.splitlines() if line.startswith("m=video")), "m=video 0")
    return line.split()[1]


class WhepSource(Source):
    """H.264 video from a WHEP endpoint. See the module docstring."""

    async def packets(self) -> AsyncGenerator[MediaPacket, None]:
        options = self.options
        ep = endpoint(options.url, options.password)
        servers = [RTCIceServer(list(s.urls), s.username, s.credential) for s in options.ice_servers]
        pc = RTCPeerConnection(ice.configuration(servers))
        location: str | None = None
        http = httpx.AsyncClient(follow_redirects=False)
        try:
            transceiver = pc.addTransceiver("video", direction="recvonly")
            transceiver.setCodecPreferences(_h264_only())
            tap = ReceiverTap(transceiver.receiver)
            pc.on("connectionstatechange", tap.arrived.set)  # wakes the reader to look at the state
            if options.ice_host_addresses:
                ice.pin_host_addresses(pc, options.ice_host_addresses)
            async with asyncio.timeout(options.connect_timeout):
                await pc.setLocalDescription(await pc.createOffer())
            offer = pc.localDescription.sdp
            answer, location = await post_offer(http, ep, offer, options.connect_timeout)
            depacketizer = _depacketizer(answer, ep)
            try:
                await pc.setRemoteDescription(
                    RTCSessionDescription(answer_as_offered(answer, offer), "answer")
                )
            except ValueError as err:
                raise SourceProtocolError(f"{ep.shown}: unusable answer: {err}", public=NOT_WHEP) from err
            self.opened()
            log.info("%s: WHEP session open", ep.shown)
            reader = _Reader(tap, depacketizer, pc, ep, options.read_timeout)
            while True:
                for packet in await reader.next_units():
                    yield packet
        finally:
            try:
                if location is not None:
                    await delete_session(http, ep, location, DELETE_TIMEOUT)
            finally:
                await http.aclose()
                await pc.close()


class _Reader:
    """Turns the tap's RTP into access units and asks for keyframes when needed."""

    def __init__(
        self,
        tap: ReceiverTap,
        depacketizer: H264Depacketizer,
        pc: RTCPeerConnection,
        ep: Endpoint,
        read_timeout: float,
    ) -> None:
        self.tap, self.depacketizer, self.pc, self.ep = tap, depacketizer, pc, ep
        self.read_timeout = read_timeout
        self._requested_at: float | None = None

    async def next_units(self) -> list[MediaPacket]:
        """Read RTP until at least one access unit is complete."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout
        queue = self.tap.queue
        while True:
            while not queue:
                if self.pc.connectionState in ("failed", "closed"):
                    raise SourceError(
                        f"{self.ep.shown}: WebRTC {self.pc.connectionState}", public=WEBRTC_FAILED
                    )
                self.tap.arrived.clear()
                try:
                    async with asyncio.timeout_at(deadline):
                        await self.tap.arrived.wait()
                except TimeoutError as err:
                    raise SourceError(
                        f"{self.ep.shown}: no RTP for {self.read_timeout:g} s",
                        public=no_rtp_reason(self.read_timeout),
                    ) from err
            packet, received = queue.popleft()
            deadline = loop.time() + self.read_timeout
            out = self.depacketizer.push(packet, received)
            if self.depacketizer.waiting_for_keyframe:
                await self._request_keyframe()
            if out:
                return out

    async def _request_keyframe(self) -> None:
        now = time.monotonic()
        if self._requested_at is None or now - self._requested_at >= KEYFRAME_REQUEST_INTERVAL:
            self._requested_at = now
            log.debug("%s: asking for a keyframe (%d packets lost)", self.ep.shown, self.depacketizer.lost)
            await self.tap.request_keyframe()


__all__ = ["WhepSource", "answer_as_offered"]
