"""RTP audio: choosing the SDP's audio track, and depacketizing G.711, Opus and AAC
(RFC 3640 AAC-hbr, with AAC access units really encoded by PyAV)."""

from __future__ import annotations

import fractions
import logging

import av
import pytest

from streams.packets import CLOCK_RATE, MediaPacket
from streams.sources.rtsp.audio import choose_audio
from streams.sources.rtsp.rtp import RtpPacket
from streams.sources.rtsp.rtp_audio import (
    AacDepacketizer,
    AvSync,
    FrameDepacketizer,
    audio_depacketizer,
)
from streams.sources.rtsp.sdp_audio import (
    AudioTrack,
    UnsupportedAudio,
    audio_specific_config,
    parse_audio_sdp,
)
from tests.audio_media import encode_audio

VIDEO = """v=0
o=- 1 1 IN IP4 127.0.0.1
s=cam
a=control:*
m=video 0 RTP/AVP 96
a=rtpmap:96 H264/90000
a=control:stream=0
"""

AAC_SDP = VIDEO + (
    "m=audio 0 RTP/AVP 97\n"
    "a=rtpmap:97 MPEG4-GENERIC/48000/2\n"
    "a=fmtp:97 streamtype=5;profile-level-id=2;mode=AAC-hbr;config=1190;"
    "sizelength=13;indexlength=3;indexdeltalength=3\n"
    "a=control:stream=1\n"
)
LATM = "m=audio 0 RTP/AVP 98\na=rtpmap:98 MP4A-LATM/16000/1\na=fmtp:98 cpresent=0;config=40002410\n"


def audio(sdp: str) -> AudioTrack:
    track = parse_audio_sdp(sdp)
    assert isinstance(track, AudioTrack), track
    return track


def rtp(seq: int, ts: int, payload: bytes, *, pt: int = 97, marker: bool = True, ssrc: int = 9) -> RtpPacket:
    return RtpPacket(pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, marker, payload)


def aac_payload(units: list[bytes], *, size: int | None = None) -> bytes:
    """RFC 3640 AAC-hbr payload: 16-bit AU-headers-length, 13-bit size + 3-bit index(-delta) each."""
    headers = b"".join(
        (((size if size is not None else len(u)) << 3) & 0xFFFF).to_bytes(2, "big") for u in units
    )
    return (16 * len(units)).to_bytes(2, "big") + headers + b"".join(units)


# -- SDP ------------------------------------------------------------------------------------------


def test_sdp_g711_by_static_payload_type_and_by_rtpmap() -> None:
    pcmu = audio(VIDEO + "m=audio 0 RTP/AVP 0\na=control:stream=1\n")
    assert (pcmu.payload_type, pcmu.clock_rate, pcmu.channels, pcmu.control) == (0, 8000, 1, "stream=1")
    assert (pcmu.info.codec, pcmu.info.sample_rate, pcmu.aac) == ("pcmu", 8000, None)
    pcma = audio(VIDEO + "m=audio 0 RTP/AVP 8\na=rtpmap:8 PCMA/8000\na=control:audio\n")
    assert (pcma.payload_type, pcma.info.codec, pcma.control) == (8, "pcma", "audio")
    dynamic = audio(VIDEO + "m=audio 0 RTP/AVP 110\na=rtpmap:110 pcmu/8000\n")
    assert (dynamic.payload_type, dynamic.info.codec, dynamic.control) == (110, "pcmu", "*")


def test_sdp_opus() -> None:
    stereo = audio(VIDEO + "m=audio 0 RTP/AVP 96\na=rtpmap:96 OPUS/48000/2\na=fmtp:96 sprop-stereo=1\n")
    assert (stereo.clock_rate, stereo.channels, stereo.info.codec, stereo.info.channels) == (
        48000,
        2,
        "opus",
        2,
    )
    mono = audio(VIDEO + "m=audio 0 RTP/AVP 96\na=rtpmap:96 opus/48000/2\n")
    assert mono.info.channels == 1


def test_sdp_aac_hbr() -> None:
    track = audio(AAC_SDP)
    assert (track.payload_type, track.clock_rate, track.channels, track.control) == (97, 48000, 2, "stream=1")
    assert track.info.codec == "aac" and track.info.config == bytes.fromhex("1190")
    assert track.info.codec_string == "mp4a.40.2"
    assert track.aac is not None
    assert (track.aac.size_length, track.aac.index_length, track.aac.index_delta_length) == (13, 3, 3)
    assert track.aac.frame_ticks == 1024


def test_sdp_he_aac_frames_last_twice_as_long_at_the_output_rate() -> None:
    he = AAC_SDP.replace("config=1190", "config=1310")  # AAC-LC core at 24 kHz, RTP clock 48 kHz
    assert audio_specific_config(bytes.fromhex("1310")) == (24000, 2)
    track = audio(he)
    assert track.aac is not None and track.aac.frame_ticks == 2048


@pytest.mark.parametrize(
    ("section", "named"),
    [
        (LATM, "MP4A-LATM/16000"),
        ("m=audio 0 RTP/AVP 2\na=rtpmap:2 G726-32/8000\n", "G726-32/8000"),
        ("m=audio 0 RTP/AVP 97\na=rtpmap:97 MPEG4-GENERIC/16000\na=fmtp:97 mode=CELP-cbr\n", "MPEG4-GENERIC"),
        ("m=audio 0 RTP/AVP 97\na=rtpmap:97 MPEG4-GENERIC/16000\na=fmtp:97 mode=AAC-hbr;sizelength=13\n", ""),
        ("m=audio 0 RTP/AVP 0\na=rtpmap:0 PCMU/16000\n", "PCMU/16000"),
    ],
)
def test_sdp_audio_we_cannot_relay_is_named_not_raised(section: str, named: str) -> None:
    refused = parse_audio_sdp(VIDEO + section)
    assert isinstance(refused, UnsupportedAudio)
    assert named in ", ".join(refused.formats)


def test_sdp_first_relayable_format_of_the_first_audio_section_that_has_one() -> None:
    sdp = VIDEO + LATM + "a=control:latm\n" + "m=audio 0 RTP/AVP 2 8 0\na=control:g711\n"
    track = audio(sdp)
    assert (track.control, track.info.codec) == ("g711", "pcma")
    assert parse_audio_sdp(VIDEO) is None


def test_choose_audio_logs_one_line_naming_the_refused_format(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="streams.sources.rtsp.audio"):
        assert choose_audio(VIDEO + LATM, "rtsp://cam/1") is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "MP4A-LATM/16000" in lines[0] and "rtsp://cam/1" in lines[0]


# -- G.711 and Opus ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "samples", "pt"), [("pcmu", 160, 0), ("opus", 960, 96)])
def test_one_frame_per_packet_with_unwrapped_90khz_timestamps(codec: str, samples: int, pt: int) -> None:
    section = (
        "m=audio 0 RTP/AVP 0\n" if codec == "pcmu" else "m=audio 0 RTP/AVP 96\na=rtpmap:96 OPUS/48000/2\n"
    )
    track = audio(VIDEO + section)
    encoded = encode_audio(track.info.codec, 0.2)
    depacketizer = audio_depacketizer(track)
    assert isinstance(depacketizer, FrameDepacketizer)
    start_ts, start_seq = 0xFFFFFFFF - samples, 0xFFFE  # both wrap during the test
    out: list[MediaPacket] = []
    for i, frame in enumerate(encoded.packets):
        out += depacketizer.push(
            rtp(start_seq + i, start_ts + i * samples, frame.data, pt=pt), received=float(i)
        )
    assert [p.data for p in out] == [p.data for p in encoded.packets]
    assert [p.pts for p in out] == [i * 1800 for i in range(len(out))]  # 20 ms each
    assert all(p.keyframe and p.codec == codec and p.is_audio for p in out)
    assert depacketizer.lost == 0 and depacketizer.origin == start_ts


def test_loss_drops_only_what_was_lost_and_duplicates_or_other_payload_types_are_ignored() -> None:
    depacketizer = audio_depacketizer(audio(VIDEO + "m=audio 0 RTP/AVP 0\n"))
    frames = [bytes([i]) * 160 for i in range(6)]
    out: list[MediaPacket] = []
    for i in (0, 1, 3, 4, 4, 2, 5):  # 2 lost (then late), 4 duplicated
        out += depacketizer.push(rtp(100 + i, i * 160, frames[i], pt=0), received=0.0)
    out += depacketizer.push(rtp(106, 6 * 160, b"\x01" * 4, pt=13), received=0.0)  # comfort noise
    assert [p.data[0] for p in out] == [0, 1, 3, 4, 5]
    assert [p.pts for p in out] == [0, 1800, 5400, 7200, 9000]
    assert depacketizer.lost == 1


# -- AAC (RFC 3640) ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aac_frames() -> tuple[list[bytes], bytes]:
    encoded = encode_audio("aac", 0.5, sample_rate=48000, channels=2)
    return [p.data for p in encoded.packets], encoded.info.config


def aac_track(config: bytes) -> AudioTrack:
    return audio(AAC_SDP.replace("config=1190", f"config={config.hex()}"))


def decode_aac(units: list[bytes], config: bytes) -> int:
    """Samples PyAV decodes from raw access units with ``config`` as extradata."""
    ctx = av.CodecContext.create("aac", "r")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.extradata = config
    samples = 0
    for i, unit in enumerate(units):
        packet = av.Packet(unit)
        packet.pts, packet.time_base = i * 1024, fractions.Fraction(1, 48000)
        samples += sum(frame.samples for frame in ctx.decode(packet))
    return samples


@pytest.mark.parametrize("per_packet", [1, 3])
def test_aac_hbr_access_units_with_one_or_several_per_packet(
    aac_frames: tuple[list[bytes], bytes], per_packet: int
) -> None:
    frames, config = aac_frames
    frames = frames[: len(frames) // per_packet * per_packet]
    depacketizer = audio_depacketizer(aac_track(config))
    assert isinstance(depacketizer, AacDepacketizer)
    out: list[MediaPacket] = []
    for n, first in enumerate(range(0, len(frames), per_packet)):
        payload = aac_payload(frames[first : first + per_packet])
        out += depacketizer.push(rtp(n, 5000 + first * 1024, payload), received=0.0)
    assert [p.data for p in out] == frames
    assert [p.pts for p in out] == [i * 1024 * CLOCK_RATE // 48000 for i in range(len(frames))]
    assert all(p.codec == "aac" and p.keyframe for p in out)
    assert decode_aac([p.data for p in out], config) >= (len(frames) - 2) * 1024


def test_aac_fragmented_access_unit_is_reassembled_and_dropped_if_a_fragment_is_lost(
    aac_frames: tuple[list[bytes], bytes],
) -> None:
    frames, config = aac_frames
    depacketizer = audio_depacketizer(aac_track(config))
    big = frames[3]
    parts = [big[:40], big[40:80], big[80:]]

    def fragments(seq: int, ts: int, skip: int | None = None) -> list[MediaPacket]:
        out: list[MediaPacket] = []
        for i, part in enumerate(parts):
            if i != skip:
                payload = aac_payload([part], size=len(big))
                out += depacketizer.push(rtp(seq + i, ts, payload, marker=i == 2), received=0.0)
        return out

    assert [(p.data, p.pts) for p in fragments(0, 0)] == [(big, 0)]
    whole = depacketizer.push(rtp(3, 1024, aac_payload([frames[4]])), received=0.0)
    assert [p.data for p in whole] == [frames[4]]
    assert fragments(4, 2048, skip=1) == []  # middle fragment lost: that access unit only
    after = depacketizer.push(rtp(7, 3072, aac_payload([frames[5], frames[6]])), received=0.0)
    assert [p.data for p in after] == [frames[5], frames[6]]
    assert fragments(8, 5120, skip=0) == []  # first fragment lost: its continuations are skipped
    last = depacketizer.push(rtp(11, 6144, aac_payload([frames[7]])), received=0.0)
    assert [(p.data, p.pts) for p in last] == [(frames[7], 6144 * CLOCK_RATE // 48000)]
    assert depacketizer.lost == 2 and depacketizer.discarded == 2


def test_aac_malformed_payloads_are_discarded(aac_frames: tuple[list[bytes], bytes]) -> None:
    frames, config = aac_frames
    depacketizer = audio_depacketizer(aac_track(config))
    assert depacketizer.push(rtp(0, 0, b"\x00"), 0.0) == []
    assert depacketizer.push(rtp(1, 1024, b"\x00\x40\x00"), 0.0) == []  # headers longer than payload
    assert depacketizer.push(rtp(2, 2048, b"\x00\x00" + frames[0]), 0.0) == []  # no AU header
    good = depacketizer.push(rtp(3, 3072, aac_payload([frames[0]])), 0.0)
    assert [p.data for p in good] == [frames[0]]
    assert depacketizer.discarded == 3


# -- lining audio up with video -------------------------------------------------------------------


def packet(pts: int, received: float, codec: str = "pcmu") -> MediaPacket:
    return MediaPacket(data=b"x", pts=pts, keyframe=True, codec=codec, received=received)  # type: ignore[arg-type]


def test_sync_by_rtp_info_and_audio_before_the_video_is_dropped() -> None:
    sync = AvSync(90000, 8000)
    sync.anchor(video_rtptime=1_000_000, audio_rtptime=50_000)
    assert sync.audio([packet(0, 10.0)], origin=50_000) == []  # no video yet
    # The video's first frame is 0.1 s after the RTP-Info instant; audio origin 0.2 s after it.
    sync.video([packet(0, 10.1, "h264")], origin=1_000_000 + 9000)
    out = sync.audio([packet(0, 10.3), packet(1440, 10.3)], origin=50_000 + 1600)
    assert [p.pts for p in out] == [9000, 9000 + 1440]
    assert sync.offset == 9000 and sync.early == 1
    assert [p.pts for p in sync.audio([packet(-18000, 10.4)], origin=51_600)] == []  # before the video


def test_sync_by_arrival_without_rtp_info_or_when_it_is_nonsense() -> None:
    for anchor in ((None, None), (0, 0x7FFF0000)):
        sync = AvSync(90000, 48000)
        sync.anchor(*anchor)
        sync.video([packet(0, 5.0, "h264")], origin=123)
        out = sync.audio([packet(0, 5.5, "opus")], origin=456)
        assert [p.pts for p in out] == [45000]
