"""Recording through the whole service: a recorded camera's segments are indexed and
listed by the API, and show in /metrics; a camera that does not record lists nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tests.app_fixtures import serve_app

SITE = """
webrtc:
  ice_host_addresses: ["127.0.0.1"]
recording:
  record: true
  segment_seconds: 2
centres:
  - id: xingning
    name: 兴宁市政务服务中心
    halls: all
halls:
  - id: tax
    name: 国家税务总局兴宁市税务局第一税务分厅办税服务厅
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: demo://tax-1?size=320x180&gop=25
  - id: tax-2
    name: 窗口区
    hall: tax
    url: demo://tax-2?size=320x180&gop=25
    record: false
"""


async def test_segments_are_listed_as_one_span_and_counted_in_metrics() -> None:
    async with serve_app(SITE) as app:
        await app.wait_online("tax-1", "tax-2", within=30)
        operator = await app.user("xingning", "operator")
        started = datetime.now(UTC)
        listed: dict[str, object] = {}
        for _ in range(150):
            res = await operator.get("/api/v1/cameras/tax-1/recordings")
            assert res.status_code == 200
            listed = res.json()
            if int(listed["segments"]) >= 3:  # type: ignore[call-overload]
                break
            await asyncio.sleep(0.1)
        assert int(listed["segments"]) >= 3, listed  # type: ignore[call-overload]
        assert listed["recording"] is True and listed["stream"] == "main"
        spans = listed["spans"]
        assert isinstance(spans, list) and len(spans) == 1, listed  # keyframe cuts leave no gap
        start = datetime.fromisoformat(spans[0]["start"])
        end = datetime.fromisoformat(spans[0]["end"])
        assert started - timedelta(seconds=30) < start < end <= datetime.now(UTC) + timedelta(seconds=1)

        other = (await operator.get("/api/v1/cameras/tax-2/recordings")).json()
        assert other["recording"] is False and other["segments"] == 0 and other["spans"] == []
        bad = await operator.get(
            "/api/v1/cameras/tax-1/recordings?start=2026-01-01T00:00:00Z&end=2026-03-01T00:00:00Z"
        )
        assert bad.status_code == 400

        ready = (await app.http.get("/readyz")).json()
        assert ready["recording"] == {"cameras": 1, "failing": 0}
        metrics = (await app.http.get("/metrics")).text
    assert 'hallwatch_recording_active{camera="tax-1",hall="tax"} 1.0' in metrics
    assert 'hallwatch_recording_segments_total{camera="tax-1",hall="tax"}' in metrics
    assert 'camera="tax-2"' not in metrics.split("hallwatch_recording_active")[1].split("# HELP")[0]
