"""Shared RTP templates of the RTSP re-serve: byte for byte the packets each session would
build itself, over TCP interleaved channels and UDP, across the sequence number's wrap."""

from __future__ import annotations

import itertools

import pytest

from streams.formats.rtp_template import Framing
from streams.packets import CLOCK_RATE, Codec, MediaPacket
from streams.rtsp_server.payloads import RtpTrack, SharedTemplates, packetizer_of
from streams.webrtc.packetizer import PAYLOAD_MAX
from tests.media import encode_h264, encode_h265
from tests.streams.rtsp_server import rtp_reference

ORIGIN = 0xFFFF_F000
"""Close enough to 2^32 that the timestamps wrap too."""


def _aac_frames(count: int) -> list[MediaPacket]:
    return [MediaPacket(bytes(range(i % 7, i % 7 + 200)), i * 1920, True) for i in range(count)]


CASES: list[tuple[Codec, int, int, list[MediaPacket]]] = [
    ("h264", 96, CLOCK_RATE, encode_h264(30, width=640, height=480, gop=10)),
    ("h265", 96, CLOCK_RATE, encode_h265(10, width=640, height=360, gop=5)),
    ("aac", 97, 48_000, _aac_frames(40)),
]


@pytest.mark.parametrize(("codec", "payload_type", "clock_rate", "units"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize(("framing", "channel"), [("interleaved", 0), ("interleaved", 3), ("none", 0)])
def test_stamped_templates_equal_packets_built_per_session(
    codec: Codec, payload_type: int, clock_rate: int, units: list[MediaPacket], framing: Framing, channel: int
) -> None:
    shared = SharedTemplates(packetizer_of(codec), payload_type)
    tracks = [
        RtpTrack(payload_type, clock_rate, sequence=65_530, first_timestamp=ORIGIN),
        RtpTrack(payload_type, clock_rate, sequence=1234, first_timestamp=7),
    ]
    sequences = [65_530, 1234]
    origins = [ORIGIN, 7]
    packetize = packetizer_of(codec)
    for media in units:
        template = shared.unit(media).template(framing)
        payloads = packetize(media.data)
        for index, track in enumerate(tracks):
            ticks = (media.pts - units[0].pts) * clock_rate // CLOCK_RATE
            timestamp = (ticks + origins[index]) & 0xFFFFFFFF
            expected = rtp_reference.packets(payloads, payload_type, sequences[index], timestamp, track.ssrc)
            sequences[index] = (sequences[index] + len(payloads)) & 0xFFFF
            buffer = track.stamp(template, media.pts, channel)
            if framing == "interleaved":
                assert bytes(buffer) == rtp_reference.interleaved(channel, expected)
            else:
                assert [bytes(buffer[a:b]) for a, b in itertools.pairwise(template.starts)] == expected
    assert shared.units == len(units)
    sent = sum(len(packetize(m.data)) for m in units)
    assert sequences[0] == (65_530 + sent) & 0xFFFF and sent > 6, "the first track's sequence wrapped"
    for track in tracks:
        assert track.packets_sent == sent
        assert track.octets_sent == sum(len(p) for m in units for p in packetize(m.data))
    if codec != "aac":
        assert any(len(p) == PAYLOAD_MAX for m in units for p in packetize(m.data)), "units span packets"
