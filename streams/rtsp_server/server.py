"""The RTSP server: a relay's cameras re-served as ``rtsp://host:port/<camera>[/sub]``.

One asyncio server; each client connection runs :meth:`RtspServer._serve`, which
reads requests (and interleaved RTCP), answers them one by one, and on leaving
stops every session it set up. The camera's codecs go out as they arrive: H.264
or H.265 video, and the camera's sound when the relay carries it, never
re-encoded, from the hubs the other viewers read, so a camera still has one
upstream session however many RTSP clients watch it.

Methods: ``OPTIONS``, ``DESCRIBE`` (the SDP of :mod:`.sdp`, with the camera's
parameter sets), ``SETUP`` (TCP interleaved, or UDP with the client's port
pair), ``PLAY``, ``TEARDOWN``, and ``GET_PARAMETER``/``SET_PARAMETER`` as
keep-alives. ``DESCRIBE``, ``SETUP`` and ``PLAY`` need Digest credentials
(:mod:`.digest`), which the control plane's authorizer judges (:mod:`.access`);
sessions belong to the connection that set them up. ``PLAY`` answers with
``RTP-Info``: each track's URL and the sequence number and RTP timestamp its
first packet will carry (RFC 2326, 12.33).

RTCP (:mod:`streams.formats.rtcp`): every track sends sender reports (see
:mod:`.session`), and what clients send back is read. A UDP session that hears
nothing from its client for ``session_timeout`` seconds is ended; a request on
its connection, or an RTCP packet from the client's RTCP port (or about one of
the session's streams) keeps it alive, as live555 and MediaMTX have it, so a
client that sends only receiver reports stays. An RTCP BYE, over UDP or on an
interleaved channel, ends the session. A TCP session lives as long as its
connection, and a connection that sets nothing up is closed after the same time.

Event loop only; every connection's task and the housekeeping task are owned
by the server and awaited by :meth:`stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from streams.errors import CapacityError, StreamError
from streams.formats import rtcp
from streams.hub import HubClosed
from streams.packets import CLOCK_RATE, Codec
from streams.rtsp_server import sdp
from streams.rtsp_server.access import AccessRequest, Authorizer, Verdict
from streams.rtsp_server.digest import Nonces, NonceState, challenge, parse_authorization
from streams.rtsp_server.messages import BadMessage, Interleaved, Request, Response, read_message
from streams.rtsp_server.payloads import RtpTrack
from streams.rtsp_server.session import DEFAULT_WRITE_TIMEOUT, RtspSession, TcpSink, Track, UdpSink
from streams.rtsp_server.udp import UdpPorts
from streams.specs import StreamName

if TYPE_CHECKING:
    from streams.manager import StreamManager

log = logging.getLogger(__name__)

PUBLIC = "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
_HOUSEKEEPING = 5.0
_SEND_BUFFER = 256 * 1024
_CLIENT_PORTS = re.compile(r"client_port=(\d+)(?:-(\d+))?")
_CHANNELS = re.compile(r"interleaved=(\d+)(?:-(\d+))?")


@dataclass(frozen=True, slots=True)
class RtspSettings:
    host: str = "127.0.0.1"
    port: int = 8554
    """0 picks a free port (tests); :attr:`RtspServer.port` says which."""
    session_timeout: float = 60.0
    write_timeout: float = DEFAULT_WRITE_TIMEOUT
    max_connections: int = 512
    udp: bool = True


@dataclass(frozen=True, slots=True)
class _Target:
    camera_id: str
    stream: StreamName
    track: int | None


class _Connection:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer: str | None = peer[0] if peer else None
        self.sessions: dict[str, RtspSession] = {}


class RtspServer:
    """See the module docstring."""

    def __init__(self, manager: StreamManager, authorize: Authorizer, settings: RtspSettings) -> None:
        self._manager = manager
        self._authorize = authorize
        self.settings = settings
        self._nonces = Nonces()
        self._server: asyncio.Server | None = None
        self._udp = UdpPorts(settings.host, self._heard) if settings.udp else None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._housekeeper: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        if self._server is not None:
            return
        if self._udp is not None:
            await self._udp.start()
        self._server = await asyncio.start_server(self._accept, self.settings.host, self.settings.port)
        self._housekeeper = asyncio.create_task(self._expire(), name="rtsp-server housekeeping")
        log.info("RTSP server on %s:%d", self.settings.host, self.port)

    async def stop(self) -> None:
        """Close the listener, every connection and session. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = [t for t in (self._housekeeper, *self._connections) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        if self._udp is not None:
            self._udp.close()

    # -- connections ----------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.settings.max_connections:
            writer.close()
            return
        conn = _Connection(writer)
        task = asyncio.create_task(self._serve(reader, conn), name=f"rtsp connection {conn.peer}")
        self._connections[task] = conn
        task.add_done_callback(self._connections.pop)

    async def _serve(self, reader: asyncio.StreamReader, conn: _Connection) -> None:
        conn.writer.transport.set_write_buffer_limits(high=_SEND_BUFFER)
        try:
            while True:
                idle = (
                    None if any(s.playing for s in conn.sessions.values()) else self.settings.session_timeout
                )
                async with asyncio.timeout(idle):
                    message = await read_message(reader)
                if isinstance(message, Interleaved):
                    _touch(conn)
                    await _interleaved_rtcp(conn, message)
                    continue
                response = await self._answer(conn, message)
                conn.writer.write(response.encode(message.cseq))
                async with asyncio.timeout(self.settings.write_timeout):
                    await conn.writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, BadMessage) as err:
            log.debug("RTSP connection from %s ends: %s", conn.peer, type(err).__name__)
        finally:
            for session in list(conn.sessions.values()):
                await session.stop("client left")
            conn.writer.close()

    async def _answer(self, conn: _Connection, request: Request) -> Response:
        method = request.method
        if method == "OPTIONS":
            _touch(conn)
            return Response(200, {"Public": PUBLIC})
        if method in ("GET_PARAMETER", "SET_PARAMETER", "TEARDOWN"):
            session = self._session_of(conn, request)
            if session is None:
                return Response(454)
            session.touch()
            if method == "TEARDOWN":
                await session.stop("teardown")
            return Response(200, {"Session": session.id})
        if method not in ("DESCRIBE", "SETUP", "PLAY"):
            return Response(501)
        target = _target(request.uri)
        if target is None:
            return Response(404)
        verdict = await self._check(conn, request, target)
        if verdict.status != 200:
            return _refusal(verdict.status, self._nonces, request)
        try:
            if method == "DESCRIBE":
                return await self._describe(request, target)
            if method == "SETUP":
                return self._setup(conn, request, target, verdict)
            return self._play(conn, request, verdict)
        except StreamError as err:  # UnknownCamera, StreamNotReady
            log.debug("RTSP %s %s: %s", method, target.camera_id, err)
            return Response(404 if type(err).__name__ == "UnknownCamera" else 503)

    async def _check(self, conn: _Connection, request: Request, target: _Target) -> Verdict:
        credentials = parse_authorization(request.header("authorization"), request.method)
        if credentials is None:
            return Verdict(401)
        state = self._nonces.check(credentials.nonce)
        if state is not NonceState.VALID:
            return Verdict(401, reason="stale" if state is NonceState.STALE else "")
        return await self._authorize(AccessRequest(credentials, target.camera_id, conn.peer))

    async def _describe(self, request: Request, target: _Target) -> Response:
        hub, audio_hub = self._manager.rtsp_media(target.camera_id, target.stream)
        info = await hub.described(self._manager.settings.info_timeout)
        audio = sdp.audio_track(audio_hub.audio) if audio_hub is not None and audio_hub.audio else None
        body = sdp.describe(int(time.time()), f"Hallwatch {target.camera_id}", info, hub.last_keyframe, audio)
        base = request.uri.split("?")[0].rstrip("/") + "/"
        return Response(200, {"Content-Type": "application/sdp", "Content-Base": base}, body.encode())

    def _setup(self, conn: _Connection, request: Request, target: _Target, verdict: Verdict) -> Response:
        hub, audio_hub = self._manager.rtsp_media(target.camera_id, target.stream)
        index = target.track if target.track is not None else sdp.VIDEO_TRACK
        session = self._session_of(conn, request)
        if request.header("session") is not None and session is None:
            return Response(454)
        if session is not None and (
            session.playing or session.verdict.user != verdict.user or session.camera_id != target.camera_id
        ):
            return Response(455)
        codec: Codec
        if index == sdp.VIDEO_TRACK:
            if hub.info is None:
                return Response(503)
            media_hub, codec = hub, hub.info.codec
            rtp = RtpTrack(sdp.VIDEO_PAYLOAD_TYPE, CLOCK_RATE)
        elif index == sdp.AUDIO_TRACK and audio_hub is not None and audio_hub.audio is not None:
            described = sdp.audio_track(audio_hub.audio)
            media_hub, codec = audio_hub, audio_hub.audio.codec
            rtp = RtpTrack(described.payload_type, described.clock_rate)
        else:
            return Response(404)
        answer, sink = self._transport(conn, request.header("transport") or "", index)
        if sink is None:
            return Response(461)
        if session is None:
            session = RtspSession(target.camera_id, target.stream, verdict, conn.peer, self._stopped(conn))
            try:
                self._manager.rtsp.add(session)
            except CapacityError as err:
                log.info("RTSP viewer of %s refused: %s", target.camera_id, err)
                return Response(453)
            conn.sessions[session.id] = session
        shared = self._manager.rtsp.templates(media_hub, codec, rtp.payload_type)
        session.tracks[index] = Track(media_hub, codec, rtp, sink, shared, request.uri)
        transport = f"{answer};ssrc={rtp.ssrc:08X}"
        return Response(200, {"Transport": transport, "Session": f"{session.id};timeout={self._timeout()}"})

    def _transport(self, conn: _Connection, spec: str, index: int) -> tuple[str, TcpSink | UdpSink | None]:
        for choice in spec.split(","):
            if "RTP/AVP/TCP" in choice.upper():
                found = _CHANNELS.search(choice)
                channel = int(found.group(1)) if found else 2 * index
                rtcp_channel = int(found.group(2)) if found and found.group(2) else channel + 1
                answer = f"RTP/AVP/TCP;unicast;interleaved={channel}-{rtcp_channel}"
                return answer, TcpSink(conn.writer, channel, rtcp_channel, self.settings.write_timeout)
            ports = _CLIENT_PORTS.search(choice)
            udp = self._udp
            if udp is not None and udp.rtp is not None and udp.rtcp is not None and ports and conn.peer:
                rtp_port = int(ports.group(1))
                rtcp_port = int(ports.group(2) or rtp_port + 1)
                server_rtp, server_rtcp = udp.ports
                answer = (
                    f"RTP/AVP;unicast;client_port={rtp_port}-{rtcp_port};"
                    f"server_port={server_rtp}-{server_rtcp}"
                )
                return answer, UdpSink(udp.rtp, udp.rtcp, (conn.peer, rtp_port), (conn.peer, rtcp_port))
        return "", None

    def _play(self, conn: _Connection, request: Request, verdict: Verdict) -> Response:
        session = self._session_of(conn, request)
        if session is None or not session.tracks:
            return Response(454)
        if session.verdict.user != verdict.user:
            return Response(455)
        session.touch()
        rtp_info = ",".join(track.rtp_info() for _, track in sorted(session.tracks.items()))
        try:
            session.play()
        except HubClosed:
            return Response(503)
        return Response(200, {"Session": session.id, "Range": "npt=now-", "RTP-Info": rtp_info})

    # -- sessions -------------------------------------------------------------------

    def _session_of(self, conn: _Connection, request: Request) -> RtspSession | None:
        header = request.header("session")
        return conn.sessions.get(header.split(";")[0].strip()) if header else None

    def _stopped(self, conn: _Connection) -> Callable[[RtspSession], None]:
        def forget(session: RtspSession) -> None:
            conn.sessions.pop(session.id, None)
            self._manager.rtsp.remove(session)

        return forget

    def _timeout(self) -> int:
        return max(1, round(self.settings.session_timeout))

    def _heard(self, data: bytes, address: tuple[str, int], on_rtcp_port: bool) -> None:
        """A datagram from a client: it is still there, and with an RTCP BYE it leaves."""
        items: list[rtcp.Report | rtcp.Bye] = []
        if on_rtcp_port:
            with contextlib.suppress(rtcp.BadRtcp):
                items = rtcp.parse(data)
        about = {ssrc for item in items if isinstance(item, rtcp.Report) for ssrc in item.about}
        for conn in self._connections.values():
            for session in conn.sessions.values():
                if any(_sent_by(t, address, on_rtcp_port, about) for t in session.tracks.values()):
                    session.touch()
                    session.rtcp_reports += sum(isinstance(item, rtcp.Report) for item in items)
                    if any(isinstance(item, rtcp.Bye) for item in items):
                        session.leaving = "client sent RTCP BYE"
                        self._wake.set()

    async def _expire(self) -> None:
        interval = min(_HOUSEKEEPING, self.settings.session_timeout / 2)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            limit = time.monotonic() - self.settings.session_timeout
            for conn in list(self._connections.values()):
                for session in list(conn.sessions.values()):
                    udp = any(isinstance(t.sink, UdpSink) for t in session.tracks.values())
                    if session.leaving is not None:
                        await session.stop(session.leaving)
                    elif (udp and session.last_seen < limit) or session.ended is not None:
                        await session.stop("keep-alive timeout")


def _touch(conn: _Connection) -> None:
    for session in conn.sessions.values():
        session.touch()


def _sent_by(track: Track, address: tuple[str, int], on_rtcp_port: bool, about: set[int]) -> bool:
    """Whether a datagram from ``address`` comes from the client of ``track``: from its own
    RTP or RTCP port, or from its host with a report about the track's stream."""
    sink = track.sink
    if not isinstance(sink, UdpSink):
        return False
    if address == (sink.rtcp_address if on_rtcp_port else sink.address):
        return True
    return address[0] == sink.address[0] and track.rtp.ssrc in about


async def _interleaved_rtcp(conn: _Connection, frame: Interleaved) -> None:
    """An RTCP BYE on a session's RTCP channel ends that session."""
    for session in list(conn.sessions.values()):
        if any(
            isinstance(t.sink, TcpSink) and t.sink.rtcp_channel == frame.channel
            for t in session.tracks.values()
        ):
            with contextlib.suppress(rtcp.BadRtcp):
                if any(isinstance(item, rtcp.Bye) for item in rtcp.parse(frame.data)):
                    await session.stop("client sent RTCP BYE")


def _target(uri: str) -> _Target | None:
    """The camera, stream and track a request URL names: ``/<camera>[/sub][/trackID=N]``."""
    with contextlib.suppress(ValueError):
        parts = [p for p in urlsplit(uri).path.split("/") if p]
        track = None
        if parts and parts[-1].startswith("trackID="):
            track = int(parts.pop().removeprefix("trackID="))
        if len(parts) == 1:
            return _Target(parts[0], "main", track)
        if len(parts) == 2 and parts[1] == "sub":
            return _Target(parts[0], "sub", track)
    return None


def _refusal(status: int, nonces: Nonces, request: Request) -> Response:
    if status == 401:
        return Response(
            401, {"WWW-Authenticate": challenge(nonces.issue(), stale=_is_stale(nonces, request))}
        )
    return Response(status)


def _is_stale(nonces: Nonces, request: Request) -> bool:
    credentials = parse_authorization(request.header("authorization"), request.method)
    return credentials is not None and nonces.check(credentials.nonce) is NonceState.STALE
