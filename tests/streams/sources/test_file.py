"""File sources: a real MP4 encoded by PyAV, looped at real-time pace."""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

import av
import numpy as np
import pytest

from streams.codecs.h264 import NAL_PPS, NAL_SPS, nal_type, split_nals
from streams.errors import SourceError, SourceUnreachable, UnsupportedCodec
from streams.packets import CLOCK_RATE, MediaPacket
from streams.sources.base import SourceOptions
from streams.sources.file import FileSource, path_from_url
from tests.media import write_mp4

FPS = 25
FRAMES = 10  # write_mp4(seconds=0.4): one pass lasts 0.4 s


@pytest.fixture
def mp4(tmp_path: Path) -> Path:
    return write_mp4(tmp_path / "hall.mp4", seconds=FRAMES / FPS, fps=FPS)


async def _take(source: FileSource, count: int) -> list[MediaPacket]:
    out: list[MediaPacket] = []
    async with contextlib.aclosing(source.packets()) as packets:
        async for packet in packets:
            out.append(packet)
            if len(out) == count:
                break
    return out


@pytest.mark.parametrize("memory_limit", [64 << 20, 0], ids=["in-memory", "streamed"])
async def test_loops_at_real_time_with_continuing_pts(mp4: Path, memory_limit: int) -> None:
    source = FileSource(SourceOptions(url=mp4.as_uri()), memory_limit=memory_limit)
    packets = await _take(source, 2 * FRAMES + 3)
    steps = {b.pts - a.pts for a, b in itertools.pairwise(packets)}
    assert steps == {CLOCK_RATE // FPS}
    assert [i for i, p in enumerate(packets) if p.keyframe] == [0, FRAMES, 2 * FRAMES]
    assert packets[FRAMES].data == packets[0].data
    for packet in packets:
        types = {nal_type(n) for n in split_nals(packet.data)}
        assert packet.data.startswith(b"\x00\x00\x00\x01") or packet.data.startswith(b"\x00\x00\x01")
        assert ({NAL_SPS, NAL_PPS} <= types) == packet.keyframe
    span = packets[-1].received - packets[0].received
    assert span == pytest.approx((len(packets) - 1) / FPS, abs=0.08)


async def test_first_frame_decodes_to_the_written_picture(mp4: Path) -> None:
    [first] = await _take(FileSource(SourceOptions(url=mp4.as_uri())), 1)
    ctx = av.CodecContext.create("h264", "r")
    frames = ctx.decode(av.Packet(first.data)) + ctx.decode(None)
    assert len(frames) == 1
    picture = frames[0].to_ndarray(format="rgb24")
    assert picture.shape == (240, 320, 3)
    ramp = (np.arange(320) % 256).astype(np.float64)
    assert np.abs(picture[120, :, 1].astype(np.float64) - ramp).mean() < 8  # write_mp4's green ramp


async def test_relative_file_url(mp4: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(mp4.parent)
    packets = await _take(FileSource(SourceOptions(url=f"file:{mp4.name}")), 2)
    assert packets[0].keyframe and not packets[1].keyframe


def test_file_urls() -> None:
    assert path_from_url("file:///srv/video/hall.mp4") == Path("/srv/video/hall.mp4")
    assert path_from_url("file:sample.mp4") == Path("sample.mp4")
    assert path_from_url("file:///srv/a%20b.mp4") == Path("/srv/a b.mp4")
    with pytest.raises(ValueError, match="names host"):
        path_from_url("file://sample.mp4")


async def test_missing_file_is_unreachable(tmp_path: Path) -> None:
    missing = tmp_path / "gone.mp4"
    with pytest.raises(SourceUnreachable, match=r"gone\.mp4"):
        await _take(FileSource(SourceOptions(url=missing.as_uri())), 1)


def _write_vp9(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libvpx-vp9", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 40, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("memory_limit", [64 << 20, 0], ids=["in-memory", "streamed"])
async def test_non_h264_video_is_unsupported(tmp_path: Path, memory_limit: int) -> None:
    webm = _write_vp9(tmp_path / "clip.webm")
    source = FileSource(SourceOptions(url=webm.as_uri()), memory_limit=memory_limit)
    with pytest.raises(UnsupportedCodec, match=r"clip\.webm is vp9"):
        await _take(source, 1)


async def test_not_a_video_is_a_source_error(tmp_path: Path) -> None:
    junk = tmp_path / "notes.mp4"
    junk.write_bytes(b"this is not a video file\n" * 10)
    with pytest.raises(SourceError, match=r"notes\.mp4"):
        await _take(FileSource(SourceOptions(url=junk.as_uri())), 1)
