"""An export plays in real Chromium: the file URL of a ready export, loaded straight into a
``<video>`` by a logged-in operator, decodes frames of the recorded picture size."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.app_fixtures import serve_app
from tests.browser.conftest import PageFactory, login, wait_until
from tests.vms.test_exports import wait_finished, wait_segments

pytestmark = pytest.mark.asyncio(loop_scope="session")

SITE = """
recording:
  record: true
  segment_seconds: 2
centres:
  - id: xingning
    name: 兴宁市政务服务中心
    halls: all
halls:
  - id: tax
    name: 税务大厅
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: demo://tax-1?size=320x180&gop=25
"""

PLAY = """async (url) => {
    const video = document.createElement('video');
    video.id = 'export';
    video.muted = true;
    video.src = url;
    document.body.appendChild(video);
    await video.play();
    return true;
}"""
DECODED = """() => {
    const video = document.getElementById('export');
    const frames = video.getVideoPlaybackQuality().totalVideoFrames;
    const size = [video.videoWidth, video.videoHeight, video.duration];
    return frames >= 25 && !video.error ? [frames, ...size] : null;
}"""


async def test_an_exports_file_url_plays_in_a_video_element(new_page: PageFactory) -> None:
    async with serve_app(SITE) as app:
        await app.wait_online("tax-1", within=30)
        operator = await app.user("xingning", "operator")
        spans = await wait_segments(operator, 3)
        start = datetime.fromisoformat(spans[0]["start"]) + timedelta(seconds=0.5)
        res = await operator.post(
            "/api/v1/exports",
            json={
                "camera_id": "tax-1",
                "start": start.isoformat(),
                "end": (start + timedelta(seconds=4)).isoformat(),
            },
        )
        assert res.status_code == 202, res.text
        export = await wait_finished(operator, res.json()["id"])
        assert export["status"] == "ready", export

        page = await new_page()
        await page.goto(app.base_url + "/", wait_until="domcontentloaded")
        await login(page, "operator-xingning")
        assert await page.evaluate(PLAY, export["file_url"])
        frames, width, height, duration = await wait_until(page, DECODED, 15, "the export decoding")
    assert (width, height) == (320, 180) and frames >= 25
    assert 3.0 < duration < 5.1
