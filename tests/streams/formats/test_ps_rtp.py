"""PS over RTP: real H.264 muxed once, stamped for two sessions, depacketized and demuxed back."""

from __future__ import annotations

import itertools

import pytest

from streams.formats.ps_rtp import PAYLOAD_MAX, RtpStamper, SharedPsUnits, parse_ssrc
from tests.media import encode_h264
from tests.streams.formats import ps_checks


def test_ssrc_comes_from_the_ten_digit_y_line() -> None:
    assert parse_ssrc("0100000001") == 100_000_001
    assert parse_ssrc("1999999999\r\n") == 1_999_999_999
    for bad in ("123", "01000000012", "01000a0001", "9999999999"):
        with pytest.raises(ValueError):
            parse_ssrc(bad)


@pytest.mark.parametrize("framed", [False, True])
def test_two_sessions_share_the_mux_and_each_reads_back(framed: bool) -> None:
    packets = encode_h264(50, width=640, height=480, gop=25)
    shared = SharedPsUnits()
    sessions = [RtpStamper(100_000_001, framed=framed, sequence=65_500), RtpStamper(7, framed=framed)]
    streams: list[list[bytes]] = [[], []]
    for packet in packets:
        unit = shared.unit(packet)
        for session, out in zip(sessions, streams, strict=True):
            buffer, starts = session.stamp(unit)
            if framed:
                out += ps_checks.rfc4571_frames(bytes(buffer))
            else:
                out += [bytes(buffer[a:b]) for a, b in itertools.pairwise(starts)]
    assert shared.muxed == len(packets)
    assert any(len(p) == 12 + PAYLOAD_MAX for p in streams[0]), "large units fill whole packets"
    for session, out in zip(sessions, streams, strict=True):
        rtp = [ps_checks.parse_rtp(p) for p in out]
        data, stamps = ps_checks.reassemble(rtp, session.ssrc)
        assert stamps == [p.pts for p in packets]
        assert [pts for pts, _, _ in ps_checks.demux(data)] == [p.pts for p in packets]
        assert len(ps_checks.decode(data)) == len(packets)
    first = [ps_checks.parse_rtp(p) for p in streams[0]]
    assert first[0].sequence == 65_500 and any(p.sequence == 0 for p in first), "sequence wraps"
    assert [p[12:] for p in streams[0]] == [p[12:] for p in streams[1]]
