"""RTP parsing, SDP reading and H.264 depacketization on hand-built RTP packets."""

from __future__ import annotations

import base64
import struct

import pytest

from streams.codecs import h264
from streams.errors import SourceProtocolError, UnsupportedCodec
from streams.sources.rtsp.rtp import H264Depacketizer, RtpPacket, parse_rtp
from streams.sources.rtsp.sdp import parse_sdp
from tests.media import encode_h264

_PARAMS = {h264.nal_type(n): n for n in h264.split_nals(encode_h264(1, width=640, height=360)[0].data)}
SPS, PPS = _PARAMS[h264.NAL_SPS], _PARAMS[h264.NAL_PPS]
IDR = b"\x65" + bytes(range(1, 200))
SLICE = b"\x41" + bytes(range(7, 90))


def rtp(seq: int, ts: int, payload: bytes, *, marker: bool = False, pt: int = 96, ssrc: int = 7) -> RtpPacket:
    raw = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    packet = parse_rtp(raw + payload)
    assert packet is not None
    return packet


def stap_a(*nals: bytes) -> bytes:
    return b"\x18" + b"".join(struct.pack("!H", len(n)) + n for n in nals)


def fu_a(nal: bytes, size: int) -> list[bytes]:
    indicator = (nal[0] & 0xE0) | 28
    body = nal[1:]
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    out = []
    for i, chunk in enumerate(chunks):
        header = (nal[0] & 0x1F) | (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0)
        out.append(bytes([indicator, header]) + chunk)
    return out


def nals_of(data: bytes) -> list[bytes]:
    assert data.startswith(h264.START_CODE)
    return list(h264.split_nals(data))


def test_parse_rtp_header_with_csrc_extension_and_padding() -> None:
    header = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 1, 0x80 | 96, 65535, 123456, 42)
    csrc = b"\x00\x00\x00\x09"
    extension = struct.pack("!HH", 0xBEDE, 1) + b"\x01\x02\x03\x04"
    packet = parse_rtp(header + csrc + extension + b"\x41abc" + b"\x00\x00\x03")
    assert packet == RtpPacket(96, 65535, 123456, 42, True, b"\x41abc")
    assert parse_rtp(b"\x40" + bytes(20)) is None  # RTP version 1
    assert parse_rtp(b"\x80\x60") is None


def test_single_nal_units_make_one_access_unit_on_the_marker() -> None:
    d = H264Depacketizer()
    assert d.push(rtp(1, 1000, SPS), 1.0) == []
    assert d.push(rtp(2, 1000, PPS), 1.0) == []
    (au,) = d.push(rtp(3, 1000, IDR, marker=True), 2.5)
    assert nals_of(au.data) == [SPS, PPS, IDR]
    assert au.data.count(h264.START_CODE) == 3
    assert au.keyframe and au.pts == 0 and au.received == 2.5
    (p,) = d.push(rtp(4, 4600, SLICE, marker=True), 3.0)
    assert not p.keyframe and p.pts == 3600 and nals_of(p.data) == [SLICE]


def test_stap_a_and_fu_a() -> None:
    d = H264Depacketizer()
    fragments = fu_a(IDR, 60)
    assert len(fragments) == 4
    assert d.push(rtp(10, 0, stap_a(SPS, PPS)), 0.0) == []
    for i, fragment in enumerate(fragments[:-1]):
        assert d.push(rtp(11 + i, 0, fragment), 0.0) == []
    (au,) = d.push(rtp(11 + len(fragments) - 1, 0, fragments[-1], marker=True), 0.0)
    assert nals_of(au.data) == [SPS, PPS, IDR]
    assert au.keyframe


def test_fu_a_with_a_lost_middle_fragment_drops_until_the_next_keyframe() -> None:
    d = H264Depacketizer(h264.ParameterSets(SPS, PPS))
    (first,) = d.push(rtp(1, 0, IDR, marker=True), 0.0)
    assert first.keyframe
    fragments = fu_a(SLICE, 20)
    assert len(fragments) == 5
    seq = 2
    for i, fragment in enumerate(fragments):
        if i != 2:  # lost in transit
            assert d.push(rtp(seq, 3600, fragment, marker=i == len(fragments) - 1), 0.0) == []
        seq += 1
    assert d.lost == 1
    assert d.push(rtp(seq, 7200, SLICE, marker=True), 0.0) == []  # refers to the broken picture
    seq += 1
    (key,) = d.push(rtp(seq, 10800, IDR, marker=True), 0.0)
    assert key.keyframe and key.pts == 10800
    assert nals_of(key.data) == [SPS, PPS, IDR]  # parameter sets added in-band
    assert d.discarded == 2


def test_waits_for_the_first_keyframe_and_adds_parameter_sets_from_the_sdp() -> None:
    d = H264Depacketizer(h264.ParameterSets(SPS, PPS))
    assert d.push(rtp(100, 500, SLICE, marker=True), 0.0) == []
    (key,) = d.push(rtp(101, 4100, IDR, marker=True), 0.0)
    assert nals_of(key.data) == [SPS, PPS, IDR]
    assert key.pts == 0


def test_timestamp_change_completes_an_access_unit_without_marker() -> None:
    d = H264Depacketizer()
    assert d.push(rtp(1, 0, stap_a(SPS, PPS, IDR)), 0.0) == []
    (au,) = d.push(rtp(2, 3600, SLICE), 1.0)
    assert au.keyframe and au.received == 1.0
    second, third = d.push(rtp(3, 7200, SLICE, marker=True), 2.0)
    assert (second.pts, third.pts) == (3600, 7200)
    assert nals_of(second.data) == nals_of(third.data) == [SLICE]


def test_timestamps_and_sequence_numbers_unwrap() -> None:
    d = H264Depacketizer()
    start = 0xFFFFFFFF - 3600
    seq = 0xFFFE
    pts = []
    for i in range(5):
        payload = stap_a(SPS, PPS, IDR) if i == 0 else SLICE
        out = d.push(rtp(seq + i, start + i * 3600, payload, marker=True), 0.0)
        pts += [p.pts for p in out]
    assert pts == [0, 3600, 7200, 10800, 14400]
    assert d.lost == 0


def test_duplicates_and_other_payload_types_are_ignored() -> None:
    d = H264Depacketizer(payload_type=96)
    assert d.push(rtp(1, 0, IDR, pt=97, marker=True), 0.0) == []
    assert len(d.push(rtp(1, 0, IDR, marker=True), 0.0)) == 1
    assert d.push(rtp(1, 0, IDR, marker=True), 0.0) == []  # duplicate
    assert d.lost == 0


def test_real_encoder_output_survives_packetization() -> None:
    packets = encode_h264(12, width=160, height=96, gop=6)
    d = H264Depacketizer()
    seq, out = 0, []
    for i, packet in enumerate(packets):
        nals = nals_of(packet.data)
        for j, nal in enumerate(nals):
            last = j == len(nals) - 1
            payloads = fu_a(nal, 100) if len(nal) > 100 else [nal]
            for k, payload in enumerate(payloads):
                out += d.push(rtp(seq, i * 3600, payload, marker=last and k == len(payloads) - 1), 0.0)
                seq += 1
    assert [nals_of(p.data) for p in out] == [list(h264.split_nals(p.data)) for p in packets]
    assert [p.keyframe for p in out] == [p.keyframe for p in packets]


GST_SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=Session streamed with GStreamer\r\nt=0 0\r\n"
    "a=control:rtsp://127.0.0.1:8554/cam1/\r\n"
    "m=audio 0 RTP/AVP 0\r\na=control:stream=1\r\n"
    "m=video 0 RTP/AVP 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 H264/90000\r\n"
    "a=fmtp:96 packetization-mode=1;profile-level-id=42c01e;"
    f"sprop-parameter-sets={base64.b64encode(SPS).decode()},{base64.b64encode(PPS).decode()}\r\n"
    "a=control:stream=0\r\n"
)


def test_sdp_video_track() -> None:
    sdp = parse_sdp(GST_SDP)
    assert sdp.control == "rtsp://127.0.0.1:8554/cam1/"
    track = sdp.video
    assert (track.control, track.payload_type, track.clock_rate) == ("stream=0", 96, 90000)
    assert (track.sps, track.pps) == (SPS, PPS)
    assert track.info is not None and (track.info.width, track.info.height) == (640, 360)


def test_sdp_without_h264_video() -> None:
    with pytest.raises(SourceProtocolError, match="no video"):
        parse_sdp("v=0\r\nm=audio 0 RTP/AVP 0\r\n")
    vp8 = GST_SDP.replace("H264/90000", "VP8/90000")
    with pytest.raises(UnsupportedCodec, match=r"VP8 is not supported \(H\.264 or H\.265\)"):
        parse_sdp(vp8)
    with pytest.raises(UnsupportedCodec, match="mode 2"):
        parse_sdp(GST_SDP.replace("packetization-mode=1", "packetization-mode=2"))
