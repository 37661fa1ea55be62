"""WebRTC egress end to end: real H.264 from PyAV, a real Hub fed at 25 fps, real aiortc
viewers over loopback (``tests.whep_client``)."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import fractions
import functools
import gc
import itertools
import os
import statistics
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator

import av
import numpy as np
import pytest
from aiortc import RTCIceServer, RTCPeerConnection, RTCRtpCodecParameters
from aiortc import sdp as aiortc_sdp
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder

from streams.codecs import h264
from streams.errors import CapacityError, NegotiationError, StreamError
from streams.hub import Hub
from streams.packets import CLOCK_RATE, MediaPacket
from streams.viewers import ViewerLedger, ViewerLimits
from streams.webrtc import ice
from streams.webrtc.fanout import FastPathUnavailable, FastRtpSender
from streams.webrtc.output import StreamNotReady, WebRtcOutput
from tests.media import encode_h264
from tests.whep_client import WhepClient

FPS = 25
FRAME_TICKS = CLOCK_RATE // FPS
LOOPBACK = ["127.0.0.1"]


# -- media --------------------------------------------------------------------


@functools.cache
def baseline_stream(gop: int = 25, frames: int = 50) -> tuple[MediaPacket, ...]:
    return tuple(encode_h264(frames, gop=gop))


@functools.cache
def high_stream(frames: int = 25) -> tuple[MediaPacket, ...]:
    """Real High-profile H.264 (``ultrafast`` would fall back to Constrained Baseline)."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 320, 240, "yuv420p"
    ctx.time_base = fractions.Fraction(1, FPS)
    ctx.framerate = fractions.Fraction(FPS, 1)
    ctx.options = {"preset": "veryfast", "tune": "zerolatency", "profile": "high", "g": "25", "bf": "0"}
    ramp = (np.arange(320) % 256)[None, :].repeat(240, axis=0)
    out: list[MediaPacket] = []
    for i in range(frames):
        img = np.dstack([(ramp + i * 4) % 256, ramp, 255 - ramp]).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets = list(ctx.encode(frame)) + (list(ctx.encode(None)) if i == frames - 1 else [])
        for pkt in packets:
            assert pkt.pts is not None
            out.append(MediaPacket(bytes(pkt), pkt.pts * FRAME_TICKS, bool(pkt.is_keyframe)))
    return tuple(out)


def normalized(data: bytes) -> bytes:
    """An access unit with 4-byte start codes, as a depacketizer rebuilds it."""
    return h264.join_nals(list(h264.split_nals(data)))


class Feeder:
    """Publishes a looped stream into a hub at real-time pace; remembers when each frame went out."""

    def __init__(self, hub: Hub, packets: tuple[MediaPacket, ...]) -> None:
        self.hub = hub
        self.packets = packets
        self.published: dict[bytes, list[float]] = defaultdict(list)
        self.last_keyframe_at: float | None = None
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="test-feeder")

    async def _run(self) -> None:
        start = time.monotonic()
        while True:
            template = self.packets[self.count % len(self.packets)]
            now = time.monotonic()
            self.hub.publish(dataclasses.replace(template, pts=self.count * FRAME_TICKS, received=now))
            self.published[normalized(template.data)].append(now)
            if template.keyframe:
                self.last_keyframe_at = now
            self.count += 1
            await asyncio.sleep(max(0.0, start + self.count / FPS - time.monotonic()))

    def sent_at(self, data: bytes, arrived: float) -> float:
        """When the frame with these bytes was published last before ``arrived``."""
        times = self.published[normalized(data)]
        return times[bisect.bisect_right(times, arrived) - 1]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])


async def eventually(predicate: Callable[[], bool], *, within: float, step: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``within`` seconds pass (the output has no events)."""
    for _ in range(max(1, round(within / step))):
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


@contextlib.asynccontextmanager
async def feeding(packets: tuple[MediaPacket, ...], name: str = "cam") -> AsyncIterator[Feeder]:
    feeder = Feeder(Hub(name), packets)
    feeder.start()
    try:
        assert await eventually(lambda: feeder.hub.info is not None, within=5)
        yield feeder
    finally:
        await feeder.stop()
        feeder.hub.close()


# -- fixtures -----------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_encoder(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Passthrough proof: any attempt to encode a frame is recorded (and fails)."""
    calls: list[str] = []

    def forbidden(name: str):  # type: ignore[no-untyped-def]
        def encode(*args: object, **kwargs: object) -> None:
            calls.append(name)
            raise AssertionError(f"{name} must never run")

        return encode

    monkeypatch.setattr(H264Encoder, "encode", forbidden("H264Encoder.encode"))
    monkeypatch.setattr(H264Encoder, "_encode_frame", forbidden("H264Encoder._encode_frame"))
    monkeypatch.setattr(Vp8Encoder, "encode", forbidden("Vp8Encoder.encode"))
    yield calls
    assert calls == []


@pytest.fixture
async def output(request: pytest.FixtureRequest) -> AsyncIterator[WebRtcOutput]:
    """The output under test; parametrize indirectly with ``fast_path`` False for aiortc's sender."""
    fast_path = getattr(request, "param", True)
    out = WebRtcOutput(ice_host_addresses=LOOPBACK, info_timeout=2.0, fast_path=fast_path)
    yield out
    await out.stop()
    assert out.session_count() == 0


async def join(out: WebRtcOutput, feeder: Feeder, **client_options: object) -> WhepClient:
    client = WhepClient(**client_options)  # type: ignore[arg-type]

    async def signal(offer: str) -> str:
        session = await out.create_session(feeder.hub.name, feeder.hub, offer)
        return session.answer_sdp

    try:
        await client.connect(signal)
    except BaseException:
        await client.close()
        raise
    return client


def video_codecs(answer: str) -> list[RTCRtpCodecParameters]:
    description = aiortc_sdp.SessionDescription.parse(answer)
    return next(m for m in description.media if m.kind == "video").rtp.codecs


def nal_units(data: bytes) -> list[bytes]:
    return list(h264.split_nals(data))


# -- negotiation and passthrough ----------------------------------------------


@pytest.mark.parametrize("output", [True, False], ids=["fast-path", "aiortc-sender"], indirect=True)
async def test_h264_passthrough_decodes_and_is_byte_exact(
    output: WebRtcOutput, request: pytest.FixtureRequest
) -> None:
    async with feeding(baseline_stream()) as feeder:
        client = await join(output, feeder, capture=True)
        async with client:
            assert await client.wait_frames(20, within=10)
            assert {(f.width, f.height) for f in client.frames} == {(320, 240)}

            # The answer is H.264 only, under the offered payload type, with the stream's
            # real profile-level-id (x264 baseline: 42c00d, which aiortc itself never offers).
            codecs = video_codecs(client.answer_sdp)
            assert [c.mimeType for c in codecs] == ["video/H264", "video/rtx"]
            plid = feeder.hub.info.profile_level_id if feeder.hub.info else None
            assert plid == "42c00d"
            assert codecs[0].parameters["profile-level-id"] == plid
            assert str(codecs[0].parameters["packetization-mode"]) == "1"
            # Host candidates are exactly the configured addresses (aioice skips loopback).
            candidates = [x for x in client.answer_sdp.splitlines() if x.startswith("a=candidate:")]
            assert candidates and all(x.split()[4] == "127.0.0.1" for x in candidates)
            offered = video_codecs(client.offer_sdp)
            assert codecs[0].payloadType in {c.payloadType for c in offered if c.name == "H264"}

            # Every access unit arrives exactly as published: same NAL units, same bytes.
            published = {tuple(nal_units(p.data)) for p in feeder.packets}
            received = [u.data for u in client.units]
            assert len(received) >= 20
            for data in received:
                assert data is not None
                assert tuple(nal_units(data)) in published
            assert h264.is_keyframe(received[0] or b"")

            stats = output.sessions()[0].stats()
            assert stats.state == "connected"
            assert stats.fast_path is (request.node.callspec.id == "fast-path")
            assert stats.packets_sent >= 20
            assert stats.dropped == 0


async def test_viewers_of_a_camera_share_one_packetization(output: WebRtcOutput) -> None:
    async with feeding(baseline_stream()) as feeder:
        first = await join(output, feeder, decode=False)
        second = await join(output, feeder, decode=False)
        async with first, second:
            assert await first.wait_frames(30, within=5) and await second.wait_frames(30, within=5)
            sent = sum(s.packets_sent for s in output.sessions())
            packetizer = output._packetizers[feeder.hub]
            # Each access unit is packetized once, not once per viewer.
            assert sent >= 60
            assert packetizer.packetized <= sent / 2 + 5


async def test_fast_path_answers_nacks(output: WebRtcOutput) -> None:
    dropped: set[tuple[int, int]] = set()

    def lose(ssrc: int, sequence_number: int) -> bool:
        # Drop every 10th packet of the stream once; its retransmission gets through.
        key = (ssrc, sequence_number)
        if sequence_number % 10 == 0 and key not in dropped:
            dropped.add(key)
            return True
        return False

    async with feeding(baseline_stream()) as feeder:
        client = await join(output, feeder, lose=lose)
        async with client:
            assert await client.wait_frames(40, within=10)
            stats = output.sessions()[0].stats()
            assert stats.fast_path and client.lost >= 2
            assert stats.retransmitted >= client.lost - 1  # the last loss may still be in flight
            assert {(f.width, f.height) for f in client.frames} == {(320, 240)}


async def test_fast_path_falls_back_to_aiortcs_sender(
    output: WebRtcOutput, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(*args: object) -> FastRtpSender:
        raise FastPathUnavailable("aioice exposes no nominated candidate pair")

    monkeypatch.setattr(FastRtpSender, "from_transceiver", unavailable)
    async with feeding(baseline_stream()) as feeder:
        client = await join(output, feeder)
        async with client:
            assert await client.wait_frames(5, within=10)
            stats = output.sessions()[0].stats()
            assert stats.packets_sent >= 5 and not stats.fast_path


async def test_high_profile_stream_is_answered_with_its_own_profile(output: WebRtcOutput) -> None:
    async with feeding(high_stream()) as feeder:
        info = feeder.hub.info
        assert info is not None and info.profile == "High"
        session = await output.create_session("cam", feeder.hub, CHROMIUM_OFFER)
        codecs = video_codecs(session.answer_sdp)
        # The browser's High-profile payload type (112) with packetization-mode=1, its RTX.
        assert [(c.payloadType, c.name) for c in codecs] == [(112, "H264"), (113, "rtx")]
        assert {k: str(v) for k, v in codecs[0].parameters.items()} == {
            "level-asymmetry-allowed": "1",
            "packetization-mode": "1",
            "profile-level-id": info.profile_level_id,
        }
        assert {k: str(v) for k, v in codecs[1].parameters.items()} == {"apt": "112"}
        assert await output.close_session(session.id)

        # A viewer that offers only Constrained Baseline (aiortc) is still told the truth:
        # the answer names the stream's High profile under the viewer's payload type, and
        # the viewer decodes it.
        client = await join(output, feeder)
        async with client:
            answered = video_codecs(client.answer_sdp)[0].parameters
            assert str(answered["profile-level-id"]) == info.profile_level_id
            assert str(answered["level-asymmetry-allowed"]) == "1"
            assert await client.wait_frames(5, within=10)
            assert (client.frames[0].width, client.frames[0].height) == (320, 240)


@pytest.mark.parametrize(
    ("offer", "message"),
    [
        ("", "empty"),
        ("hello world", "not SDP"),
        ("v=0\r\nm=video nonsense\r\na=rtpmap:x\r\n", "malformed"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "no video m-line"),
    ],
)
async def test_malformed_offers_are_negotiation_errors(
    output: WebRtcOutput, offer: str, message: str
) -> None:
    async with feeding(baseline_stream()) as feeder:
        with pytest.raises(NegotiationError, match=message):
            async with asyncio.timeout(5):
                await output.create_session("cam", feeder.hub, offer)
        assert output.session_count() == 0


def test_ice_servers_are_always_explicit() -> None:
    # aiortc would otherwise ask a public STUN server.
    assert ice.configuration(None).iceServers == []
    server = RTCIceServer(urls="stun:stun.example.net:3478")
    assert ice.configuration([server]).iceServers == [server]


def offer_without_h264(offer: str) -> str:
    """The Chromium-shaped offer with VP8 and VP9 only."""
    h264 = {"102", "103", "104", "105", "106", "107", "127", "125", "112", "113"}
    lines = []
    for line in offer.split("\r\n"):
        if line.startswith("m=video"):
            line = "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98"
        elif line.startswith("a=") and ":" in line and line.split(":", 1)[1].split(" ")[0] in h264:
            continue
        lines.append(line)
        if line == "a=fmtp:97 apt=96":
            lines += ["a=rtpmap:98 VP9/90000", "a=fmtp:98 profile-id=0"]
    return "\r\n".join(lines)


async def test_unanswerable_offers_are_negotiation_errors(output: WebRtcOutput) -> None:
    async with feeding(baseline_stream()) as feeder:
        hub = feeder.hub
        with pytest.raises(NegotiationError, match=r"^the browser offered no H\.264; offered: VP8, VP9$"):
            await output.create_session("cam", hub, offer_without_h264(CHROMIUM_OFFER))
        async with WhepClient(codecs=("VP8",)) as vp8:
            offer = await vp8.create_offer()
            with pytest.raises(NegotiationError, match=r"offered no H\.264; offered: VP8$"):
                await output.create_session("cam", hub, offer)
        with pytest.raises(NegotiationError, match="does not receive"):
            await output.create_session("cam", hub, CHROMIUM_OFFER.replace("a=recvonly", "a=sendonly"))
        audio = RTCPeerConnection(ice.configuration([]))
        try:
            audio.addTransceiver("audio", direction="recvonly")
            ice.pin_host_addresses(audio, LOOPBACK)
            await audio.setLocalDescription(await audio.createOffer())
            with pytest.raises(NegotiationError, match=r"no video m-line \(media offered: audio\)"):
                await output.create_session("cam", hub, audio.localDescription.sdp)
        finally:
            await audio.close()
        # SDP that parses but has no ICE password is refused before aiortc sees it.
        with pytest.raises(NegotiationError, match=r"no ICE password \(a=ice-pwd\) for its video m-line"):
            await output.create_session("cam", hub, CHROMIUM_OFFER.replace("a=ice-pwd:", "a=x-ice-pwd:"))
        assert output.session_count() == 0
        assert hub.subscriber_count == 0


async def test_no_keyframe_yet_is_a_stream_error() -> None:
    out = WebRtcOutput(ice_host_addresses=LOOPBACK, info_timeout=0.2)
    hub = Hub("silent")
    started = time.monotonic()
    with pytest.raises(StreamNotReady) as caught:
        await out.create_session("silent", hub, CHROMIUM_OFFER)
    assert isinstance(caught.value, StreamError)
    assert time.monotonic() - started < 1.0
    assert out.session_count() == 0
    await out.stop()


async def test_caps_are_capacity_errors() -> None:
    # Offers without candidates never connect: these sessions stay pending.
    limits = ViewerLimits(max_pending_per_camera=2, max_pending_total=3)
    out = WebRtcOutput(ice_host_addresses=LOOPBACK, viewers=ViewerLedger(limits))
    async with feeding(baseline_stream(), "a") as a, feeding(baseline_stream(), "b") as b:
        for _ in range(2):
            await out.create_session("a", a.hub, CHROMIUM_OFFER)
        with pytest.raises(CapacityError, match="camera a already has 2 WebRTC viewers connecting"):
            await out.create_session("a", a.hub, CHROMIUM_OFFER)
        await out.create_session("b", b.hub, CHROMIUM_OFFER)
        with pytest.raises(CapacityError, match="3 WebRTC viewers connecting"):
            await out.create_session("b", b.hub, CHROMIUM_OFFER)
        assert (out.session_count("a"), out.session_count("b"), out.session_count()) == (2, 1, 3)
        # Closing one frees its slot.
        assert await out.close_session(out.sessions()[0].id)
        await out.create_session("b", b.hub, CHROMIUM_OFFER)
        await out.stop()
        await out.stop()  # idempotent
        assert out.session_count() == 0
        with pytest.raises(CapacityError):
            await out.create_session("a", a.hub, CHROMIUM_OFFER)


# -- live edge ----------------------------------------------------------------


async def test_late_joiner_starts_at_once_and_plays_at_the_live_edge(output: WebRtcOutput) -> None:
    async with feeding(baseline_stream(gop=100, frames=100)) as feeder:
        early = await join(output, feeder, capture=True)
        async with early:
            assert await early.wait_frames(1, within=5)
            # Join 2 s after a keyframe: the GOP cache then holds about 50 frames.
            assert feeder.last_keyframe_at is not None
            await asyncio.sleep(max(0.0, feeder.last_keyframe_at + 2.0 - time.monotonic()))
            joined = time.monotonic()
            late = await join(output, feeder, capture=True)
            async with late:
                assert await late.wait_frames(1, within=5)
                first_frame = late.frames[0].arrived - joined
                assert first_frame < 0.5, f"first frame after {first_frame:.3f} s"

                # The backlog went out at once with compressed timestamps ...
                assert await late.wait_until(lambda: len(late.units) >= 70, within=5)
                backlog = output.sessions()[-1].stats().backlog_frames
                assert 40 <= backlog <= 60
                stamps = [u.timestamp for u in late.units]
                steps = [(b - a) % 2**32 for a, b in itertools.pairwise(stamps)]
                assert all(0 < s < CLOCK_RATE for s in steps)  # monotonic for the viewer
                assert steps[: backlog - 1] == [CLOCK_RATE // 1000] * (backlog - 1)
                assert set(steps[backlog + 2 :]) == {FRAME_TICKS}

                # ... and live frames then arrive as promptly as for the early viewer.
                def delays(client: WhepClient, after: float) -> list[float]:
                    return [
                        u.arrived - feeder.sent_at(u.data or b"", u.arrived)
                        for u in client.units
                        if u.arrived > after
                    ]

                live_after = joined + 1.0
                assert await late.wait_until(
                    lambda: sum(u.arrived > live_after for u in late.units) >= 15, within=5
                )
                late_delay = statistics.median(delays(late, live_after))
                early_delay = statistics.median(delays(early, live_after))
                assert late_delay < early_delay + 0.05, (late_delay, early_delay)
                assert late_delay < 0.1


# -- lifecycle ----------------------------------------------------------------


async def test_close_session_frees_everything(output: WebRtcOutput) -> None:
    async with feeding(baseline_stream()) as feeder:
        client = await join(output, feeder, decode=False)
        async with client:
            assert await client.wait_frames(3, within=5)
            (session,) = output.sessions()
            assert feeder.hub.subscriber_count == 1
            assert await output.close_session(session.id)
            assert not await output.close_session(session.id)
            assert output.session_count() == 0 and output.session_count("cam") == 0
            assert feeder.hub.subscriber_count == 0
            assert session.state == "closed" and session.end_reason == "closed by request"
            assert session._pc.connectionState == "closed"
            assert session._task is not None and session._task.done()
            # The viewer notices: its connection closes too.
            assert await client.wait_until(lambda: client.pc.connectionState == "closed", within=5)


async def test_camera_going_away_ends_its_sessions(output: WebRtcOutput) -> None:
    async with feeding(baseline_stream()) as feeder:
        client = await join(output, feeder, decode=False)
        async with client:
            assert await client.wait_frames(3, within=5)
            (session,) = output.sessions()
            feeder.hub.close()
            assert await eventually(lambda: output.session_count() == 0, within=3)
            assert session.end_reason is not None and session.end_reason.startswith("stream ended")


async def test_viewer_closing_without_delete_ends_the_session(output: WebRtcOutput) -> None:
    async with feeding(baseline_stream()) as feeder:
        client = await join(output, feeder, decode=False)
        assert await client.wait_frames(3, within=5)
        await client.close()  # DTLS close_notify, but no DELETE
        assert await eventually(lambda: output.session_count() == 0, within=3)
        # The session leaves the count before its teardown has closed the subscription.
        assert await eventually(lambda: feeder.hub.subscriber_count == 0, within=2)


async def test_vanished_viewer_is_reaped_within_the_grace_bound() -> None:
    out = WebRtcOutput(ice_host_addresses=LOOPBACK, silence_timeout=1.0, disconnect_grace=0.5)
    async with feeding(baseline_stream()) as feeder:
        client = await join(out, feeder, decode=False)
        try:
            assert await client.wait_frames(3, within=5)
            (session,) = out.sessions()
            await client.vanish()  # sockets gone, no goodbye of any kind
            vanished = time.monotonic()
            saw_disconnected = False
            for _ in range(200):  # 4 s at most
                if not out.session_count():
                    break
                saw_disconnected = saw_disconnected or session.state == "disconnected"
                await asyncio.sleep(0.02)
            reaped = time.monotonic() - vanished
            assert saw_disconnected
            assert 1.0 < reaped < 1.0 + 0.5 + 2.0, reaped
            assert session.end_reason is not None and "silent" in session.end_reason
            assert await eventually(lambda: feeder.hub.subscriber_count == 0, within=2)
        finally:
            await client.close()
            await out.stop()


async def test_viewer_that_never_connects_is_reaped() -> None:
    out = WebRtcOutput(ice_host_addresses=LOOPBACK, pending_timeout=0.5)
    async with feeding(baseline_stream()) as feeder:
        session = await out.create_session("cam", feeder.hub, CHROMIUM_OFFER)  # no candidates
        assert session.state == "connecting"
        assert await eventually(lambda: out.session_count() == 0, within=3)
        assert session.end_reason == "not connected within 0.5 s"
        assert feeder.hub.subscriber_count == 0
        await out.stop()


async def test_join_leave_cycles_leak_nothing(output: WebRtcOutput) -> None:
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def cycle(feeder: Feeder) -> None:
        client = await join(output, feeder, decode=False)
        async with client:
            assert await client.wait_frames(1, within=5)
            assert await output.close_session(output.sessions()[0].id)

    async with feeding(baseline_stream()) as feeder:
        await cycle(feeder)  # warm-up: lazily created executor threads, caches
        await asyncio.sleep(0.2)
        before = (fds(), threading.active_count(), len(asyncio.all_tasks()))
        for _ in range(50):
            await cycle(feeder)
        assert output.session_count() == 0
        assert feeder.hub.subscriber_count == 0
        # aiortc closes transports in tasks that finish a moment after close() returns.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            after = (fds(), threading.active_count(), len(asyncio.all_tasks()))
            if after[0] <= before[0] and after[1] <= before[1] and after[2] <= before[2]:
                break
            await asyncio.sleep(0.1)
        # Measured: all three counts are identical before and after. Tasks get no
        # tolerance. File descriptors and threads get 2, for what the process may open
        # beside this test (the loop's default executor starts worker threads lazily);
        # a leak of one per cycle would show as 50.
        assert after[2] <= before[2], asyncio.all_tasks()
        assert after[0] <= before[0] + 2, (before, after)
        assert after[1] <= before[1] + 2, (before, after)


CHROMIUM_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=extmap-allow-mixed",
        "a=msid-semantic: WMS",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 106 107 127 125 112 113",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:Hx3k",
        "a=ice-pwd:0123456789abcdefghijklmn",
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
        "a=setup:actpass",
        "a=mid:0",
        "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 goog-remb",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:96 nack pli",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "a=rtpmap:102 H264/90000",
        "a=rtcp-fb:102 goog-remb",
        "a=rtcp-fb:102 nack",
        "a=rtcp-fb:102 nack pli",
        "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
        "a=rtpmap:103 rtx/90000",
        "a=fmtp:103 apt=102",
        "a=rtpmap:104 H264/90000",
        "a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f",
        "a=rtpmap:105 rtx/90000",
        "a=fmtp:105 apt=104",
        "a=rtpmap:106 H264/90000",
        "a=rtcp-fb:106 nack",
        "a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        "a=rtpmap:107 rtx/90000",
        "a=fmtp:107 apt=106",
        "a=rtpmap:127 H264/90000",
        "a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f",
        "a=rtpmap:125 rtx/90000",
        "a=fmtp:125 apt=127",
        "a=rtpmap:112 H264/90000",
        "a=rtcp-fb:112 goog-remb",
        "a=rtcp-fb:112 nack",
        "a=rtcp-fb:112 nack pli",
        "a=fmtp:112 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f",
        "a=rtpmap:113 rtx/90000",
        "a=fmtp:113 apt=112",
        "",
    ]
)


@pytest.mark.parametrize("output", [True, False], indirect=True, ids=["fast-path", "aiortc-sender"])
async def test_a_closed_session_keeps_no_packets(output: WebRtcOutput) -> None:
    """A viewer who left holds no packets kept for retransmission, even before the cyclic
    garbage collector frees aiortc's peer connection and senders (they are in reference
    cycles); the fast path's sender is not in one, and goes at once. Then nothing stays."""
    async with feeding(baseline_stream()) as feeder:
        client = await join(output, feeder, decode=False)
        async with client:
            assert await client.wait_frames(10, within=10)
            (session,) = output.sessions()
            sender = session._pc.getTransceivers()[0].sender
            history = sender._RTCRtpSender__rtp_history
            feed = session._feed
            fast = isinstance(feed, FastRtpSender)
            if fast:
                assert isinstance(feed, FastRtpSender)
                kept = feed._history_packet
                assert any(kept), "the fast path keeps packets to retransmit"
            else:
                kept = list(history.values())
                assert kept, "aiortc's sender keeps packets to retransmit"
            held = [weakref.ref(x) for x in (session, session._pc, sender, feed)]
            gc.disable()  # what is freed now is freed by reference counting alone
            try:
                assert await output.close_session(session.id)
                del session, sender, feed, kept
                assert history == {}
                if fast:
                    assert held[3]() is None, "the fast path's sender outlived its session"
            finally:
                gc.enable()
        gc.collect()
        assert [ref() for ref in held] == [None] * len(held)
