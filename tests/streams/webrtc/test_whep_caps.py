"""The caps on WHEP sessions: per owner, per camera, pending apart from live (issue 9,
item 5). Real hubs fed with real H.264, real aiortc viewers over loopback."""

from __future__ import annotations

import pytest

from streams.errors import CapacityError, OwnerCapacityError
from streams.viewers import ViewerLedger, ViewerLimits
from streams.webrtc.output import WebRtcOutput
from tests.streams.webrtc.test_webrtc import CHROMIUM_OFFER, LOOPBACK, baseline_stream, eventually, feeding
from tests.whep_client import WhepClient


async def test_pending_offers_of_one_owner_leave_the_camera_to_others() -> None:
    """One owner's offers that never connect reach their own cap; the camera's live
    slots stay free, and another owner joins and plays."""
    limits = ViewerLimits(max_per_camera=2, max_per_owner_per_camera=3)
    out = WebRtcOutput(ice_host_addresses=LOOPBACK, viewers=ViewerLedger(limits), pending_timeout=30)
    try:
        async with feeding(baseline_stream()) as feeder:
            for _ in range(3):  # no candidates: these never connect
                await out.create_session("cam", feeder.hub, CHROMIUM_OFFER, owner="mallory")
            with pytest.raises(OwnerCapacityError, match=r"3 viewer sessions \(WebRTC 3\) of camera cam"):
                await out.create_session("cam", feeder.hub, CHROMIUM_OFFER, owner="mallory")
            assert [s.state for s in out.sessions()] == ["connecting"] * 3

            async def signal(offer: str) -> str:
                return (await out.create_session("cam", feeder.hub, offer, owner="alice")).answer_sdp

            async with WhepClient(decode=False) as alice:
                await alice.connect(signal)
                assert await alice.wait_frames(5, within=10)
            assert [s.owner for s in out.sessions()].count("mallory") == 3
    finally:
        await out.stop()


async def test_pending_sessions_expire_and_free_their_seats() -> None:
    limits = ViewerLimits(max_pending_per_owner=2)
    out = WebRtcOutput(ice_host_addresses=LOOPBACK, viewers=ViewerLedger(limits), pending_timeout=0.5)
    try:
        async with feeding(baseline_stream()) as feeder:
            first = [await out.create_session("cam", feeder.hub, CHROMIUM_OFFER, owner="u") for _ in range(2)]
            with pytest.raises(OwnerCapacityError, match="2 WebRTC sessions still connecting"):
                await out.create_session("cam", feeder.hub, CHROMIUM_OFFER, owner="u")
            assert await eventually(lambda: out.session_count() == 0, within=5)
            assert {s.end_reason for s in first} == {"not connected within 0.5 s"}
            await out.create_session("cam", feeder.hub, CHROMIUM_OFFER, owner="u")
    finally:
        await out.stop()


async def test_a_viewer_that_connects_after_the_camera_filled_is_closed() -> None:
    """Pending seats do not take live slots: both offers are answered, the first to
    connect takes the camera's only slot, the other is closed when it connects."""
    out = WebRtcOutput(ice_host_addresses=LOOPBACK, viewers=ViewerLedger(ViewerLimits(max_per_camera=1)))
    clients = [WhepClient(decode=False), WhepClient(decode=False)]
    try:
        async with feeding(baseline_stream()) as feeder:
            answers = [
                (
                    await out.create_session("cam", feeder.hub, await c.create_offer(), owner=f"u{i}")
                ).answer_sdp
                for i, c in enumerate(clients)
            ]
            sessions = out.sessions()
            for client, answer in zip(clients, answers, strict=True):
                await client.apply_answer(answer)
            assert await eventually(lambda: sum(s.end_reason is not None for s in sessions) == 1, within=10)
            (closed,) = [s for s in sessions if s.end_reason is not None]
            assert closed.end_reason == "camera cam reached 1 viewers (WebRTC 1) while this one connected"
            (playing,) = [c for c, s in zip(clients, sessions, strict=True) if s is not closed]
            assert await playing.wait_frames(5, within=10)
            with pytest.raises(CapacityError, match=r"camera cam already has 1 viewers \(WebRTC 1\)"):
                await out.create_session("cam", feeder.hub, CHROMIUM_OFFER, owner="u2")
    finally:
        for client in clients:
            await client.close()
        await out.stop()
