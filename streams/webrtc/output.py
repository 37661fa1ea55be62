"""WebRTC egress: WHEP sessions that pass a camera's H.264 through to viewers.

:class:`WebRtcOutput` owns every viewer session of the relay. A session is one
aiortc peer connection with one send-only video transceiver whose track
(:class:`~streams.webrtc.track.HubTrack`) reads a hub subscription. No
frame is ever decoded or encoded: aiortc only packetizes the camera's access
units into RTP.

Admission (``create_session``): the offer must be SDP, with a receiving video
m-line offering H.264 with ``packetization-mode=1`` and, for every m-line, a DTLS
fingerprint and role and ICE credentials (:mod:`streams.webrtc.offer_checks`);
then the relay's viewer ledger (:mod:`streams.viewers`) gives it a pending seat,
which becomes a live one when its connection is up. Its remote ICE candidates are
filtered and capped by :mod:`streams.webrtc.remote_candidates`.

Negotiation: the output waits briefly for the camera's first keyframe, which tells the
stream's real profile-level-id; aiortc applies the offer, and the transceiver's
negotiated codec list is replaced by the offered payload type of the stream's
profile carrying the stream's own parameters (see
:mod:`streams.webrtc.negotiation`), so the answer and the RTP sender both use
them. The whole negotiation is bounded by a timeout.

Sending: by default (``fast_path``) aiortc's RTP sender idles and
:mod:`streams.webrtc.fanout` sends instead, packetizing each access unit
once per camera and only writing a header per viewer; with ``fast_path=False``,
or with an aiortc that lacks what the fast path binds to, aiortc's own sender
reads a :class:`~streams.webrtc.track.HubTrack`.

Lifecycle: each session has one supervising task, owned here (plus, on the
fast path, the viewer's sending task, which the supervisor starts and ends). It ends the
session when asked (``close_session``/``stop``), when ICE or the connection
fails or closes, when the connection is not up within
``pending_timeout`` (a viewer that vanished before ICE completed, or an offer
that was never meant to connect), when its camera's live seats (of every protocol) were
all taken while it connected, or when a connected viewer that
is being sent media has been silent (no RTCP nor any other packet) for
``silence_timeout`` ("disconnected") and then ``disconnect_grace`` more seconds.
Ending closes the peer connection and the hub subscription.

Audio (optional, ``audio_hub``): see :mod:`streams.webrtc.audio`. When
the offer receives the audio hub's codec, a second, send-only transceiver
passes its packets through with aiortc's own sender; otherwise the audio m-line
is answered inactive. Audio never fails a session: the video is answered either way.

Event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence

from aiortc import RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.stats import RTCTransportStats

from streams.errors import CapacityError, NegotiationError, StreamNotReady, WrongOutput
from streams.hub import Hub
from streams.packets import StreamInfo
from streams.viewers import Seat, ViewerLedger
from streams.webrtc import audio as webrtc_audio
from streams.webrtc import ice, negotiation, offer_checks
from streams.webrtc.fanout import FastPathUnavailable, FastRtpSender, IdleTrack, SharedPacketizer
from streams.webrtc.remote_candidates import CandidateGuard, CandidatePolicy
from streams.webrtc.session import SessionStats, WhepSession
from streams.webrtc.track import HubTrack

__all__ = ["CandidatePolicy", "SessionStats", "StreamNotReady", "WebRtcOutput", "WhepSession"]

log = logging.getLogger(__name__)

DEFAULT_NEGOTIATION_TIMEOUT = 5.0
DEFAULT_SILENCE_TIMEOUT = 3.0
DEFAULT_DISCONNECT_GRACE = 5.0
DEFAULT_PENDING_TIMEOUT = 5.0
_CLOSE_TIMEOUT = 5.0


class WebRtcOutput:
    """Every WHEP viewer session of the relay. See the module docstring."""

    def __init__(
        self,
        *,
        ice_servers: Sequence[RTCIceServer] | None = None,
        ice_host_addresses: Sequence[str] | None = None,
        viewers: ViewerLedger | None = None,
        pending_timeout: float = DEFAULT_PENDING_TIMEOUT,
        candidates: CandidatePolicy | None = None,
        info_timeout: float = 5.0,
        negotiation_timeout: float = DEFAULT_NEGOTIATION_TIMEOUT,
        silence_timeout: float = DEFAULT_SILENCE_TIMEOUT,
        disconnect_grace: float = DEFAULT_DISCONNECT_GRACE,
        fast_path: bool = True,
        on_end: Callable[[WhepSession], None] | None = None,
    ) -> None:
        self._on_end = on_end
        self._ice_servers = list(ice_servers or [])
        self._ice_host_addresses = list(ice_host_addresses or [])
        self._viewers = viewers or ViewerLedger()
        self._pending_timeout = pending_timeout
        self._candidates = candidates or CandidatePolicy()
        self._info_timeout = info_timeout
        self._negotiation_timeout = negotiation_timeout
        self._silence_timeout = silence_timeout
        self._disconnect_grace = disconnect_grace
        self._poll = min(0.5, silence_timeout / 4)
        self._fast_path = fast_path
        self._packetizers: dict[Hub, SharedPacketizer] = {}
        """One per stream (hub) being watched: a camera's main, sub and transcoded streams differ."""
        self._sessions: dict[str, WhepSession] = {}
        self._supervisors: set[asyncio.Task[None]] = set()
        """Every session's supervisor, until it has finished (closing its peer connection)."""
        self._stopped = False

    # -- public API -------------------------------------------------------

    def session_count(self, camera_id: str | None = None) -> int:
        """Live sessions (negotiating ones excluded), of one camera or of all."""
        if camera_id is None:
            return len(self._sessions)
        return sum(1 for s in self._sessions.values() if s.camera_id == camera_id)

    def sessions(self) -> list[WhepSession]:
        return list(self._sessions.values())

    def busy_count(self) -> int:
        """Sessions not yet done with: live ones, and ended ones still closing."""
        return len(self._supervisors)

    def get(self, session_id: str) -> WhepSession | None:
        return self._sessions.get(session_id)

    async def create_session(
        self,
        camera_id: str,
        hub: Hub,
        offer_sdp: str,
        audio_hub: Hub | None = None,
        *,
        owner: str | None = None,
    ) -> WhepSession:
        """Answer a WHEP offer for ``hub``'s camera, with ``audio_hub``'s audio (Opus or
        G.711) if it is given and the offer receives its codec. ``owner`` is an opaque
        key of whoever asks (a user), for the per-owner caps.

        Raises :class:`NegotiationError` (unusable offer), :class:`CapacityError`
        (a viewer cap is reached; :class:`~streams.errors.OwnerCapacityError` when
        it is one of ``owner``'s) or :class:`StreamNotReady` (no keyframe within
        ``info_timeout``).
        """
        if self._stopped:
            raise CapacityError("the WebRTC output is shutting down")
        description = negotiation.parse_offer(offer_sdp)
        media = negotiation.video_media(description)
        offer_checks.check_transport(offer_sdp)
        audio = webrtc_audio.plan_audio(description, audio_hub, camera_id)
        seat = self._viewers.admit(camera_id, "webrtc", owner, pending=True)
        try:
            info = await self._stream_info(camera_id, hub)
            choice = negotiation.select_h264(media, info.profile_level_id)
            session = await self._negotiate(camera_id, hub, offer_sdp, choice, audio, seat)
        except BaseException:
            self._viewers.release(seat)
            raise
        if self._stopped:  # stop() ran while this offer was being answered
            self._viewers.release(seat)
            session._track.stop()
            if session.audio is not None:
                session.audio.stop()
            await _close_pc(session._pc)
            raise CapacityError("the WebRTC output is shutting down")
        self._sessions[session.id] = session
        session._task = asyncio.create_task(self._supervise(session, hub), name=f"whep-session-{session.id}")
        self._supervisors.add(session._task)
        session._task.add_done_callback(self._supervisors.discard)
        log.info(
            "WHEP session %s for %s: H.264 pt %d profile-level-id %s, audio %s",
            session.id,
            camera_id,
            choice.payload_type,
            choice.profile_level_id,
            session.audio_codec or "none",
        )
        return session

    async def close_session(self, session_id: str) -> bool:
        """End a session and free everything it holds. False if it is unknown."""
        session = self._sessions.get(session_id)
        if session is None:
            return False
        session._request_close("closed by request")
        if session._task is not None:
            await asyncio.shield(session._task)
        return True

    async def stop(self) -> None:
        """Close every session, and wait for those already ending to finish. Idempotent."""
        self._stopped = True
        for session in list(self._sessions.values()):
            session._request_close("relay stopping")
        if self._supervisors:
            await asyncio.gather(*self._supervisors, return_exceptions=True)

    # -- negotiation ------------------------------------------------------

    async def _stream_info(self, camera_id: str, hub: Hub) -> StreamInfo:
        info = await hub.described(self._info_timeout)
        if info.codec != "h264":
            raise NegotiationError(f"camera {camera_id} sends {info.codec}, not H.264")
        if hub.reorders:
            raise WrongOutput(
                f"camera {camera_id} sends B-frames, which WebRTC cannot play; watch it over MSE"
            )
        return info

    async def _negotiate(
        self,
        camera_id: str,
        hub: Hub,
        offer_sdp: str,
        choice: negotiation.H264Choice,
        audio: webrtc_audio.AudioPlan | None,
        seat: Seat,
    ) -> WhepSession:
        track: MediaStreamTrack = IdleTrack() if self._fast_path else HubTrack(hub)
        audio_track = webrtc_audio.AudioHubTrack(audio.hub) if audio is not None else None
        pc = RTCPeerConnection(ice.configuration(self._ice_servers))
        session_id = secrets.token_urlsafe(16)
        guard = CandidateGuard(
            self._candidates, ice.host_addresses(self._ice_host_addresses), f"WHEP session {session_id}"
        )
        try:
            async with asyncio.timeout(self._negotiation_timeout):
                # Video first: the session's first transceiver is its video.
                transceiver = pc.addTransceiver(track, direction="sendonly")
                audio_transceiver = (
                    pc.addTransceiver(audio_track, direction="sendonly") if audio_track else None
                )
                guard.install(pc)
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
                if transceiver.mid is None:
                    raise NegotiationError("the offer's video m-line could not be matched")
                # The codec list aiortc negotiated is what both createAnswer() and the
                # RTP sender read: replace it with the format chosen for passthrough.
                transceiver._codecs = list(choice.codecs)
                if audio and audio_transceiver and not webrtc_audio.install_codec(audio_transceiver, audio):
                    audio = None  # answered inactive: video only
                if self._ice_host_addresses:
                    ice.pin_host_addresses(pc, self._ice_host_addresses)
                await pc.setLocalDescription(await pc.createAnswer())
                answer = pc.localDescription.sdp
        except BaseException as err:
            track.stop()
            if audio_track is not None:
                audio_track.stop()
            await _close_pc(pc)
            if isinstance(err, NegotiationError):
                raise
            if isinstance(err, TimeoutError):
                raise NegotiationError("negotiation timed out") from err
            if isinstance(err, Exception):
                raise NegotiationError(f"the offer cannot be answered: {err or type(err).__name__}") from err
            raise
        feed = track if isinstance(track, HubTrack) else None
        session = WhepSession(session_id, camera_id, answer, pc, track, feed, stream=hub, seat=seat)
        if (summary := guard.summary()) is not None:
            log.info("WHEP session %s for %s: %s", session_id, camera_id, summary)
        if audio is not None and audio_track is not None:
            session.audio, session.audio_codec = audio_track, audio.codec_name
        elif audio_track is not None:
            audio_track.stop()
        pc.on("connectionstatechange", session._wake.set)
        pc.on("iceconnectionstatechange", session._wake.set)
        track.on("ended", session._wake.set)
        return session

    # -- supervision ------------------------------------------------------

    async def _supervise(self, session: WhepSession, hub: Hub) -> None:
        reason = "cancelled"
        try:
            reason = await self._watch(session, hub)
        except Exception:
            log.exception("WHEP session %s: supervisor failed", session.id)
            reason = "internal error"
        finally:
            session.end_reason = reason
            session._ended = True
            self._sessions.pop(session.id, None)
            self._viewers.release(session.seat)
            if session._fanout is not None:
                session._fanout.cancel()
                await asyncio.wait([session._fanout])
            session._track.stop()
            if session.audio is not None:
                session.audio.stop()
            await _close_pc(session._pc)
            _drop_retransmission_history(session)
            if not any(s.stream is session.stream for s in self._sessions.values()):
                self._packetizers.pop(hub, None)
            log.info("WHEP session %s for %s ended: %s", session.id, session.camera_id, reason)
            if self._on_end is not None:
                try:
                    self._on_end(session)
                except Exception:
                    log.exception("WHEP session %s: end listener failed", session.id)

    def _start_fanout(self, session: WhepSession, hub: Hub) -> None:
        packetizer = self._packetizers.get(hub)
        if packetizer is None:
            packetizer = self._packetizers[hub] = SharedPacketizer()
        transceiver = session._pc.getTransceivers()[0]
        try:
            fanout = FastRtpSender.from_transceiver(transceiver, hub, packetizer)
        except FastPathUnavailable as err:
            log.warning("WHEP session %s: %s; using aiortc's sender", session.id, err)
            if isinstance(session._track, IdleTrack):
                track = HubTrack(hub)
                session._track.fall_back(track)
                session._feed = track
            return
        session._feed = fanout
        session._fanout = asyncio.create_task(fanout.run(), name=f"whep-rtp-{session.id}")
        session._fanout.add_done_callback(lambda _: session._wake.set())

    async def _watch(self, session: WhepSession, hub: Hub) -> str:
        pc = session._pc
        sender = pc.getTransceivers()[0].sender
        last_rx = -1
        quiet_since: float | None = None
        while True:
            session._wake.clear()
            if session._close_reason is not None:
                return session._close_reason
            state, ice_state = pc.connectionState, pc.iceConnectionState
            if state in ("failed", "closed") or ice_state in ("failed", "closed"):
                return f"connection {state}, ICE {ice_state}"
            if session._feed_ended():
                return f"stream ended (connection {state})"
            now = time.monotonic()
            if state == "connected":
                if session._connected_at is None:
                    if (refused := self._viewers.promote(session.seat)) is not None:
                        return refused
                    session._connected_at = now
                    if self._fast_path:
                        self._start_fanout(session, hub)
                rx = await _packets_received(sender)
                if rx != last_rx:
                    last_rx, quiet_since = rx, None
                    session._silent = False
                elif session.packets_sent and quiet_since is None:
                    quiet_since = now
                if quiet_since is not None:
                    quiet = now - quiet_since
                    session._silent = quiet > self._silence_timeout
                    if quiet > self._silence_timeout + self._disconnect_grace:
                        return f"viewer silent for {quiet:.1f} s"
            elif session._connected_at is None and now - session._started > self._pending_timeout:
                return f"not connected within {self._pending_timeout:g} s"
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await session._wake.wait()


def _drop_retransmission_history(session: WhepSession) -> None:
    """Let go of the packets an ended session kept to answer NACKs.

    aiortc's peer connection and its RTP senders sit in reference cycles, so they
    are freed only by a full garbage collection, which a service with many
    long-lived objects runs rarely; each sender holds its last 128 RTP packets
    (``RTCRtpSender.__rtp_history``, used by aiortc's own sender: the fallback
    and audio), the fast path's sender 512. Emptied here, a viewer who left holds
    a few kilobytes until that collection instead of hundreds.
    """
    if isinstance(session._feed, FastRtpSender):
        session._feed.release()
    for transceiver in session._pc.getTransceivers():
        history = getattr(transceiver.sender, "_RTCRtpSender__rtp_history", None)
        if isinstance(history, dict):
            history.clear()


async def _packets_received(sender: RTCRtpSender) -> int:
    """Packets received from the viewer on the session's transport (RTCP, DTLS)."""
    report = await sender.getStats()
    return sum(s.packetsReceived for s in report.values() if isinstance(s, RTCTransportStats))


async def _close_pc(pc: RTCPeerConnection) -> None:
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT):
            await pc.close()
    except TimeoutError:
        log.warning("peer connection did not close within %g s", _CLOSE_TIMEOUT)
