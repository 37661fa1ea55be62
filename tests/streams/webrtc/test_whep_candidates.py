"""Where a WHEP session sends ICE checks: real UDP listeners on 127.0.0.x addresses
count the STUN binding requests the relay sends them, for an offer naming 1,000
remote candidates (issue 9, item 6)."""

from __future__ import annotations

import asyncio
import ipaddress
import time

import pytest

from streams.webrtc import ice
from streams.webrtc.output import WebRtcOutput
from streams.webrtc.remote_candidates import CandidatePolicy, refusal
from tests.streams.webrtc.test_webrtc import CHROMIUM_OFFER, LOOPBACK, baseline_stream, feeding
from tests.whep_client import WhepClient

MAGIC_COOKIE = bytes.fromhex("2112a442")
LISTENERS = 40
CAP = 20
REFUSED = [
    ("224.0.0.251", "a multicast address"),
    ("0.0.0.0", "an unspecified address"),
    ("255.255.255.255", "a reserved address"),
    ("240.0.0.1", "a reserved address"),
    ("::1", "IPv6, which the relay does not serve"),
    ("2001:db8::1", "IPv6, which the relay does not serve"),
    ("::ffff:127.0.0.2", "an IPv4-mapped IPv6 address"),
    ("relay.example.invalid", "not an IP address"),
]


class StunListener(asyncio.DatagramProtocol):
    """Counts STUN binding requests arriving on one real UDP socket."""

    def __init__(self) -> None:
        self.requests = 0
        self.transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if data[:2] == b"\x00\x01" and data[4:8] == MAGIC_COOKIE:
            self.requests += 1

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port


def candidate_line(index: int, host: str, port: int, priority: int) -> str:
    return f"a=candidate:{index} 1 udp {priority} {host} {port} typ host"


def crowded_offer(listeners: list[StunListener], total: int = 1000) -> str:
    """The offer with ``total`` remote candidates: the refused kinds first, then the
    listeners (highest priority first), then filler on 127.0.1.x that nobody hears."""
    lines = [candidate_line(i, host, 9, 2130706431) for i, (host, _) in enumerate(REFUSED)]
    for i, listener in enumerate(listeners):
        lines.append(candidate_line(100 + i, *listener.address, 2130706000 - i))
    for i in range(total - len(lines)):
        lines.append(candidate_line(1000 + i, f"127.0.1.{i % 250 + 1}", 10000 + i, 1000 - i % 1000))
    offer = CHROMIUM_OFFER.replace("a=rtpmap:96 VP8/90000", "\r\n".join([*lines, "a=rtpmap:96 VP8/90000"]))
    assert offer.count("a=candidate:") == total
    return offer


async def test_checks_go_to_at_most_the_cap_of_allowed_candidates() -> None:
    loop = asyncio.get_running_loop()
    listeners: list[StunListener] = []
    for i in range(LISTENERS):
        transport, protocol = await loop.create_datagram_endpoint(
            StunListener, local_addr=(f"127.0.0.{2 + i}", 0)
        )
        protocol.transport = transport
        listeners.append(protocol)
    out = WebRtcOutput(ice_host_addresses=LOOPBACK, candidates=CandidatePolicy(max_candidates=CAP))
    try:
        async with feeding(baseline_stream()) as feeder:
            offer = crowded_offer(listeners)
            assert len(offer) < 64 * 1024
            session = await out.create_session("cam", feeder.hub, offer)
            # The ICE agent knows only the first CAP allowed candidates ...
            (connection,) = ice.connections(session._pc)
            kept = {(c.host, c.port) for c in connection.remote_candidates}
            assert kept == {listener.address for listener in listeners[:CAP]}
            # ... and checks each of them: wait for a retransmission to every one, by
            # which time every pair of the check list has been started (20 ms apart).
            deadline = time.monotonic() + 20
            while not all(listener.requests >= 2 for listener in listeners[:CAP]):
                assert time.monotonic() < deadline, [listener.requests for listener in listeners]
                await asyncio.sleep(0.05)
            assert [listener.requests for listener in listeners[CAP:]] == [0] * (LISTENERS - CAP)
            assert session.state == "connecting"
    finally:
        await out.stop()
        for listener in listeners:
            assert listener.transport is not None
            listener.transport.close()


LOCAL_V4 = ["192.0.2.2"]
LOCAL_DUAL = ["192.0.2.2", "2001:db8::2"]


@pytest.mark.parametrize(
    ("address", "local", "networks", "expected"),
    [
        ("198.51.100.7", LOCAL_V4, (), None),
        ("10.1.2.3", LOCAL_V4, (), None),
        ("2001:db8::7", LOCAL_V4, (), "IPv6, which the relay does not serve"),
        ("2001:db8::7", LOCAL_DUAL, (), None),
        ("ff02::1", LOCAL_DUAL, (), "a multicast address"),
        ("::", LOCAL_DUAL, (), "an unspecified address"),
        ("127.0.0.1", LOCAL_V4, (), "loopback, which the relay does not offer"),
        ("127.0.0.9", ["127.0.0.1"], (), None),
        ("169.254.1.1", LOCAL_V4, (), "link-local, which the relay does not offer"),
        ("169.254.1.1", ["169.254.7.7"], (), None),
        ("fe80::1%eth0", ["fe80::2%eth0"], (), None),
        ("10.1.2.3", LOCAL_V4, ("10.0.0.0/8",), None),
        ("198.51.100.7", LOCAL_V4, ("10.0.0.0/8",), "outside the configured networks"),
        ("2001:db8::7", LOCAL_DUAL, ("10.0.0.0/8",), "outside the configured networks"),
    ],
)
def test_refusal_follows_the_relays_own_families_and_scopes(
    address: str, local: list[str], networks: tuple[str, ...], expected: str | None
) -> None:
    assert refusal(address, local, [ipaddress.ip_network(n) for n in networks]) == expected


async def test_a_real_viewer_whose_own_candidate_was_dropped_still_plays() -> None:
    """A real aiortc viewer's offer with 1,000 other candidates before its own: the
    relay keeps the first 20 and drops the viewer's, yet the viewer connects (the
    relay learns its address from the viewer's own checks) and receives frames."""
    out = WebRtcOutput(ice_host_addresses=LOOPBACK, candidates=CandidatePolicy(max_candidates=CAP))
    try:
        async with feeding(baseline_stream()) as feeder, WhepClient(decode=True) as viewer:
            offer = await viewer.create_offer()
            junk = [candidate_line(i, f"127.0.2.{i % 250 + 1}", 20000 + i, 2130706431) for i in range(1000)]
            own = offer.index("a=candidate:")
            crowded = offer[:own] + "\r\n".join(junk) + "\r\n" + offer[own:]
            assert len(crowded) < 64 * 1024
            session = await out.create_session("cam", feeder.hub, crowded)
            (connection,) = ice.connections(session._pc)
            assert len(connection.remote_candidates) == CAP
            await viewer.apply_answer(session.answer_sdp)
            assert await viewer.wait_frames(5, within=15)
            assert session.state == "connected"
            kinds = {c.type for c in connection.remote_candidates}
            assert kinds == {"host", "prflx"}
    finally:
        await out.stop()
