"""Viewer processes for the relay benchmark: many lean WHEP viewers and one direct RTSP reader.

A :class:`ViewerProcess` is a child process (multiprocessing, ``spawn``) running
one asyncio loop. The benchmark drives it over a pipe with small command tuples
(see :func:`_dispatch`); every command gets one reply. Viewers live in a child so
that their CPU never counts as relay CPU.

A viewer is an aiortc peer connection with one receive-only H.264 transceiver.
Its receiver's ``_handle_rtp_packet`` is shadowed per instance: aiortc's
jitter buffer, NACK generator and decoder never see a packet (the decoder
thread is ended as soon as it starts); :class:`~_units.RtpUnits` counts complete
access units and reads their burnt-in clock instead. It still feeds aiortc's
receive statistics, so RTCP receiver reports go out and the relay sees a live
viewer. The direct reader (:class:`~_units.DirectReader`) runs in a viewer
process too. A process can hold MSE viewers instead (``join`` with protocol
``mse``: :class:`~_mse.MseViewer`, WebSocket clients of ``mse.ws``; ``rtsp``: readers of the
RTSP re-serve; ``gb28181``: live sessions of a superior platform held by the process, see
``_cascade_clients.py``) and time a
new viewer's first decodable picture (``first_picture``, see ``_first_picture.py``).

Threads: the child's event loop does everything; one executor thread waits on
the pipe. The parent side (:class:`ViewerProcess`) is plain blocking code.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import multiprocessing.connection
import re
import signal
import socket
import time
from typing import Any

from _cascade_clients import Cascade, GbSession, RtspOptions, RtspViewer, first_packet
from _mse import MseViewer
from _units import DirectReader, RtpUnits, catch_up

_RCVBUF = 4 * 1024 * 1024
_JOIN_TIMEOUT = 20.0
_JOIN_PARALLEL = 6
_FMTP_PROFILE = re.compile(r"^(a=fmtp:(\d+) [^\r\n]*profile-level-id=)([0-9a-fA-F]{6})", re.MULTILINE)


def as_offered_profile(answer: str, offer: str) -> str:
    """The answer with each H.264 profile-level-id put back to the one offered for its payload type.

    The relay answers the camera's true profile (High) under an offered Constrained
    Baseline payload type, as browsers accept; aiortc refuses an answer with a profile
    it did not offer, although its decoder plays any.
    """
    offered = {m[2]: m[3] for m in _FMTP_PROFILE.finditer(offer)}
    return _FMTP_PROFILE.sub(lambda m: m[1] + offered.get(m[2], m[3]), answer)


class Viewer:
    """One WHEP viewer that receives RTP and decodes nothing (``decode=True``: aiortc decodes too)."""

    def __init__(self, http: Any, base_url: str, camera: str, *, decode: bool = False) -> None:
        from aiortc import RTCPeerConnection

        from streams.webrtc import ice

        self.camera = camera
        self.decode = decode
        self.units = RtpUnits()
        self._http = http
        self._url = f"{base_url}/api/v1/cameras/{camera}/whep"
        self._base = base_url
        self.pc = RTCPeerConnection(ice.configuration([]))
        self.location: str | None = None
        self.posted: float | None = None
        self.answered: float | None = None
        self.connected: float | None = None
        self._up = asyncio.Event()
        self._payload_type: int | None = None
        self._stats: Any = None
        self._receiver: Any = None

    async def join(self) -> None:
        """POST the offer, apply the answer, wait until ICE and DTLS are up."""
        from aiortc import RTCRtpReceiver, RTCSessionDescription

        from streams.webrtc import ice

        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        caps = RTCRtpReceiver.getCapabilities("video")
        assert caps is not None
        transceiver.setCodecPreferences([c for c in caps.codecs if c.name.lower() == "h264"])
        self._hook(transceiver.receiver)
        ice.pin_host_addresses(self.pc, ["127.0.0.1"])

        @self.pc.on("connectionstatechange")
        def _state() -> None:
            if self.pc.connectionState == "connected" and self.connected is None:
                self.connected = time.monotonic()
            if self.pc.connectionState in ("connected", "failed", "closed"):
                self._up.set()

        await self.pc.setLocalDescription(await self.pc.createOffer())
        self._grow_buffers()
        self.posted = time.monotonic()
        response = await self._http.post(
            self._url,
            content=self.pc.localDescription.sdp,
            headers={"content-type": "application/sdp"},
            timeout=_JOIN_TIMEOUT,
        )
        if response.status_code != 201:
            raise RuntimeError(f"WHEP POST answered {response.status_code}: {response.text[:200]}")
        self.answered = time.monotonic()
        location = response.headers.get("location")
        self.location = str(response.url.join(location)) if location else None
        answer = response.text
        for line in answer.splitlines():
            if line.startswith("a=rtpmap:") and "H264/90000" in line:
                self._payload_type = int(line[len("a=rtpmap:") :].split()[0])
                break
        answer = as_offered_profile(answer, self.pc.localDescription.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        async with asyncio.timeout(_JOIN_TIMEOUT):
            await self._up.wait()
        if self.pc.connectionState != "connected":
            raise RuntimeError(f"peer connection {self.pc.connectionState}")

    def _grow_buffers(self) -> None:
        """A browser-sized UDP receive buffer, so a burst is not lost in the kernel."""
        for transceiver in self.pc.getTransceivers():
            connection = transceiver.receiver.transport.transport.iceGatherer._connection
            for protocol in getattr(connection, "_protocols", []):
                sock = protocol.transport.get_extra_info("socket") if protocol.transport else None
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)

    def _hook(self, receiver: Any) -> None:
        from aiortc.rtcrtpreceiver import StreamStatistics

        receive = receiver.receive
        streams: dict[int, Any] = receiver._RTCRtpReceiver__remote_streams
        units = self.units
        if self.decode:  # count units, and let aiortc's jitter buffer and decoder have every packet
            handle = receiver._handle_rtp_packet

            async def count_and_handle(packet: Any, arrival_time_ms: int) -> None:
                if packet.payload_type == self._payload_type:
                    units.packet(packet.sequence_number, packet.timestamp, packet.marker, packet.payload)
                await handle(packet, arrival_time_ms)

            receiver._handle_rtp_packet = count_and_handle
            return

        async def handle_rtp_packet(packet: Any, arrival_time_ms: int) -> None:
            if packet.payload_type != self._payload_type:
                return
            stats = streams.get(packet.ssrc)
            if stats is None:
                stats = streams[packet.ssrc] = StreamStatistics(90_000)
            stats.add(packet)
            units.packet(packet.sequence_number, packet.timestamp, packet.marker, packet.payload)

        async def start_receiving(parameters: Any) -> None:
            await receive(parameters)
            receiver._RTCRtpReceiver__stop_decoder()  # nothing is ever decoded

        receiver._handle_rtp_packet = handle_rtp_packet
        receiver.receive = start_receiving

    async def close(self) -> None:
        if self.location is not None:
            location, self.location = self.location, None
            with contextlib.suppress(Exception):
                await self._http.delete(location, timeout=5.0)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5.0):
                await self.pc.close()


class _Worker:
    """The child's state: its viewers by id, the direct reader, one HTTP client."""

    def __init__(self, base_url: str) -> None:
        import httpx

        self.base_url = base_url
        self.http = httpx.AsyncClient(timeout=10.0)
        self.viewers: dict[str, Viewer | MseViewer | RtspViewer | GbSession] = {}
        self.ws_headers: dict[str, str] = {}
        """What an MSE viewer's WebSocket handshake carries (a session cookie, or a bearer token)."""
        self.deflate = True
        self.direct: DirectReader | None = None
        self.rtsp: RtspOptions | None = None
        self.cascade: Cascade | None = None
        self._next = 0

    def _viewer(self, camera: str, protocol: str) -> Viewer | MseViewer | RtspViewer | GbSession:
        if protocol == "mse":
            return MseViewer(self.base_url, camera, self.ws_headers, deflate=self.deflate)
        if protocol == "rtsp":
            assert self.rtsp is not None, "rtsp_options first"
            return RtspViewer(self.rtsp, camera)
        if protocol == "gb28181":
            assert self.cascade is not None, "cascade_start first"
            return GbSession(self.cascade, camera)
        return Viewer(self.http, self.base_url, camera)

    async def join(self, camera: str, count: int, protocol: str = "webrtc") -> dict[str, Any]:
        gate = asyncio.Semaphore(_JOIN_PARALLEL)
        errors: list[str] = []
        joined: list[str] = []

        async def one() -> None:
            async with gate:
                viewer = self._viewer(camera, protocol)
                try:
                    await (viewer.join() if isinstance(viewer, Viewer) else viewer.join(_JOIN_TIMEOUT))
                except Exception as err:
                    errors.append(f"{type(err).__name__}: {err}")
                    await viewer.close()
                    return
                self._next += 1
                vid = f"{camera}/{self._next}"
                self.viewers[vid] = viewer
                joined.append(vid)

        await asyncio.gather(*(one() for _ in range(count)))
        return {"joined": joined, "errors": errors}

    def sample(self) -> dict[str, Any]:
        viewers = {vid: v.units.take() for vid, v in self.viewers.items()}
        direct = None
        if self.direct is not None:
            direct = self.direct.units.take() | {"error": self.direct.error}
        return {"at": time.monotonic(), "viewers": viewers, "direct": direct}

    def longest_gaps(self, since: float) -> dict[str, Any]:
        """Per viewer: the longest wait between two access units (or since the last one, until now)
        from ``since`` (``time.monotonic()``) on, how many came, and its error if it ended."""
        now, gaps = time.monotonic(), {}
        for vid, viewer in self.viewers.items():
            arrivals = [since, *(at for _, _, at in viewer.units.series if at >= since), now]
            gaps[vid] = {
                "gap": max(b - a for a, b in itertools.pairwise(arrivals)),
                "units": len(arrivals) - 2,
                "error": getattr(viewer, "error", None),
            }
        return gaps

    async def late_join(self, camera: str, early: str, observe: float, tolerance_ms: float) -> dict[str, Any]:
        """One viewer joins now; when did its first unit arrive, when did it catch up with ``early``."""
        viewer = Viewer(self.http, self.base_url, camera)
        try:
            await viewer.join()
            units = viewer.units
            reference = self.viewers[early].units.series
            for _ in range(int(observe / 0.1)):  # poll what arrived, bounded by ``observe``
                if catch_up(units.series, reference, tolerance_ms) is not None:
                    break
                await asyncio.sleep(0.1)
            assert viewer.posted is not None
            first = units.first_unit
            result: dict[str, Any] = {
                "ttff": None if first is None else first - viewer.posted,
                "answer": (viewer.answered or viewer.posted) - viewer.posted,
                "connected": (viewer.connected or viewer.posted) - viewer.posted,
                "first_idr": units.first_idr,
                "lost": units.lost,
                "incomplete": units.incomplete,
                "catch_up": catch_up(units.series, reference, tolerance_ms),
            }
            if result["catch_up"] is not None:
                result["catch_up"] -= viewer.posted
            return result
        finally:
            await viewer.close()

    async def leave(self) -> int:
        viewers, self.viewers = list(self.viewers.values()), {}
        await asyncio.gather(*(v.close() for v in viewers))
        return len(viewers)

    async def drop(self, ids: list[str]) -> int:
        """Close the viewers ``ids`` (the others stay); how many were open."""
        viewers = [v for v in (self.viewers.pop(vid, None) for vid in ids) if v is not None]
        await asyncio.gather(*(v.close() for v in viewers))
        return len(viewers)

    async def close(self) -> None:
        await self.leave()
        if self.direct is not None:
            await self.direct.stop()
        if self.cascade is not None:
            await self.cascade.stop()
        await self.http.aclose()


async def _dispatch(worker: _Worker, command: str, args: tuple[Any, ...]) -> Any:
    if command == "join":
        return await worker.join(*args)
    if command == "sample":
        return worker.sample()
    if command == "direct":
        if worker.direct is None:
            worker.direct = DirectReader(args[0])
            worker.direct.start()
        return True
    if command == "late_join":
        return await worker.late_join(*args)
    if command == "longest_gap":  # (since,): each viewer's longest wait for an access unit since then
        return worker.longest_gaps(*args)
    if command == "leave":
        return await worker.leave()
    if command == "drop":  # (viewer ids,): close those viewers only
        return await worker.drop(list(args[0]))
    if command == "ping":
        return True
    if command == "headers":  # what every request to the service carries (a bearer token)
        worker.http.headers.pop("authorization", None)
        worker.http.headers.update(args[0])
        return True
    if command == "mse_options":  # the WebSocket handshake's headers; offer permessage-deflate or not
        worker.ws_headers, worker.deflate = dict(args[0]), bool(args[1])
        return True
    if command == "rtsp_options":  # (port, user name, API token) of the RTSP re-serve
        worker.rtsp = RtspOptions(*args)
        return True
    if command == "cascade_start":  # a superior platform in this process: its SIP port
        worker.cascade = Cascade()
        return await worker.cascade.start()
    if command == "cascade_registered":  # (timeout,): until the service registered with it
        assert worker.cascade is not None
        await worker.cascade.registered(*args)
        return True
    if command == "first_packet":  # (camera, timeout): one timed GB/T 28181 session, then BYE
        assert worker.cascade is not None
        return await first_packet(worker.cascade, *args)
    if command == "first_picture":  # (protocol, camera, timeout): one timed join, then leave
        from _first_picture import first_picture  # imports this module: loaded on first use

        return await first_picture(worker, *args)
    raise ValueError(f"unknown command {command!r}")


async def _serve(conn: multiprocessing.connection.Connection, base_url: str) -> None:
    worker = _Worker(base_url)
    loop = asyncio.get_running_loop()
    try:
        while True:
            message = await loop.run_in_executor(None, _recv, conn)
            if message is None or message[0] == "stop":
                break
            command, args = message
            try:
                reply: Any = ("ok", await _dispatch(worker, command, args))
            except Exception as err:
                reply = ("error", f"{type(err).__name__}: {err}")
            conn.send(reply)
    finally:
        await worker.close()
        with contextlib.suppress(OSError):
            conn.send(("ok", "stopped"))


def _recv(conn: multiprocessing.connection.Connection) -> Any:
    try:
        return conn.recv()
    except (EOFError, OSError):
        return None


def _child_main(conn: multiprocessing.connection.Connection, base_url: str) -> None:
    import logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us; Ctrl-C is its business
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_serve(conn, base_url))


class ViewerProcess:
    """Parent side of one viewer process: send a command, wait for its reply."""

    def __init__(self, base_url: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_child_main, args=(child, base_url), name="relay-bench-viewers", daemon=True
        )
        self.process.start()
        child.close()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def send(self, command: str, *args: Any) -> None:
        self._conn.send((command, args))

    def reply(self, timeout: float = 60.0) -> Any:
        if not self._conn.poll(timeout):
            raise TimeoutError(f"viewer process gave no answer within {timeout:.0f} s")
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"viewer process: {value}")
        return value

    def call(self, command: str, *args: Any, timeout: float = 60.0) -> Any:
        self.send(command, *args)
        return self.reply(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        """Close every viewer (DELETE each session), then end the process. Idempotent."""
        if self.process.is_alive():
            with contextlib.suppress(OSError, BrokenPipeError):
                self._conn.send(("stop", ()))
                if self._conn.poll(timeout):
                    self._conn.recv()
            self.process.join(5.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5.0)
        self._conn.close()
