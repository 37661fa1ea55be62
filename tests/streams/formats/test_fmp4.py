"""Fragmented MP4 writer: real PyAV-encoded H.264 and H.265, muxed by us, read back by PyAV.

Covers :mod:`streams.formats.fmp4` and :mod:`streams.formats.fmp4_config`.
"""

from __future__ import annotations

import functools
import itertools
import struct
from pathlib import Path

import av
import pytest

from streams.codecs import h264, h265
from streams.formats.fmp4 import TIME_OFFSET, Fmp4Writer, codec_string, split_access_unit
from streams.hub import Hub
from streams.packets import CLOCK_RATE, MediaPacket
from tests.media import arriving, encode_h264, encode_h264_bframes, encode_h265

FRAME = CLOCK_RATE // 25


def boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """``(type, payload)`` of the ISO BMFF boxes laid end to end in ``data``."""
    out, at = [], 0
    while at < len(data):
        size, kind = struct.unpack_from(">I4s", data, at)
        assert size >= 8 and at + size <= len(data), f"bad box {kind!r} at {at}"
        out.append((kind, data[at + 8 : at + size]))
        at += size
    return out


def child(payload: bytes, path: str, skip: int = 0) -> bytes:
    """The payload of the box at ``path`` (``"trak/mdia/mdhd"``) inside a container's payload."""
    kind, _, rest = path.partition("/")
    found = dict(boxes(payload[skip:]))[kind.encode()]
    return child(found, rest) if rest else found


def mux(packets: list[MediaPacket]) -> tuple[bytes, list[str]]:
    """The init segment and every fragment of ``packets``, and the codec strings of the init segments."""
    writer = Fmp4Writer()
    out, codecs, init = bytearray(), [], None
    for packet in packets:
        written = writer.write(packet)
        assert written is not None
        if written.init is not init:
            init = written.init
            codecs.append(init.codec)
            out += init.data
        out += written.data
    return bytes(out), codecs


def decode(path: Path) -> list[tuple[int, int, int]]:
    """``(pts, width, height)`` of every frame PyAV decodes from the file."""
    with av.open(str(path)) as container:
        return [(f.pts or 0, f.width, f.height) for f in container.decode(video=0)]


def first_sps(packet: MediaPacket) -> bytes:
    kind = h264.nal_type if packet.codec == "h264" else h265.nal_type
    sps = h264.NAL_SPS if packet.codec == "h264" else h265.NAL_SPS
    return next(n for n in h264.split_nals(packet.data) if kind(n) == sps)


@functools.cache
def bframe_stream() -> tuple[MediaPacket, ...]:
    """High profile with two B-frames, decode times stamped by a real hub as the relay does."""
    packets = encode_h264_bframes(75, gop=25)
    assert all(p.dts is None for p in packets)
    hub = Hub("bframes", queue_packets=1000)
    sub = hub.subscribe()
    for packet in arriving(packets):
        hub.publish(packet)
    stamped = [sub.get_nowait() for _ in range(sub.pending())]
    assert hub.reorders
    return tuple(p for p in stamped if p is not None)


def test_constrained_baseline_round_trip(tmp_path: Path) -> None:
    packets = encode_h264(50, width=320, height=240)
    data, codecs = mux(packets)
    path = tmp_path / "baseline.mp4"
    path.write_bytes(data)

    sps = first_sps(packets[0])
    assert codecs == [f"avc1.{sps[1]:02x}{sps[2]:02x}{sps[3]:02x}"] == [codec_string("h264", sps)]
    assert codecs[0].startswith("avc1.42")  # Constrained Baseline: 42 with constraint_set1
    frames = decode(path)
    assert frames == [(TIME_OFFSET + p.pts, 320, 240) for p in packets]


def test_high_profile_with_bframes_round_trip(tmp_path: Path) -> None:
    packets = list(bframe_stream())
    assert [p.pts for p in packets] != sorted(p.pts for p in packets)  # really in decode order
    data, codecs = mux(packets)
    assert codecs[0].startswith("avc1.64")
    path = tmp_path / "high.mp4"
    path.write_bytes(data)

    # A High profile stream may reorder, so the hub stamps decode times from its first
    # keyframe on: every sample decodes before it is shown, and presentation times are exact.
    assert all(p.dts is not None and p.dts <= p.pts for p in packets)
    frames = decode(path)
    assert len(frames) == len(packets)
    assert {(w, h) for _, w, h in frames} == {(320, 240)}
    assert [p for p, _, _ in frames] == sorted(TIME_OFFSET + p.pts for p in packets)

    # Decode times advance one frame period at a time, and each sample lasts one frame
    # period: never longer (an MSE player would drop the frame it overlapped) nor shorter
    # (a player would see a gap in decode times and wait for the next keyframe).
    steps = {b.decode_ts - a.decode_ts for a, b in itertools.pairwise(packets)}
    assert steps == {FRAME}
    writer = Fmp4Writer()
    for packet in packets:
        written = writer.write(packet)
        assert written is not None
        trun = child(boxes(written.data)[0][1], "traf/trun")
        assert struct.unpack_from(">I", trun, 12)[0] == FRAME


@pytest.mark.parametrize(("pix_fmt", "profile"), [("yuv420p", "hvc1.1."), ("yuv420p10le", "hvc1.2.")])
def test_h265_round_trip(tmp_path: Path, pix_fmt: str, profile: str) -> None:
    packets = encode_h265(30, width=320, height=240, gop=15, pix_fmt=pix_fmt)
    data, codecs = mux(packets)
    sps = first_sps(packets[0])
    assert codecs == [h265.codec_string(sps)] == [codec_string("h265", sps)]
    assert codecs[0].startswith(profile)
    path = tmp_path / "hevc.mp4"
    path.write_bytes(data)
    assert decode(path) == [(TIME_OFFSET + p.pts, 320, 240) for p in packets]

    moov = dict(boxes(data))[b"moov"]
    entry = child(moov, "trak/mdia/minf/stbl/stsd")[8:]  # past version, flags and entry count
    assert entry[4:8] == b"hvc1"
    hvcc = child(entry[8:], "hvcC", skip=78)  # past the visual sample entry fields
    depth = 2 if pix_fmt.endswith("10le") else 0
    assert hvcc[1:13] == h265.general_ptl(sps)
    assert (hvcc[16] & 3, hvcc[17] & 7, hvcc[18] & 7) == (1, depth, depth)  # 4:2:0, bit depths
    assert hvcc[21] & 3 == 3  # 4-byte NAL unit lengths


def test_fragment_layout() -> None:
    packets = encode_h264(10)
    writer = Fmp4Writer()
    key, other = writer.write(packets[0]), writer.write(packets[1])
    assert key is not None and other is not None and key.keyframe and not other.keyframe

    for written, packet, sync in ((key, packets[0], True), (other, packets[1], False)):
        (moof_kind, moof), (mdat_kind, mdat) = boxes(written.data)
        assert (moof_kind, mdat_kind) == (b"moof", b"mdat")
        tfdt = child(moof, "traf/tfdt")
        assert tfdt[0] == 1 and struct.unpack_from(">Q", tfdt, 4)[0] == TIME_OFFSET + packet.pts
        trun = child(moof, "traf/trun")
        version, count, offset, duration, size, flags, cto = struct.unpack(">BxxxIiIIIi", trun)
        assert (version, count, duration, size, cto) == (1, 1, FRAME, len(mdat), 0)
        assert offset == 8 + len(moof) + 8  # from the start of moof to mdat's payload
        assert bool(flags & 0x00010000) is not sync  # sample_is_non_sync_sample
        assert (flags >> 24) & 3 == (2 if sync else 1)  # sample_depends_on
        # mdat: length-prefixed NAL units, parameter sets and delimiters removed
        nals, at = [], 0
        while at < len(mdat):
            (length,) = struct.unpack_from(">I", mdat, at)
            nals.append(mdat[at + 4 : at + 4 + length])
            at += 4 + length
        assert at == len(mdat)
        assert nals == split_access_unit(packet.data, "h264")[0]
        assert not {h264.nal_type(n) for n in nals} & {h264.NAL_SPS, h264.NAL_PPS, h264.NAL_AUD}
    assert {h264.nal_type(n) for n in split_access_unit(packets[0].data, "h264")[1]} == {7, 8}

    init = key.init.data
    assert [kind for kind, _ in boxes(init)] == [b"ftyp", b"moov"]
    moov = dict(boxes(init))[b"moov"]
    assert struct.unpack_from(">I", child(moov, "trak/mdia/mdhd"), 12)[0] == CLOCK_RATE
    assert child(moov, "mvex/trex")[4:8] == b"\x00\x00\x00\x01"
    for table in ("stts", "stsc", "stco"):
        assert child(moov, f"trak/mdia/minf/stbl/{table}")[4:] == bytes(4)  # no samples in moov


def test_duration_follows_the_previous_step() -> None:
    packets = encode_h264(6)
    writer = Fmp4Writer()
    durations = []
    for packet in [packets[0], packets[1], packets[3], packets[4]]:  # one frame missing
        written = writer.write(packet)
        assert written is not None
        durations.append(struct.unpack_from(">I", child(boxes(written.data)[0][1], "traf/trun"), 12)[0])
    assert durations == [FRAME, FRAME, 2 * FRAME, FRAME]


def test_new_parameter_sets_give_a_new_init_segment(tmp_path: Path) -> None:
    small = encode_h264(25, width=320, height=240)
    large = [p.shifted(25 * FRAME) for p in encode_h264(25, width=640, height=360)]
    writer = Fmp4Writer()
    assert writer.write(small[1]) is None  # nothing to describe the stream before a keyframe
    written = [writer.write(p) for p in small + large]
    assert all(w is not None for w in written)
    inits = [w.init for w in written if w is not None]
    assert inits[0] is inits[24] and inits[25] is inits[-1] and inits[0] is not inits[25]
    assert (inits[0].width, inits[0].height, inits[25].width, inits[25].height) == (320, 240, 640, 360)

    data, _ = mux(small + large)
    path = tmp_path / "switch.mp4"
    path.write_bytes(data)
    # PyAV reads only the first moov, but every frame of the first part must decode.
    assert [(w, h) for _, w, h in decode(path)][:25] == [(320, 240)] * 25
