"""The source factory dispatches on the URL scheme."""

from __future__ import annotations

import pytest

from streams.sources import SourceOptions, open_source, supported_schemes
from streams.sources.demo import DemoSource
from streams.sources.file import FileSource


def test_supported_schemes() -> None:
    assert set(supported_schemes()) == {"rtsp", "rtsps", "whep", "wheps", "file", "demo"}


def test_demo_and_file_dispatch() -> None:
    demo = open_source(SourceOptions(url="demo://hall1-cam1?fps=10", label="Hall 1 / cam 1"))
    assert isinstance(demo, DemoSource) and demo.params.fps == 10
    assert isinstance(open_source(SourceOptions(url="DEMO://hall1-cam2")), DemoSource)
    source = open_source(SourceOptions(url="file:///srv/video/hall.mp4"))
    assert isinstance(source, FileSource)


@pytest.mark.parametrize("url", ["rtsp://192.0.2.10:554/stream1", "rtsps://192.0.2.10/stream1"])
def test_rtsp_dispatch(url: str) -> None:
    from streams.sources.rtsp.source import RtspSource

    assert isinstance(open_source(SourceOptions(url=url)), RtspSource)


@pytest.mark.parametrize("url", ["http://user:secret@192.0.2.10/video", "hall1-cam1.mp4"])
def test_unknown_scheme_names_the_supported_ones(url: str) -> None:
    with pytest.raises(ValueError, match="supported: rtsp, rtsps, whep, wheps, file, demo") as caught:
        open_source(SourceOptions(url=url))
    assert "secret" not in str(caught.value)
