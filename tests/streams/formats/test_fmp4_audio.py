"""The AAC track of the fragmented MP4: real AAC encoded by PyAV and real H.264, muxed by us
into one file with both tracks, read back and decoded by PyAV.

Covers :mod:`streams.formats.fmp4_audio`, :func:`streams.formats.fmp4.with_audio` and the
``esds`` box of :mod:`streams.formats.fmp4_config`.
"""

from __future__ import annotations

import fractions
import functools
import itertools
import random
import struct
from pathlib import Path

import av
import pytest

from streams.formats.fmp4 import TIME_OFFSET, Fmp4Writer, with_audio
from streams.formats.fmp4_audio import AUDIO_TRACK_ID, FRAME_SAMPLES, AacWriter
from streams.packets import CLOCK_RATE, AudioInfo, MediaPacket
from tests.audio_media import encode_audio
from tests.media import encode_h264
from tests.streams.formats.test_fmp4 import boxes, child

VIDEO_FRAME = CLOCK_RATE // 25


@functools.cache
def encode_aac(
    seconds: float, sample_rate: int = 48_000, channels: int = 2
) -> tuple[AudioInfo, tuple[MediaPacket, ...]]:
    """A tone as raw AAC-LC frames (no ADTS), ``pts`` in 90 kHz from 0, and its AudioInfo."""
    audio = encode_audio("aac", seconds, sample_rate=sample_rate, channels=channels)
    return audio.info, tuple(audio.packets)


def mux_av(
    video: list[MediaPacket], info: AudioInfo, audio: list[MediaPacket]
) -> tuple[bytes, str, list[int]]:
    """Init segment with both tracks, then every fragment in presentation order; also the
    MIME type and the decode time (samples) each audio frame was written at."""
    vwriter, awriter = Fmp4Writer(), AacWriter(info, TIME_OFFSET)
    fragments: list[tuple[int, bytes]] = []
    init = None
    for packet in video:
        written = vwriter.write(packet)
        assert written is not None
        init = init or written.init
        fragments.append((packet.pts, written.data))
    times = []
    for packet in audio:
        frame = awriter.write(packet)
        if frame is not None:
            fragments.append((packet.pts, frame.data))
            times.append(frame.decode_time)
    assert init is not None
    combined = with_audio(init, info)
    fragments.sort(key=lambda f: f[0])
    return combined.data + b"".join(data for _, data in fragments), combined.mime, times


@pytest.mark.parametrize(("sample_rate", "channels"), [(48_000, 2), (16_000, 1)])
def test_audio_and_video_round_trip_in_sync(tmp_path: Path, sample_rate: int, channels: int) -> None:
    video = encode_h264(50, gop=25)
    info, audio = encode_aac(2.0, sample_rate, channels)
    assert info.config and info.codec_string == "mp4a.40.2"
    data, mime, times = mux_av(video, info, list(audio))
    assert mime.startswith('video/mp4; codecs="avc1.42') and mime.endswith(', mp4a.40.2"')
    assert times == [times[0] + i * FRAME_SAMPLES for i in range(len(audio))]  # no gap, no overlap
    path = tmp_path / "muxed.mp4"
    path.write_bytes(data)

    with av.open(str(path)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
        stream = container.streams.audio[0]
        assert (stream.codec_context.sample_rate, stream.codec_context.channels) == (sample_rate, channels)
        assert stream.time_base == fractions.Fraction(1, sample_rate)
        audio_frames = [(f.pts, f.samples) for f in container.decode(audio=0)]
    with av.open(str(path)) as container:
        video_frames = [f.pts for f in container.decode(video=0)]
    assert video_frames == [TIME_OFFSET + p.pts for p in video]
    assert video_frames[0] is not None
    assert [n for _, n in audio_frames] == [FRAME_SAMPLES] * len(audio)  # every frame decoded
    # Both tracks share the 90 kHz origin: each audio frame starts where its packet's pts says,
    # within a sample of rounding, and the first of each track within a frame of the other.
    for (pts, _), packet in zip(audio_frames, audio, strict=True):
        assert pts is not None
        assert abs(pts * CLOCK_RATE / sample_rate - (TIME_OFFSET + packet.pts)) <= CLOCK_RATE / sample_rate
    first_audio = (audio_frames[0][0] or 0) * CLOCK_RATE / sample_rate
    assert abs(first_audio - video_frames[0]) < VIDEO_FRAME


def test_init_segment_layout() -> None:
    info, _ = encode_aac(0.5, 16_000, 1)
    written = Fmp4Writer().write(encode_h264(1)[0])
    assert written is not None
    init = with_audio(written.init, info)
    assert with_audio(init, info) is init and with_audio(init, None) == written.init
    assert init.codecs == f"{written.init.codec}, mp4a.40.2"
    moov = dict(boxes(init.data))[b"moov"]
    traks = [payload for kind, payload in boxes(moov) if kind == b"trak"]
    assert len(traks) == 2
    assert struct.unpack_from(">I", child(moov, "mvhd"), 96)[0] == AUDIO_TRACK_ID + 1  # next_track_ID
    sound = traks[1]
    assert struct.unpack_from(">I", child(sound, "tkhd"), 12)[0] == AUDIO_TRACK_ID
    assert struct.unpack_from(">I", child(sound, "mdia/mdhd"), 12)[0] == 16_000  # timescale
    assert child(sound, "mdia/hdlr")[8:12] == b"soun"
    stsd = child(sound, "mdia/minf/stbl/stsd")[8:]
    assert stsd[4:8] == b"mp4a"
    esds = child(stsd[8:], "esds", skip=28)  # past the audio sample entry fields
    assert esds.endswith(b"\x05" + bytes((len(info.config),)) + info.config + b"\x06\x01\x02")
    assert child(sound, "mdia/minf/smhd") == bytes(8)  # version, flags, balance 0, reserved
    trexes = [payload for kind, payload in boxes(child(moov, "mvex")) if kind == b"trex"]
    assert [struct.unpack_from(">II", t, 4) for t in trexes] == [(1, 1), (AUDIO_TRACK_ID, 1)]
    with pytest.raises(ValueError, match="AAC"):
        with_audio(written.init, AudioInfo("opus", 48_000, 2))


def test_fragment_layout() -> None:
    info, audio = encode_aac(0.2)
    writer = AacWriter(info, TIME_OFFSET)
    frame = writer.write(audio[1])
    assert frame is not None
    (moof_kind, moof), (mdat_kind, mdat) = boxes(frame.data)
    assert (moof_kind, mdat_kind) == (b"moof", b"mdat") and mdat == audio[1].data
    assert struct.unpack_from(">I", child(moof, "traf/tfhd"), 4)[0] == AUDIO_TRACK_ID
    tfdt = child(moof, "traf/tfdt")
    expected = round((TIME_OFFSET + audio[1].pts) * 48_000 / CLOCK_RATE)
    assert tfdt[0] == 1 and struct.unpack_from(">Q", tfdt, 4)[0] == expected == frame.decode_time
    count, offset, duration, size = struct.unpack_from(">IiII", child(moof, "traf/trun"), 4)
    assert (count, offset, duration, size) == (1, 8 + len(moof) + 8, FRAME_SAMPLES, len(mdat))


def written(writer: AacWriter, packets: list[MediaPacket]) -> list[int | None]:
    """Where ``writer`` put each packet (samples), None for a frame left out."""
    out: list[int | None] = []
    for packet in packets:
        frame = writer.write(packet)
        out.append(None if frame is None else frame.decode_time)
    return out


def restamped(packets: tuple[MediaPacket, ...], pts: list[float]) -> list[MediaPacket]:
    return [MediaPacket(p.data, round(t), True, "aac") for p, t in zip(packets, pts, strict=False)]


def test_jittered_timestamps_give_an_exact_timeline() -> None:
    info, audio = encode_aac(2.0)
    rng = random.Random(7)
    jitter = 0.3 * FRAME_SAMPLES * CLOCK_RATE / info.sample_rate  # 6 ms either way at 48 kHz
    writer = AacWriter(info, TIME_OFFSET)
    times = written(writer, restamped(audio, [p.pts + rng.uniform(-jitter, jitter) for p in audio]))
    assert None not in times
    assert times == [times[0] + i * FRAME_SAMPLES for i in range(len(audio))]  # type: ignore[operator]
    assert writer.resyncs == writer.dropped == 0


@pytest.mark.parametrize("rate_error", [0.01, -0.01])
def test_a_drifting_clock_is_followed_by_gaps_or_drops(rate_error: float) -> None:
    info, audio = encode_aac(4.0, 16_000, 1)
    frame_ticks = FRAME_SAMPLES * CLOCK_RATE / info.sample_rate
    packets = restamped(audio, [i * frame_ticks * (1 + rate_error) for i in range(len(audio))])
    writer = AacWriter(info, TIME_OFFSET)
    times = written(writer, packets)
    kept = [t for t in times if t is not None]
    steps = {b - a for a, b in itertools.pairwise(kept)}
    assert min(steps) == FRAME_SAMPLES  # never an overlap
    for packet, at in zip(packets, times, strict=True):
        if at is not None:  # every frame written stays within a frame of its packet's clock
            assert abs(at - (TIME_OFFSET + packet.pts) * info.sample_rate / CLOCK_RATE) < FRAME_SAMPLES
    corrections = writer.resyncs if rate_error > 0 else writer.dropped
    assert 0.5 * len(audio) * abs(rate_error) <= corrections <= 2 * len(audio) * abs(rate_error) + 1
    assert (writer.dropped if rate_error > 0 else writer.resyncs) == 0


def test_jumps_restart_or_drop() -> None:
    info, audio = encode_aac(1.0)
    frame_ticks = FRAME_SAMPLES * CLOCK_RATE // info.sample_rate
    writer = AacWriter(info, TIME_OFFSET)
    first = writer.write(audio[0])
    assert first is not None
    # Three frames lost: the timeline follows the packets' clock at once, leaving a gap.
    after_loss = writer.write(audio[4])
    assert after_loss is not None and after_loss.decode_time == first.decode_time + 4 * FRAME_SAMPLES
    # The clock steps back three frames: the frames that would overlap are left out.
    back = restamped(audio[5:10], [audio[n].pts - 3 * frame_ticks for n in range(5, 10)])
    times = written(writer, back)
    assert times[:3] == [None, None, None]
    assert times[3:] == [after_loss.decode_time + n * FRAME_SAMPLES for n in (1, 2)]
    # A clock that went back by seconds starts the timeline over.
    restart = writer.write(MediaPacket(audio[10].data, audio[10].pts - 2 * CLOCK_RATE, True, "aac"))
    assert restart is not None
    assert restart.decode_time == round((TIME_OFFSET + audio[10].pts - 2 * CLOCK_RATE) * 48_000 / CLOCK_RATE)
    assert (writer.resyncs, writer.dropped, writer.written) == (2, 3, 5)
