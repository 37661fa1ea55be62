"""A camera's own words never become ours: the RTSP source against a camera that echoes
the request's ``Authorization`` header in its reason phrase, headers and body.

The error a user sees (``SourceError.public``) is fixed text chosen by status and
error class; the detailed message keeps the camera's words for the debug log, and
:func:`streams.redact.redact_text` strips the credentials from it.
"""

from __future__ import annotations

import base64
import logging

import pytest

from streams.errors import SourceAuthError, SourceError, SourceProtocolError, SourceUnreachable
from streams.redact import redact_text
from streams.sources.base import SourceOptions
from streams.sources.failures import public_reason, status_reason
from streams.sources.rtsp.audio import choose_audio
from streams.sources.rtsp.source import RtspSource
from tests.streams.sources.echo_camera import EchoCamera, EchoMode

USER, PASSWORD = "viewer", "Echo-s3cret-pass"
TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


async def fail(url: str) -> SourceError:
    source = RtspSource(SourceOptions(url=url, username=USER, password=PASSWORD, connect_timeout=5))
    packets = source.packets()
    with pytest.raises(SourceError) as caught:
        await anext(packets)
    await packets.aclose()
    return caught.value


@pytest.mark.parametrize(
    ("mode", "kind", "public"),
    [
        ("401", SourceAuthError, "the camera refused the login (401)"),
        ("404", SourceProtocolError, "the camera answered 404 for the stream"),
        ("500", SourceProtocolError, "the camera failed with a server error (500) to DESCRIBE"),
        ("garbage", SourceProtocolError, "the camera answered something that is not RTSP"),
    ],
)
async def test_an_echoed_login_stays_out_of_the_public_text(
    mode: EchoMode, kind: type[SourceError], public: str
) -> None:
    async with EchoCamera(mode) as camera:
        err = await fail(camera.url)
    assert camera.echoed == 1, "the camera saw our credentials and echoed them"
    assert isinstance(err, kind)
    assert public_reason(err) == public
    detail = redact_text(str(err), [])
    for text in (public, detail):
        assert TOKEN not in text and PASSWORD not in text
    assert f"127.0.0.1:{camera.port}/stream" in detail, "the detail still says where"


async def test_a_refused_connection_says_so() -> None:
    async with EchoCamera("500") as camera:
        url = camera.url
    err = await fail(url)
    assert isinstance(err, SourceUnreachable)
    assert public_reason(err) == "connection refused"


@pytest.mark.parametrize(
    ("method", "status", "text"),
    [
        ("DESCRIBE", 403, "the camera forbids access to the stream (403)"),
        ("SETUP", 461, "the camera refuses the requested transport (461)"),
        ("PLAY", 503, "the camera is unavailable or busy (503)"),
        ("PLAY", 599, "the camera failed with a server error (599) to PLAY"),
        ("SETUP", 418, "the camera answered 418 to SETUP"),
        ("SETUP", 12345678901234567890, "the camera answered SETUP with an invalid status"),
        ("Basic abc", 500, "the camera failed with a server error (500) to a"),
    ],
)
def test_status_texts_are_ours(method: str, status: int, text: str) -> None:
    assert status_reason(method, status) == text


def test_an_audio_format_named_by_the_camera_is_logged_only_if_we_know_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    video = "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    audio = f"m=audio 0 RTP/AVP 97 98\r\na=rtpmap:97 {TOKEN}/8000\r\na=rtpmap:98 MP4A-LATM/16000\r\n"
    with caplog.at_level(logging.DEBUG, logger="streams.sources.rtsp.audio"):
        assert choose_audio(video + audio, "rtsp://cam/1") is None
    [line] = [r.getMessage() for r in caplog.records]
    assert "an unknown format, MP4A-LATM/16000" in line
    assert TOKEN.upper() not in line.upper()
