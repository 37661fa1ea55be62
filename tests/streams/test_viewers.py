"""The viewer ledger: one count of viewers per camera, per owner and in total, whatever
the protocol, with WebRTC's pending seats apart from live ones."""

from __future__ import annotations

import pytest

from streams.errors import CapacityError, OwnerCapacityError
from streams.viewers import ViewerLedger, ViewerLimits


def test_caps_of_one_owner() -> None:
    ledger = ViewerLedger(ViewerLimits(max_per_owner=3, max_per_owner_per_camera=2, max_pending_per_owner=2))
    seats = [ledger.admit("a", "webrtc", "u", pending=True), ledger.admit("a", "webrtc", "u", pending=True)]
    with pytest.raises(
        OwnerCapacityError, match=r"^you already have 2 viewer sessions \(WebRTC 2\) of camera a; close one"
    ):
        ledger.admit("a", "mse", "u")
    with pytest.raises(OwnerCapacityError, match="2 WebRTC sessions still connecting"):
        ledger.admit("b", "webrtc", "u", pending=True)
    assert [ledger.promote(seat) for seat in seats] == [None, None]
    ledger.admit("b", "rtsp", "u")
    with pytest.raises(
        OwnerCapacityError, match=r"^you already have 3 viewer sessions \(WebRTC 2, RTSP 1\); close one first"
    ):
        ledger.admit("c", "mjpeg", "u")
    ledger.admit("c", "mjpeg", "v")  # another owner
    ledger.admit("c", "gb28181")  # no owner: capped per camera and in total only
    ledger.release(seats[0])
    ledger.release(seats[0])  # idempotent
    ledger.admit("c", "mse", "u")


def test_caps_of_cameras_and_the_relay() -> None:
    ledger = ViewerLedger(
        ViewerLimits(max_per_camera=2, max_total=3, max_pending_per_camera=2, max_pending_total=3)
    )
    a = [ledger.admit("a", "webrtc", pending=True), ledger.admit("a", "webrtc", pending=True)]
    with pytest.raises(CapacityError, match="camera a already has 2 WebRTC viewers connecting") as caught:
        ledger.admit("a", "webrtc", "u", pending=True)
    assert not isinstance(caught.value, OwnerCapacityError)
    assert [ledger.promote(seat) for seat in a] == [None, None]
    with pytest.raises(CapacityError, match=r"^camera a already has 2 viewers \(WebRTC 2\)$"):
        ledger.admit("a", "rtsp", "u")
    b, c = ledger.admit("b", "webrtc", pending=True), ledger.admit("c", "webrtc", pending=True)
    d = ledger.admit("d", "webrtc", pending=True)
    with pytest.raises(CapacityError, match="the relay already has 3 WebRTC viewers connecting"):
        ledger.admit("e", "webrtc", pending=True)
    ledger.admit("e", "mse")  # a live seat: the pending caps do not apply
    assert ledger.promote(b) == "the relay reached 3 viewers (WebRTC 2, MSE 1) while this one connected"
    with pytest.raises(CapacityError, match=r"^the relay already serves 3 viewers \(WebRTC 2, MSE 1\)$"):
        ledger.admit("e", "gb28181")
    ledger.release(b)
    ledger.release(c)
    ledger.release(a[0])
    assert ledger.promote(d) is None
    assert (ledger.count(live=True), ledger.count(live=False), ledger.count(live=None)) == (3, 0, 3)


def test_the_mix_of_protocols_fills_a_camera_and_a_freed_seat_is_taken_again() -> None:
    ledger = ViewerLedger(ViewerLimits(max_per_camera=3))
    rtsp = ledger.admit("a", "rtsp")
    ledger.admit("a", "gb28181")
    ledger.admit("a", "rtsp")
    ledger.admit("b", "mse")
    for protocol in ("webrtc", "mse", "mjpeg", "rtsp", "gb28181"):
        with pytest.raises(CapacityError, match=r"^camera a already has 3 viewers \(RTSP 2, GB/T 28181 1\)$"):
            ledger.admit("a", protocol, pending=protocol == "webrtc")  # type: ignore[arg-type]
    assert [ledger.count(camera_id="a", protocol=p) for p in ("rtsp", "gb28181", "mse")] == [2, 1, 0]
    assert (ledger.count(protocol="mse"), ledger.count()) == (1, 4)
    ledger.release(rtsp)
    seat = ledger.admit("a", "mjpeg")
    assert (seat.live, ledger.count(camera_id="a", protocol="mjpeg")) == (True, 1)
