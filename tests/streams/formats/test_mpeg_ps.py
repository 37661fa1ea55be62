"""MPEG-PS muxer: real PyAV-encoded H.264 and H.265, muxed by us, read back by PyAV and ffprobe,
and walked structurally (headers before keyframes, PSM CRC, PES timestamps and lengths)."""

from __future__ import annotations

import dataclasses
import functools
import io
from pathlib import Path

import av
import pytest

from streams.formats.mpeg_ps import PES_LENGTH_MAX, PsMuxer, crc32_mpeg2
from streams.hub import Hub
from streams.packets import MediaPacket
from tests.audio_media import encode_audio
from tests.media import arriving, encode_h264, encode_h264_bframes, encode_h265
from tests.streams.formats import ps_checks
from tests.streams.formats.ps_checks import AUDIO, PACK, PSM, SYSTEM, VIDEO

ENCODERS = {"h264": encode_h264, "h265": encode_h265}


@functools.cache
def stream(codec: str) -> tuple[MediaPacket, ...]:
    return tuple(ENCODERS[codec](50, gop=25))


def mux(packets: tuple[MediaPacket, ...] | list[MediaPacket], muxer: PsMuxer | None = None) -> list[bytes]:
    muxer = muxer or PsMuxer()
    return [muxer.mux(p) for p in packets]


def test_crc_matches_the_standard_check_value_and_a_bitwise_computation() -> None:
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7 == ps_checks.crc32_mpeg2(b"123456789")
    sample = bytes(range(256)) * 3
    assert crc32_mpeg2(sample) == ps_checks.crc32_mpeg2(sample)


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_pyav_and_ffprobe_read_back_every_frame(codec: str, tmp_path: Path) -> None:
    packets = stream(codec)
    data = b"".join(mux(packets))
    demuxed = ps_checks.demux(data)
    assert [pts for pts, _, _ in demuxed] == [p.pts for p in packets]
    assert [key for _, _, key in demuxed] == [p.keyframe for p in packets]
    pictures = ps_checks.decode(data)
    assert pictures == [(p.pts, 320, 240) for p in packets]
    path = tmp_path / "camera.mpg"
    path.write_bytes(data)
    probed = ps_checks.ffprobe_video(path)
    assert probed["codec_name"] == {"h264": "h264", "h265": "hevc"}[codec]
    assert int(probed["nb_read_packets"]) == len(packets)
    assert (probed["width"], probed["height"]) == (320, 240)


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_keyframes_carry_system_header_and_map_every_unit_a_pack_header(codec: str) -> None:
    packets = stream(codec)
    stream_type = {"h264": 0x1B, "h265": 0x24}[codec]
    for packet, unit in zip(packets, mux(packets), strict=True):
        parts = ps_checks.ps_packets(unit)
        ids = [sid for sid, _ in parts]
        assert ids == ([PACK, SYSTEM, PSM, VIDEO] if packet.keyframe else [PACK, VIDEO])
        assert ps_checks.scr(parts[0][1]) == packet.pts
        assert ps_checks.pes_times(parts[-1][1]) == (packet.pts, None)
        assert parts[-1][1][6] & 0x04, "data_alignment_indicator on an access unit's first PES"
        assert parts[-1][1][9 + 5 :] == packet.data
        if packet.keyframe:
            assert ps_checks.psm_streams(parts[2][1]) == [(stream_type, VIDEO)]
            system = parts[1][1]
            assert system[12:15] == bytes((VIDEO, 0xE0 | 0x20 | 0x01, 400 & 0xFF))  # 400 KiB bound


def filler(size: int) -> bytes:
    """An H.264 filler-data NAL unit (type 12) of ``size`` bytes: decoders skip it."""
    return b"\x00\x00\x00\x01\x0c" + b"\xff" * (size - 2) + b"\x80"


def test_access_units_larger_than_a_pes_are_split() -> None:
    packets = list(stream("h264")[:30])
    packets[0] = dataclasses.replace(packets[0], data=packets[0].data + filler(150_000))
    units = mux(packets)
    pes = [part for sid, part in ps_checks.ps_packets(units[0]) if sid == VIDEO]
    assert len(pes) == 3
    assert [len(p) - 6 for p in pes[:2]] == [PES_LENGTH_MAX, PES_LENGTH_MAX]
    assert ps_checks.pes_times(pes[0]) == (packets[0].pts, None)
    assert [ps_checks.pes_times(p) for p in pes[1:]] == [(None, None)] * 2
    assert b"".join(p[9 + p[8] :] for p in pes) == packets[0].data
    data = b"".join(units)
    assert [pts for pts, _, _ in ps_checks.demux(data)] == [p.pts for p in packets]
    assert len(ps_checks.decode(data)) == len(packets)


def test_a_small_pes_limit_splits_every_frame_and_still_demuxes() -> None:
    packets = stream("h265")
    units = mux(packets, PsMuxer(pes_length_max=300))
    assert all(len(part) <= 306 for unit in units for _, part in ps_checks.ps_packets(unit))
    # the first PES holds 300 - 8 bytes of the access unit (flags, header length, PTS), the others 297
    expected = sum(1 + -(-max(0, len(p.data) - 292) // 297) for p in packets)
    assert sum(1 for unit in units for sid, _ in ps_checks.ps_packets(unit) if sid == VIDEO) == expected
    data = b"".join(units)
    assert [pts for pts, _, _ in ps_checks.demux(data)] == [p.pts for p in packets]
    assert len(ps_checks.decode(data)) == len(packets)


def test_b_frames_carry_decode_times_and_the_pack_clock_follows_them() -> None:
    hub = Hub("bframes", queue_packets=1000)
    sub = hub.subscribe()
    for packet in arriving(encode_h264_bframes(50, gop=25)):
        hub.publish(packet)
    packets = [p for p in (sub.get_nowait() for _ in range(sub.pending())) if p is not None]
    assert any(p.dts is not None and p.dts != p.pts for p in packets)
    units = mux(packets)
    clocks = [ps_checks.scr(ps_checks.ps_packets(u)[0][1]) for u in units]
    assert clocks == [p.decode_ts & ((1 << 33) - 1) for p in packets]
    demuxed = ps_checks.demux(b"".join(units))
    # the first decode time is negative: written modulo 2^33, it is read back unwrapped
    assert packets[0].decode_ts < 0
    assert [(pts, dts) for pts, dts, _ in demuxed] == [(p.pts, p.decode_ts) for p in packets]
    assert len(ps_checks.decode(b"".join(units))) == len(packets)


def test_a_codec_change_bumps_the_map_version() -> None:
    muxer = PsMuxer()
    first = muxer.mux(stream("h264")[0])
    second = muxer.mux(stream("h265")[0])
    again = muxer.mux(stream("h265")[25])
    psms = [dict(ps_checks.ps_packets(u))[PSM] for u in (first, second, again)]
    assert [p[6] & 0x1F for p in psms] == [0, 1, 1]
    assert ps_checks.psm_streams(psms[1]) == [(0x24, VIDEO)]


def test_audio_is_listed_in_the_map_and_muxed_with_adts() -> None:
    audio = encode_audio("aac", 0.5)
    muxer = PsMuxer(audio.info)
    video = stream("h264")[:13]
    units = [muxer.mux(p) for p in sorted([*video, *audio.packets], key=lambda p: (p.pts, p.is_audio))]
    key = dict(ps_checks.ps_packets(units[0]))
    assert ps_checks.psm_streams(key[PSM]) == [(0x1B, VIDEO), (0x0F, AUDIO)]
    frames = [part for u in units for sid, part in ps_checks.ps_packets(u) if sid == AUDIO]
    assert len(frames) == len(audio.packets)
    assert all(f[9 + 5 : 9 + 7] == b"\xff\xf1" for f in frames), "an ADTS header before each frame"
    with av.open(io.BytesIO(b"".join(units)), format="mpeg") as container:
        names = sorted(s.codec_context.name for s in container.streams)
        decoded = sum(1 for _ in container.decode(audio=0))
    assert names == ["aac", "h264"]
    assert decoded >= len(audio.packets) - 2


def test_opus_audio_is_refused() -> None:
    with pytest.raises(ValueError, match="opus"):
        PsMuxer(encode_audio("opus", 0.1).info)
