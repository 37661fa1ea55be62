"""MANSRTSP bodies as superiors send them in INFO: PLAY with a scale or a seek, PAUSE, TEARDOWN,
and the RTSP-style answer with its CSeq and the range played from."""

from __future__ import annotations

import pytest

from vms.gb28181.playback import Control, ControlError, parse_control, rtsp_response


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"PLAY RTSP/1.0\r\nCSeq: 4\r\nRange: npt=now-\r\n", Control("PLAY", None, None, "4")),
        (b"PLAY RTSP/1.0\r\nCSeq: 5\r\nRange: npt=12.5-\r\n", Control("PLAY", None, 12.5, "5")),
        (b"PLAY RTSP/1.0\nCSeq: 6\nScale: 4.0\nRange: npt = 30-60\n", Control("PLAY", 4.0, 30.0, "6")),
        (b"PAUSE RTSP/1.0\r\nCSeq: 7\r\nPauseTime: now\r\n", Control("PAUSE", None, None, "7")),
        (b"TEARDOWN RTSP/1.0\r\nCSeq: x\r\n", Control("TEARDOWN")),
    ],
)
def test_requests_are_read(body: bytes, expected: Control) -> None:
    assert parse_control(body) == expected


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"PLAY RTSP/1.0\r\nRange: clock=20261207T080000Z-\r\n", "only npt=<seconds>- or npt=now-"),
        (b"PLAY RTSP/1.0\r\nRange: npt=-5-\r\n", "only npt=<seconds>- or npt=now-"),
        (b"PLAY RTSP/1.0\r\nRange: npt=inf-\r\n", "not a point of the playback"),
        (b"PLAY RTSP/1.0\r\nScale: -1\r\n", "forward only"),
        (b"GET_PARAMETER RTSP/1.0\r\n", "only PLAY, PAUSE and TEARDOWN"),
    ],
)
def test_what_cannot_be_served_says_why(body: bytes, reason: str) -> None:
    with pytest.raises(ControlError, match=reason):
        parse_control(body)


def test_the_answer_carries_the_cseq_and_the_range_played_from() -> None:
    seek = parse_control(b"PLAY RTSP/1.0\r\nCSeq: 9\r\nRange: npt=12-\r\n")
    assert rtsp_response(seek, position=11.04) == b"RTSP/1.0 200 OK\r\nCSeq: 9\r\nRange: npt=11.040-\r\n"
    refused = rtsp_response(seek, 457, "Invalid Range")
    assert refused == b"RTSP/1.0 457 Invalid Range\r\nCSeq: 9\r\n"
