"""H.265 depacketization (RFC 7798) of real libx265 access units packetized here, and H.265 SDP."""

from __future__ import annotations

import base64
import itertools
import struct
from collections.abc import Iterator

import av
import pytest

from streams.codecs import h265
from streams.errors import UnsupportedCodec
from streams.packets import MediaPacket
from streams.sources.rtsp.rtp import RtpPacket, parse_rtp
from streams.sources.rtsp.rtp_h265 import H265Depacketizer
from streams.sources.rtsp.sdp import parse_sdp
from tests.media import encode_h265

GOP = 6
_PARAMETER_SETS = (h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS)


@pytest.fixture(scope="module")
def units() -> list[MediaPacket]:
    return encode_h265(18, width=320, height=240, gop=GOP)


def rtp(seq: int, ts: int, payload: bytes, *, marker: bool = False, pt: int = 96) -> RtpPacket:
    raw = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, 7)
    packet = parse_rtp(raw + payload)
    assert packet is not None
    return packet


def aggregation(*nals: bytes) -> bytes:
    """An AP (type 48): payload header with the lowest layer and temporal ids, then sized units."""
    header = bytes([48 << 1, 1])
    return header + b"".join(struct.pack("!H", len(n)) + n for n in nals)


def fragments(nal: bytes, size: int) -> list[bytes]:
    """FU packets (type 49) carrying ``nal`` in pieces of ``size`` bytes."""
    header = bytes([(nal[0] & 0x81) | (49 << 1), nal[1]])
    body = nal[2:]
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    kind = h265.nal_type(nal)
    return [
        header + bytes([kind | (0x80 if i == 0 else 0) | (0x40 if i == len(pieces) - 1 else 0)]) + piece
        for i, piece in enumerate(pieces)
    ]


def payloads(nals: list[bytes], mtu: int) -> Iterator[bytes]:
    """As a sender would: small units aggregated, large ones fragmented, the rest single."""
    small: list[bytes] = []
    for nal in nals:
        if len(nal) < 60:
            small.append(nal)
            continue
        if small:
            yield small[0] if len(small) == 1 else aggregation(*small)
            small = []
        yield from fragments(nal, mtu) if len(nal) > mtu else [nal]
    if small:
        yield small[0] if len(small) == 1 else aggregation(*small)


def packetize(
    units: list[MediaPacket], mtu: int = 400, *, strip_parameter_sets: bool = False, first_seq: int = 65530
) -> list[RtpPacket]:
    packets: list[RtpPacket] = []
    seq = itertools.count(first_seq)  # wraps by default
    for unit in units:
        nals = list(h265.split_nals(unit.data))
        if strip_parameter_sets:
            nals = [n for n in nals if h265.nal_type(n) not in _PARAMETER_SETS]
        parts = list(payloads(nals, mtu))
        ts = 0xFFFFF000 + unit.pts  # wraps too
        packets += [rtp(next(seq), ts, p, marker=i == len(parts) - 1) for i, p in enumerate(parts)]
    return packets


def depacketize(d: H265Depacketizer, packets: list[RtpPacket]) -> list[MediaPacket]:
    return [unit for i, p in enumerate(packets) for unit in d.push(p, float(i))]


def nals(unit: MediaPacket) -> list[bytes]:
    return list(h265.split_nals(unit.data))


def nal_types(data: bytes) -> list[int]:
    return [h265.nal_type(n) for n in h265.split_nals(data)]


def decoded_frames(units: list[MediaPacket]) -> int:
    ctx = av.CodecContext.create("hevc", "r")
    frames = [f for unit in units for f in ctx.decode(av.Packet(unit.data))]
    return len(frames + ctx.decode(None))


def test_single_ap_and_fu_packets_rebuild_the_access_units(units: list[MediaPacket]) -> None:
    packets = packetize(units)
    first = [h265.nal_type(bytes(p.payload)) for p in packets[:3]]
    assert first[0] == h265.NAL_AP and h265.NAL_FU in first  # parameter sets aggregated, IDR fragmented
    assert any(h265.nal_type(p.payload) < 48 for p in packets)  # and some single NAL unit packets
    out = depacketize(H265Depacketizer(), packets)
    assert [nals(u) for u in out] == [nals(u) for u in units]
    assert [u.keyframe for u in out] == [u.keyframe for u in units]
    assert [u.pts for u in out] == [u.pts for u in units]  # 90 kHz from 0, across the wrap
    assert {u.codec for u in out} == {"h265"}
    assert decoded_frames(out) == len(units)


def test_parameter_sets_from_sdp_go_before_every_keyframe(units: list[MediaPacket]) -> None:
    vps, sps, pps = list(h265.split_nals(units[0].data))[:3]
    d = H265Depacketizer(h265.ParameterSets(vps, sps, pps))
    out = depacketize(d, packetize(units, strip_parameter_sets=True))
    keyframes = [u for u in out if u.keyframe]
    assert len(keyframes) == 3
    for keyframe in keyframes:
        assert nal_types(keyframe.data)[:3] == [h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS]
    assert all(h265.NAL_SPS not in nal_types(u.data) for u in out if not u.keyframe)
    assert decoded_frames(out[GOP:]) == len(units) - GOP  # decodable from a later keyframe alone


def test_in_band_parameter_sets_are_remembered(units: list[MediaPacket]) -> None:
    head = packetize(units[:1])
    packets = head + packetize(units[1:], strip_parameter_sets=True, first_seq=65530 + len(head))
    out = depacketize(H265Depacketizer(), packets)
    assert len(out) == len(units)
    assert nal_types(out[GOP].data)[:3] == [h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS]


def test_loss_drops_to_the_next_keyframe(units: list[MediaPacket]) -> None:
    packets = packetize(units, mtu=200)
    # Lose the first packet of the third access unit (a delta frame).
    starts = [0] + [i + 1 for i, p in enumerate(packets) if p.marker]
    lost = starts[2]
    d = H265Depacketizer()
    out = depacketize(d, packets[:lost] + packets[lost + 1 :])
    assert d.lost == 1
    assert [u.pts for u in out] == [u.pts for u in units[:2]] + [u.pts for u in units[GOP:]]
    assert d.discarded == GOP - 2
    assert decoded_frames(out) == len(out)


def test_a_missing_marker_completes_on_the_next_timestamp(units: list[MediaPacket]) -> None:
    packets = [rtp(p.sequence, p.timestamp, p.payload) for p in packetize(units[:3])]  # no markers
    out = depacketize(H265Depacketizer(), packets)
    assert [nals(u) for u in out] == [nals(u) for u in units[:2]]  # the last one waits for its successor


def test_a_fragment_without_its_start_drops_the_access_unit(units: list[MediaPacket]) -> None:
    keyframe = list(h265.split_nals(units[0].data))
    pieces = fragments(keyframe[-1], 50)
    last = len(pieces) - 1
    broken = [rtp(0, 0, aggregation(*keyframe[:3]))]
    broken += [rtp(i, 0, p, marker=i == last) for i, p in enumerate(pieces[1:], 1)]  # the start is missing
    d = H265Depacketizer()
    assert depacketize(d, broken) == []
    assert (d.lost, d.discarded) == (0, 1)
    later = packetize(units[GOP : GOP + 2], first_seq=len(pieces))
    assert [nals(u) for u in depacketize(d, later)] == [nals(u) for u in units[GOP : GOP + 2]]


def test_sdp_h265_track() -> None:
    (keyframe,) = encode_h265(1, width=320, height=240)
    vps, sps, pps = list(h265.split_nals(keyframe.data))[:3]
    b64 = {name: base64.b64encode(n).decode() for name, n in (("vps", vps), ("sps", sps), ("pps", pps))}
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\n"
        "m=video 0 RTP/AVP 98 96\r\na=rtpmap:98 H265/90000\r\na=rtpmap:96 H264/90000\r\n"
        f"a=fmtp:98 sprop-vps={b64['vps']};sprop-sps={b64['sps']};sprop-pps={b64['pps']}\r\n"
        "a=control:stream=0\r\n"
    )
    track = parse_sdp(sdp).video
    assert (track.codec, track.payload_type, track.clock_rate) == ("h265", 98, 90000)
    assert (track.vps, track.sps, track.pps) == (vps, sps, pps)
    assert track.info is not None
    assert (track.info.codec, track.info.width, track.info.codec_string) == ("h265", 320, "hvc1.1.6.L60.90")
    assert parse_sdp(sdp.replace("RTP/AVP 98 96", "RTP/AVP 96 98")).video.codec == "h264"
    with pytest.raises(UnsupportedCodec, match=r"sprop-max-don-diff"):
        parse_sdp(sdp.replace("sprop-vps", "sprop-max-don-diff=2;sprop-vps"))
    assert parse_sdp(sdp.replace("sprop-vps", "sprop-max-don-diff=0;sprop-vps")).video.codec == "h265"
