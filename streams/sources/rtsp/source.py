"""The RTSP source: an asyncio RTSP client that yields H.264 or H.265 access units,
and the camera's audio frames when asked.

:class:`RtspSource` speaks RTSP 1.0 over one TCP connection (OPTIONS, DESCRIBE,
SETUP, PLAY, keepalives, TEARDOWN) and receives RTP either interleaved on that
connection (default) or on a UDP port pair. Access units are completed on the
RTP marker bit by the codec's depacketizer
(:class:`~streams.sources.rtsp.rtp.H264Depacketizer` or
:class:`~streams.sources.rtsp.rtp_h265.H265Depacketizer`), so a frame is handed on as
soon as its last packet arrives (no one-frame parser delay).

With ``SourceOptions.audio`` the first relayable audio track
(:mod:`streams.sources.rtsp.sdp_audio`) is set up too, on interleaved channels 2-3 or
a second UDP port pair, and its frames (:mod:`streams.sources.rtsp.rtp_audio`, on the
video's timeline) are yielded among the video's. Without it, only video is set
up. The read timeout counts video only: a camera whose picture died is dead even
if its sound still flows.

No thread and no task: everything runs inside the ``packets()`` generator on the
event loop that iterates it. Keepalives are written from the read loop; in TCP
mode their answers come back between ``$`` frames and are parsed there.
Closing or cancelling the generator sends TEARDOWN (best effort, short timeout)
and closes every socket.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncGenerator, Callable
from urllib.parse import unquote, urlsplit

from streams.codecs import h264, h265
from streams.errors import SourceAuthError, SourceError, SourceProtocolError
from streams.packets import Codec, MediaPacket, StreamInfo
from streams.redact import redact_url
from streams.sources.base import Source, SourceOptions
from streams.sources.failures import (
    BAD_URL,
    CLOSED,
    LOGIN_REFUSED,
    LOGIN_REQUIRED,
    NO_SESSION,
    SESSION_DROPPED,
    TCP_REFUSED,
    UDP_REFUSED,
    no_rtp_reason,
    status_reason,
)
from streams.sources.rtsp.audio import AudioSession, choose_audio, rtp_info_time
from streams.sources.rtsp.auth import Authenticator
from streams.sources.rtsp.connection import RtspConnection, RtspMessage, UdpReceiver
from streams.sources.rtsp.rtp import Depacketizer, H264Depacketizer, parse_rtp
from streams.sources.rtsp.rtp_h265 import H265Depacketizer
from streams.sources.rtsp.sdp import VideoTrack, parse_sdp
from streams.sources.rtsp.sdp_audio import AudioTrack

log = logging.getLogger(__name__)

_DEFAULT_SESSION_TIMEOUT = 60.0
_CODEC_NAMES: dict[Codec, str] = {"h264": "H.264", "h265": "H.265"}
_PARSE_SPS: dict[Codec, Callable[[bytes], StreamInfo]] = {"h264": h264.parse_sps, "h265": h265.parse_sps}


def _depacketizer(track: VideoTrack) -> Depacketizer:
    """The depacketizer for the track's codec, primed with the SDP's parameter sets."""
    if track.codec == "h265":
        return H265Depacketizer(
            h265.ParameterSets(track.vps, track.sps, track.pps),
            payload_type=track.payload_type,
            clock_rate=track.clock_rate,
        )
    return H264Depacketizer(
        h264.ParameterSets(track.sps, track.pps),
        payload_type=track.payload_type,
        clock_rate=track.clock_rate,
    )


def _split_url(options: SourceOptions) -> tuple[str, str, int, bool, Authenticator | None]:
    """Redacted URL, host, port, TLS and authenticator (credentials from options, else from the URL)."""
    url = redact_url(options.url)
    try:
        parts = urlsplit(options.url)
        tls = parts.scheme.lower() == "rtsps"
        port = parts.port or (322 if tls else 554)
    except ValueError as err:
        raise SourceProtocolError(f"{url}: malformed URL", public=BAD_URL) from err
    if parts.scheme.lower() not in ("rtsp", "rtsps") or not parts.hostname:
        raise SourceProtocolError(f"{url}: not an rtsp:// or rtsps:// URL", public=BAD_URL)
    username, password = options.username, options.password
    if username is None and parts.username is not None:
        username, password = unquote(parts.username), unquote(parts.password or "")
    auth = Authenticator(username, password or "") if username is not None else None
    return url, parts.hostname, port, tls, auth


def _resolve(base: str, control: str | None) -> str:
    """Absolute URL of a media or session ``a=control`` relative to the content base."""
    if not control or control == "*":
        return base
    if re.match(r"[a-z][a-z0-9+.-]*://", control, re.IGNORECASE):
        return redact_url(control)
    path, sep, query = base.partition("?")
    return (path if path.endswith("/") else path + "/") + control.lstrip("/") + sep + query


def _session(reply: RtspMessage, url: str) -> tuple[str, float]:
    value = reply.get("Session")
    if not value:
        raise SourceProtocolError(f"{url}: SETUP answer has no Session", public=NO_SESSION)
    session_id, *params = (p.strip() for p in value.split(";"))
    timeout = _DEFAULT_SESSION_TIMEOUT
    for param in params:
        key, _, number = param.partition("=")
        if key.lower() == "timeout" and number.strip().isdigit():
            timeout = float(number)
    return session_id, timeout


def _expect_ok(reply: RtspMessage, method: str, url: str) -> None:
    if not 200 <= reply.status < 300:
        raise SourceProtocolError(
            f"{url}: {method} answered {reply.status} {reply.reason}".rstrip(),
            public=status_reason(method, reply.status),
        )


class RtspSource(Source):
    """H.264 or H.265 video from an RTSP camera. See the module docstring."""

    def __init__(self, options: SourceOptions) -> None:
        super().__init__(options)
        self.info: StreamInfo | None = None
        """Codec, size and profile, from the SDP and then from in-band SPS; None until known."""
        self._info_sps: bytes | None = None
        self._audio: AudioSession | None = None

    async def packets(self) -> AsyncGenerator[MediaPacket, None]:
        url, host, port, tls, auth = _split_url(self.options)
        conn = RtspConnection(url, host, port, tls, self.options.connect_timeout, auth)
        udp = UdpReceiver() if self.options.transport == "udp" else None
        play_url = url
        self._audio = None
        try:
            await conn.open()
            public = ""
            reply = await conn.request("OPTIONS", url)
            if 200 <= reply.status < 300:
                public = (reply.get("Public") or "").upper()
            reply = await conn.request("DESCRIBE", url, {"Accept": "application/sdp"})
            _expect_ok(reply, "DESCRIBE", url)
            sdp_text = reply.body.decode("utf-8", "replace")
            sdp = parse_sdp(sdp_text)
            base = redact_url(reply.get("Content-Base") or reply.get("Content-Location") or url)
            play_url = _resolve(base, sdp.control)
            self.info = sdp.video.info
            audio_track = choose_audio(sdp_text, url) if self.options.audio else None
            self.audio_info = audio_track.info if audio_track is not None else None
            depacketizer = _depacketizer(sdp.video)
            video_url = _resolve(base, sdp.video.control)
            setup = await self._setup(conn, udp, video_url, 0, required=True)
            assert setup is not None
            channel, timeout = setup
            if audio_track is not None:
                audio_url = _resolve(base, audio_track.control)
                await self._setup_audio(conn, udp, audio_track, audio_url, channel, sdp.video.clock_rate)
            early: list[tuple[int, bytes, float]] = []
            reply = await conn.request("PLAY", play_url, {"Range": "npt=0.000-"}, early)
            _expect_ok(reply, "PLAY", url)
            self.opened()
            audio = self._audio
            if audio is not None:
                audio.sync.anchor(
                    rtp_info_time(reply, video_url, sdp.video.control),
                    rtp_info_time(reply, audio.url, audio.track.control),
                )
            log.info(
                "%s: playing %s%s over %s",
                url,
                _CODEC_NAMES[sdp.video.codec],
                f" and {audio.track.info.codec.upper()} audio" if audio is not None else "",
                self.options.transport.upper(),
            )
            keepalive = _Keepalive(
                conn,
                play_url,
                "GET_PARAMETER" if "GET_PARAMETER" in public else "OPTIONS",
                min(self.options.keepalive_interval, timeout * 0.8),
            )
            batch: list[MediaPacket] = []
            for ch, data, t in early:
                if ch == channel:
                    batch += self._push(depacketizer, data, t)
                elif audio is not None and ch == audio.channel:
                    batch += audio.push(data, t)
            while True:
                for packet in batch:
                    yield packet
                if udp is not None:
                    batch = await self._read_udp(conn, udp, depacketizer, keepalive)
                else:
                    batch = await self._read_tcp(conn, channel, depacketizer, keepalive)
        finally:
            try:
                await conn.teardown(play_url)
            finally:
                conn.close()
                if udp is not None:
                    udp.close()
                if self._audio is not None:
                    self._audio.close()

    async def _setup(
        self, conn: RtspConnection, udp: UdpReceiver | None, track_url: str, channel: int, *, required: bool
    ) -> tuple[int, float] | None:
        """SETUP one track: its interleaved channel and the session timeout, or None if an
        optional track was refused."""
        if udp is not None:
            await udp.open(conn.local_host)
            transport = f"RTP/AVP;unicast;client_port={udp.port}-{udp.port + 1}"
        else:
            transport = f"RTP/AVP/TCP;unicast;interleaved={channel}-{channel + 1}"
        reply = await conn.request("SETUP", track_url, {"Transport": transport})
        if not required and not 200 <= reply.status < 300:
            log.info("%s: SETUP of the audio track answered %d; video only", conn.url, reply.status)
            return None
        if reply.status == 461:
            raise SourceProtocolError(
                f"{conn.url}: the camera refuses RTP over {self.options.transport.upper()}",
                public=UDP_REFUSED if self.options.transport == "udp" else TCP_REFUSED,
            )
        _expect_ok(reply, "SETUP", conn.url)
        session, timeout = _session(reply, conn.url)
        conn.session = conn.session or session
        match = re.search(r"interleaved=(\d+)", reply.get("Transport") or "")
        return (int(match[1]) if match else channel), timeout

    async def _setup_audio(
        self,
        conn: RtspConnection,
        udp: UdpReceiver | None,
        track: AudioTrack,
        track_url: str,
        video_channel: int,
        video_clock: int,
    ) -> None:
        """SETUP the audio track as the session's second; without success, the session is video only."""
        audio = AudioSession(
            track, track_url, UdpReceiver(udp.arrived) if udp is not None else None, video_clock
        )
        self._audio = audio  # from here on, its sockets are closed with the session
        setup = await self._setup(conn, audio.udp, track_url, video_channel + 2, required=False)
        if setup is None or (udp is None and setup[0] in (video_channel, video_channel + 1)):
            self.audio_info = None
            self._audio = None
            audio.close()
            return
        audio.channel = setup[0]

    def _push(self, depacketizer: Depacketizer, data: bytes, received: float) -> list[MediaPacket]:
        packet = parse_rtp(data)
        if packet is None:
            return []
        out = depacketizer.push(packet, received)
        if self._audio is not None:
            self._audio.sync.video(out, depacketizer.origin)
        sps = depacketizer.sps
        if out and out[-1].keyframe and sps is not None and (self.info is None or self._info_sps is not sps):
            self._info_sps = sps
            try:
                self.info = _PARSE_SPS[depacketizer.codec](sps)
            except h264.BitstreamError:
                log.debug("%s: unparsable SPS", redact_url(self.options.url))
        return out

    async def _read_tcp(
        self, conn: RtspConnection, channel: int, depacketizer: Depacketizer, keepalive: _Keepalive
    ) -> list[MediaPacket]:
        """Read interleaved frames until at least one access unit is complete."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.read_timeout
        audio = self._audio
        while True:
            keepalive.poll()
            try:
                if loop.time() >= deadline:  # audio alone keeps arriving: do not wait for it
                    raise TimeoutError
                async with asyncio.timeout_at(deadline):
                    item = await conn.read_item()
            except TimeoutError as err:
                raise SourceError(
                    f"{conn.url}: no RTP for {self.options.read_timeout:g} s",
                    public=no_rtp_reason(self.options.read_timeout),
                ) from err
            if isinstance(item, RtspMessage):
                keepalive.answered(item)
            elif item[0] == channel:
                deadline = loop.time() + self.options.read_timeout
                out = self._push(depacketizer, item[1], time.monotonic())
                if out:
                    return out
            elif audio is not None and item[0] == audio.channel:
                out = audio.push(item[1], time.monotonic())
                if out:
                    return out

    async def _read_udp(
        self, conn: RtspConnection, udp: UdpReceiver, depacketizer: Depacketizer, keepalive: _Keepalive
    ) -> list[MediaPacket]:
        """Read RTP datagrams until at least one access unit is complete."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.read_timeout
        audio = self._audio
        audio_queue = audio.udp.queue if audio is not None and audio.udp is not None else None
        while True:
            if keepalive.due():
                keepalive.check(await conn.request(keepalive.method, keepalive.url))
            while not udp.queue and not audio_queue:
                if not conn.usable:
                    raise SourceError(f"{conn.url}: the camera closed the RTSP connection", public=CLOSED)
                udp.arrived.clear()
                try:
                    async with asyncio.timeout_at(deadline):
                        await udp.arrived.wait()
                except TimeoutError as err:
                    raise SourceError(
                        f"{conn.url}: no RTP for {self.options.read_timeout:g} s",
                        public=no_rtp_reason(self.options.read_timeout),
                    ) from err
            if audio is not None and audio_queue and (not udp.queue or audio_queue[0][1] < udp.queue[0][1]):
                if loop.time() >= deadline:  # audio alone keeps arriving
                    raise SourceError(
                        f"{conn.url}: no video RTP for {self.options.read_timeout:g} s",
                        public=no_rtp_reason(self.options.read_timeout, video=True),
                    )
                out = audio.push(*audio_queue.popleft())
            else:
                data, received = udp.queue.popleft()
                deadline = loop.time() + self.options.read_timeout
                out = self._push(depacketizer, data, received)
            if out:
                return out


class _Keepalive:
    """Keeps the RTSP session alive: GET_PARAMETER (or OPTIONS) every ``interval`` seconds."""

    def __init__(self, conn: RtspConnection, url: str, method: str, interval: float) -> None:
        self.conn, self.url, self.method = conn, url, method
        self.interval = max(interval, 0.5)
        self._next = time.monotonic() + self.interval
        self._pending: set[int] = set()
        self._refused = 0

    def due(self) -> bool:
        if time.monotonic() < self._next:
            return False
        self._next = time.monotonic() + self.interval
        return True

    def poll(self) -> None:
        """TCP mode: write a keepalive when due; its answer arrives among the frames."""
        if self.due():
            self._pending.add(self.conn.send(self.method, self.url))

    def answered(self, reply: RtspMessage) -> None:
        """TCP mode: a message read among the frames; act on it if it answers a keepalive."""
        if reply.status and reply.cseq in self._pending:
            self._pending.discard(reply.cseq)
            self.check(reply)

    def check(self, reply: RtspMessage) -> None:
        """React to a keepalive's answer."""
        if reply.status == 401:
            self._refused += 1
            if self._refused > 1 or not self.conn.has_credentials:
                raise SourceAuthError(
                    f"{self.conn.url}: the camera refused the credentials",
                    public=LOGIN_REFUSED if self.conn.has_credentials else LOGIN_REQUIRED,
                )
            self.conn.learn_challenge(reply)
            self._next = time.monotonic()
        elif reply.status == 454:
            raise SourceProtocolError(
                f"{self.conn.url}: the camera dropped the RTSP session", public=SESSION_DROPPED
            )
        elif not 200 <= reply.status < 300 and self.method != "OPTIONS":
            log.info(
                "%s: %s answered %d; keeping alive with OPTIONS", self.conn.url, self.method, reply.status
            )
            self.method = "OPTIONS"
        else:
            self._refused = 0


__all__ = ["RtspSource"]
