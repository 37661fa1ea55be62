"""A WHEP viewer for tests and benchmarks: a real aiortc peer that receives H.264.

``WhepClient`` offers one receive-only video transceiver (H.264 only by
default), hands the offer to a signalling callable or POSTs it to a WHEP URL
over HTTP, applies the answer and then counts what arrives:

* at the RTP level, always: access units completed by the marker bit, with their
  arrival times (``units``); with ``capture=True`` also their bytes, reassembled
  from the RTP payloads (single NAL unit, STAP-A, FU-A) into Annex-B;
* decoded frames, unless ``decode=False``: then aiortc's decoder thread is
  stopped as soon as it starts, and nothing is decoded at all.

With ``audio=True`` it also offers one receive-only audio transceiver (every
audio codec aiortc has: Opus, PCMU, PCMA), records the audio RTP payloads as
they arrive (``audio_payloads``) and counts the audio frames aiortc decodes
(``audio_frames``); ``audio_codec`` is the codec the answer chose, or None when
the answer declined audio.

``lose(ssrc, sequence_number)`` simulates packet loss: the RTP packets it
returns True for are dropped as they come off the socket, before SRTP and
aiortc see them (aiortc then asks for them again with NACKs).

The client reads aiortc's receiver through two per-instance wrappers
(``_handle_rtp_packet`` and ``receive``); nothing global is changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import av
import httpx
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.codecs.h264 import H264PayloadDescriptor
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtp import RtpPacket, is_rtcp

from streams.sources.whep.source import answer_as_offered
from streams.webrtc import ice

Signal = Callable[[str], Awaitable[str]]


@dataclass(slots=True)
class ReceivedUnit:
    """One access unit as it arrived: RTP timestamp, arrival time, bytes if captured."""

    timestamp: int
    arrived: float
    packets: int
    data: bytes | None = None


@dataclass(slots=True)
class DecodedFrame:
    arrived: float
    width: int
    height: int


@dataclass(slots=True)
class _Assembly:
    timestamp: int
    packets: dict[int, bytes] = field(default_factory=dict)


class WhepClient:
    """One viewer. Use ``async with`` or call :meth:`close`."""

    def __init__(
        self,
        *,
        decode: bool = True,
        capture: bool = False,
        codecs: Sequence[str] = ("H264",),
        ice_host_addresses: Sequence[str] | None = ("127.0.0.1",),
        lose: Callable[[int, int], bool] | None = None,
        audio: bool = False,
    ) -> None:
        self.audio = audio
        self.audio_codec: str | None = None
        self.audio_frames = 0
        self.audio_payloads: list[bytes] = []
        self._audio_reader: asyncio.Task[None] | None = None
        self.decode = decode
        self.capture = capture
        self._codecs = [c.lower() for c in codecs]
        self._ice_host_addresses = list(ice_host_addresses or [])
        self._lose = lose
        self.lost = 0
        self.pc = RTCPeerConnection(ice.configuration([]))
        self.offer_sdp = ""
        self.answer_sdp = ""
        self.location: str | None = None
        self._http: httpx.AsyncClient | None = None
        self._payload_type: int | None = None
        self._assembly: _Assembly | None = None
        self._reader: asyncio.Task[None] | None = None
        self.started = time.monotonic()
        self.connected_at: float | None = None
        self.units: list[ReceivedUnit] = []
        self.frames: list[DecodedFrame] = []
        self.rtp_packets = 0
        self._progress = asyncio.Event()
        self._closed = False

    # -- signalling -------------------------------------------------------

    async def create_offer(self) -> str:
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        capabilities = RTCRtpReceiver.getCapabilities("video")
        assert capabilities is not None
        wanted = [c for c in capabilities.codecs if c.name.lower() in self._codecs]
        if wanted:
            rtx = [c for c in capabilities.codecs if c.name.lower() == "rtx"]
            transceiver.setCodecPreferences(wanted + rtx)
        self._hook_receiver(transceiver.receiver)
        if self.audio:
            self._hook_audio(self.pc.addTransceiver("audio", direction="recvonly").receiver)
        if self._lose is not None:
            self._hook_loss(transceiver.receiver.transport.transport, self._lose)
        if self._ice_host_addresses:
            ice.pin_host_addresses(self.pc, self._ice_host_addresses)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.offer_sdp = self.pc.localDescription.sdp
        return self.offer_sdp

    async def apply_answer(self, answer_sdp: str) -> None:
        self.answer_sdp = answer_sdp
        description = aiortc_sdp.SessionDescription.parse(answer_sdp)
        for media in description.media:
            if media.kind == "video":
                h264 = [c for c in media.rtp.codecs if c.mimeType.lower() == "video/h264"]
                self._payload_type = h264[0].payloadType if h264 else None
            elif media.kind == "audio" and media.direction not in ("inactive", "recvonly"):
                self.audio_codec = media.rtp.codecs[0].name if media.rtp.codecs else None
        self.pc.on("connectionstatechange", self._on_state)
        applied = answer_as_offered(answer_sdp, self.offer_sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=applied, type="answer"))
        if self.decode:
            receiver = self.pc.getTransceivers()[0].receiver
            self._reader = asyncio.create_task(self._read_frames(receiver), name="whep-client-reader")
        audio = [t.receiver for t in self.pc.getTransceivers() if t.kind == "audio"]
        if audio and audio[0].track is not None and self.audio_codec is not None:
            self._audio_reader = asyncio.create_task(self._read_audio(audio[0]), name="whep-client-audio")

    async def connect(self, signal: Signal) -> str:
        """Offer, let ``signal`` turn the offer into an answer, apply it."""
        answer = await signal(await self.create_offer())
        await self.apply_answer(answer)
        return answer

    async def connect_http(self, http: httpx.AsyncClient, url: str, *, http_timeout: float = 10.0) -> str:
        """WHEP over HTTP: POST the offer, expect 201 with the answer and a Location."""
        offer = await self.create_offer()
        response = await http.post(
            url, content=offer, headers={"content-type": "application/sdp"}, timeout=http_timeout
        )
        response.raise_for_status()
        self._http = http
        location = response.headers.get("location")
        self.location = str(response.url.join(location)) if location else None
        await self.apply_answer(response.text)
        return response.text

    # -- what arrives -----------------------------------------------------

    def _on_state(self) -> None:
        if self.pc.connectionState == "connected" and self.connected_at is None:
            self.connected_at = time.monotonic()
        self._progress.set()

    def _hook_receiver(self, receiver: RTCRtpReceiver) -> None:
        handle = receiver._handle_rtp_packet
        receive = receiver.receive

        async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
            self._on_rtp(packet)
            await handle(packet, arrival_time_ms)

        async def start_receiving(parameters: object) -> None:
            await receive(parameters)  # type: ignore[arg-type]
            if not self.decode:
                # End aiortc's decoder thread before any frame reaches it.
                receiver._RTCRtpReceiver__stop_decoder()  # type: ignore[attr-defined]

        receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]
        receiver.receive = start_receiving  # type: ignore[method-assign]

    def _hook_audio(self, receiver: RTCRtpReceiver) -> None:
        handle = receiver._handle_rtp_packet

        async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
            self.audio_payloads.append(packet.payload)
            self._progress.set()
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]

    def _hook_loss(self, ice_transport: RTCIceTransport, lose: Callable[[int, int], bool]) -> None:
        recv = ice_transport._recv

        async def lossy_recv() -> bytes:
            while True:
                data = await recv()
                if len(data) >= 12 and 128 <= data[0] < 192 and not is_rtcp(data):
                    ssrc, seq = int.from_bytes(data[8:12], "big"), int.from_bytes(data[2:4], "big")
                    if lose(ssrc, seq):
                        self.lost += 1
                        continue
                return data

        ice_transport._recv = lossy_recv

    def _on_rtp(self, packet: RtpPacket) -> None:
        if packet.payload_type != self._payload_type:
            return  # RTX and anything else
        self.rtp_packets += 1
        unit = self._assembly
        if unit is None or unit.timestamp != packet.timestamp:
            unit = self._assembly = _Assembly(packet.timestamp)
        unit.packets[packet.sequence_number] = packet.payload
        if packet.marker:
            self._assembly = None
            data = None
            if self.capture:
                parts = [unit.packets[seq] for seq in sorted(unit.packets)]
                data = b"".join(H264PayloadDescriptor.parse(p)[1] for p in parts)
            self.units.append(ReceivedUnit(unit.timestamp, time.monotonic(), len(unit.packets), data))
            self._progress.set()

    async def _read_frames(self, receiver: RTCRtpReceiver) -> None:
        track = receiver.track
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.VideoFrame)
                self.frames.append(DecodedFrame(time.monotonic(), frame.width, frame.height))
                self._progress.set()

    async def _read_audio(self, receiver: RTCRtpReceiver) -> None:
        track = receiver.track
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                self.audio_frames += 1
                self._progress.set()

    async def wait_until(self, predicate: Callable[[], bool], within: float) -> bool:
        """Wait until ``predicate()`` holds (checked on every arrival); False on timeout."""
        deadline = time.monotonic() + within
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.25)):
                    await self._progress.wait()
        return True

    async def wait_frames(self, count: int, within: float = 10.0) -> bool:
        """Wait for ``count`` decoded frames (or access units when not decoding)."""
        if self.decode:
            return await self.wait_until(lambda: len(self.frames) >= count, within)
        return await self.wait_until(lambda: len(self.units) >= count, within)

    # -- leaving ----------------------------------------------------------

    async def vanish(self) -> None:
        """Drop off the network without a word: close the ICE sockets, no DTLS goodbye."""
        for transceiver in self.pc.getTransceivers():
            await transceiver.receiver.transport.transport.stop()

    async def close(self) -> None:
        """DELETE the WHEP resource (if over HTTP), close the peer connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._http is not None and self.location is not None:
            with contextlib.suppress(httpx.HTTPError):
                await self._http.delete(self.location, timeout=5.0)
        await self.pc.close()
        for reader in (self._reader, self._audio_reader):
            if reader is not None:
                reader.cancel()
                await asyncio.wait([reader])

    async def __aenter__(self) -> WhepClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
