"""RTCP packets against RFC 3550's layouts, read and written here with struct."""

from __future__ import annotations

import struct

import pytest

from streams.formats import rtcp


def test_ntp_timestamps_count_from_1900_in_32_32_fixed_point() -> None:
    assert rtcp.ntp_timestamp(0.0) == 2_208_988_800 << 32
    assert rtcp.ntp_timestamp(1.5) == ((2_208_988_801 << 32) | (1 << 31))


def test_a_sender_report_extrapolates_the_latest_timestamp_to_the_report_time() -> None:
    clock = rtcp.SenderClock(0xDEADBEEF, 90_000, cname="cam1")
    assert clock.report(1000.0, 50.0) is None, "no report before the first packet"
    clock.sent(0xFFFF_FF00, at=49.0, packets=3, octets=3000)
    clock.sent(4000, at=49.5, packets=2, octets=1200)
    data = clock.report(1_700_000_000.25, 50.0)
    assert data is not None and len(data) % 4 == 0
    first, kind, words, ssrc, seconds, fraction, rtp_time, packets, octets = struct.unpack(
        ">BBHIIIIII", data[:28]
    )
    assert (first, kind, words, ssrc) == (0x80, 200, 6, 0xDEADBEEF)
    assert (seconds, fraction) == (1_700_000_000 + 2_208_988_800, 1 << 30)
    assert (rtp_time, packets, octets) == (4000 + 45_000, 5, 4200)
    first, kind, words, chunk_ssrc, item, length = struct.unpack(">BBHIBB", data[28:38])
    assert (first, kind, chunk_ssrc, item, length) == (0x81, 202, 0xDEADBEEF, 1, 4)
    assert data[38:42] == b"cam1" and len(data) == 28 + 4 * (words + 1) and data[42:].strip(b"\0") == b""


def test_reports_and_byes_are_read_and_other_packets_skipped() -> None:
    rr = struct.pack(">BBHI", 0x82, 201, 13, 7) + struct.pack(">6I", 100, 0, 0, 0, 0, 0)
    rr += struct.pack(">6I", 200, 0, 0, 0, 0, 0)
    app = struct.pack(">BBHI4s", 0x80, 204, 2, 7, b"test")
    bye = struct.pack(">BBHII", 0x82, 203, 2, 7, 8)
    assert rtcp.parse(rr + app + bye) == [rtcp.Report(7, (100, 200)), rtcp.Bye((7, 8))]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\xc9",  # shorter than a header
        struct.pack(">BBHI", 0x40, 201, 1, 7),  # version 1
        struct.pack(">BBHI", 0x80, 201, 5, 7),  # length past the end
        struct.pack(">BBHI", 0x81, 201, 1, 7),  # a report block missing
        struct.pack(">BBHI", 0x80, 201, 1, 7) + b"\x80",  # trailing byte
        struct.pack(">BBH", 0x82, 203, 1) + b"\0\0\0\1",  # BYE of two sources with one
    ],
)
def test_malformed_rtcp_is_refused(data: bytes) -> None:
    with pytest.raises(rtcp.BadRtcp):
        rtcp.parse(data)
