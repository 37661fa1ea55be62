"""The recordings' index on the real database (SQLite and PostgreSQL): closed segments
indexed, spans and gaps listed, retention, reconciliation with the disk, alarms."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from streams import RecordingFailed, RecordingResumed, SegmentClosed, SegmentInfo
from vms.alarms import AlarmCentre
from vms.config import Config
from vms.config_loader import parse_config
from vms.recordings import RecordingIndex, Span, gaps_between, spans_of, to_ms
from vms.storage import Database
from vms.storage.tables import RecordingSegment

T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
"""Recent: the index's own retention loop (real time) must leave these segments alone."""


def site(tmp_path: Path, retention: str = "") -> Config:
    return parse_config(
        f"""
server:
  data_dir: {tmp_path / "data"}
recording:
  record: true
  segment_seconds: 60
{retention}
halls:
  - id: tax
    name: 税务大厅
centres:
  - id: xingning
    name: 兴宁市政务服务中心
    halls: all
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: demo://tax-1
  - id: tax-2
    name: 窗口区
    hall: tax
    url: demo://tax-2
    retention_days: 1
""",
        "site.yaml",
    )


def segment(
    config: Config, camera: str, start: datetime, seconds: float, *, write: bool = True
) -> SegmentInfo:
    """A closed segment as a recorder reports it, with a file of a few bytes on disk."""
    path = (
        config.recordings_dir().resolve()
        / camera
        / start.strftime("%Y-%m-%d")
        / start.strftime("%H-%M-%S-%f.mp4")
    )
    data = f"{camera} {start.isoformat()}".encode()
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return SegmentInfo(
        camera_id=camera,
        stream="main",
        path=path,
        start=start,
        end=start + timedelta(seconds=seconds),
        bytes=len(data),
        codec="avc1.64001f",
        audio=None,
        sha256=hashlib.sha256(data).hexdigest(),
    )


async def rows(database: Database) -> int:
    async with database.session() as s:
        return int(await s.scalar(select(func.count()).select_from(RecordingSegment)) or 0)


async def indexed(index: RecordingIndex, database: Database, count: int) -> None:
    for _ in range(200):
        if await rows(database) == count:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"{await rows(database)} rows indexed, not {count}")


def test_spans_merge_segments_a_cut_apart_and_gaps_fill_the_rest() -> None:
    s = 1_800_000_000_000  # milliseconds since the epoch
    rows = [
        (s, s + 60_000),
        (s + 60_040, s + 120_000),  # cut at a keyframe: the same span
        (s + 300_000, s + 360_000),  # after an outage
    ]
    spans = spans_of(rows, s - 10_000, s + 400_000)
    assert spans == [(s, s + 120_000), (s + 300_000, s + 360_000)]
    assert gaps_between(spans, s - 10_000, s + 400_000) == [
        (s - 10_000, s),
        (s + 120_000, s + 300_000),
        (s + 360_000, s + 400_000),
    ]
    assert spans_of(rows, s + 30_000, s + 40_000) == [(s + 30_000, s + 40_000)]  # clipped to the range


async def test_closed_segments_are_indexed_and_listed_as_spans(database: Database, tmp_path: Path) -> None:
    config = site(tmp_path)
    index = RecordingIndex(database, config)
    index.start()
    try:
        for n in range(3):
            index.on_output_event(
                "tax-1", SegmentClosed(segment(config, "tax-1", T0 + timedelta(minutes=n), 60))
            )
        index.on_output_event(
            "tax-1", SegmentClosed(segment(config, "tax-1", T0 + timedelta(minutes=10), 60))
        )
        await indexed(index, database, 4)
    finally:
        await index.stop()
    found = await index.spans("tax-1", "main", T0, T0 + timedelta(hours=1))
    assert found.segments == 4
    assert found.spans == [
        Span(T0, T0 + timedelta(minutes=3)),
        Span(T0 + timedelta(minutes=10), T0 + timedelta(minutes=11)),
    ]
    assert found.gaps[0] == Span(T0 + timedelta(minutes=3), T0 + timedelta(minutes=10))
    assert (await index.spans("tax-2", "main", T0, T0 + timedelta(hours=1))).segments == 0
    async with database.session() as s:
        row = await s.scalar(select(RecordingSegment).order_by(RecordingSegment.start_ms))
    assert row is not None
    assert row.path == f"tax-1/{T0:%Y-%m-%d/%H-%M-%S}-000000.mp4"  # relative to the recordings directory
    assert len(row.sha256) == 64 and row.codec == "avc1.64001f"
    within = await index.segments(
        "tax-1", "main", T0 + timedelta(seconds=90), T0 + timedelta(minutes=10, seconds=1)
    )
    assert [s.start_ms for s in within] == [to_ms(T0 + timedelta(minutes=n)) for n in (1, 2, 10)]
    assert within[0].path == index.root / within[0].relative and within[0].sha256 != ""
    assert await index.next_start("tax-1", "main", T0 + timedelta(minutes=3)) == T0 + timedelta(minutes=10)
    assert await index.next_start("tax-1", "main", T0 + timedelta(minutes=11)) is None


async def test_retention_deletes_files_and_rows_past_each_cameras_days(
    database: Database, tmp_path: Path
) -> None:
    config = site(tmp_path, "  retention_days: 7")
    index = RecordingIndex(database, config)
    now = T0 + timedelta(days=10)
    old = [segment(config, "tax-1", T0 + timedelta(minutes=n), 60) for n in range(2)]  # 10 days old
    kept = [segment(config, "tax-1", now - timedelta(days=6), 60)]
    tax2_old = [segment(config, "tax-2", now - timedelta(days=2), 60)]  # camera keeps 1 day
    tax2_kept = [segment(config, "tax-2", now - timedelta(hours=2), 60)]
    index.start()
    try:
        for info in old + kept + tax2_old + tax2_kept:
            index.on_output_event(info.camera_id, SegmentClosed(info))
        await indexed(index, database, 5)
        assert await index.apply_retention(now) == 3
    finally:
        await index.stop()
    assert [info.path.exists() for info in old + kept + tax2_old + tax2_kept] == [
        False,
        False,
        True,
        False,
        True,
    ]
    assert await rows(database) == 2
    assert not (old[0].path.parent).exists()  # the emptied day's directory went too


async def test_start_up_reconciles_index_and_disk_and_reports_both_ways(
    database: Database, tmp_path: Path
) -> None:
    config = site(tmp_path)
    first = RecordingIndex(database, config)
    first.start()
    lost, kept = segment(config, "tax-1", T0, 60), segment(config, "tax-1", T0 + timedelta(minutes=1), 60)
    for info in (lost, kept):
        first.on_output_event("tax-1", SegmentClosed(info))
    await indexed(first, database, 2)
    await first.stop()
    lost.path.unlink()  # removed by hand
    stray = segment(config, "tax-2", T0, 60)  # a file the index never heard of

    report = await RecordingIndex(database, config).recover()
    assert report.missing_files == {"tax-1": 1}
    assert report.unknown_files == {"tax-2": [f"tax-2/{T0:%Y-%m-%d/%H-%M-%S}-000000.mp4"]}
    assert stray.path.exists()
    assert await rows(database) == 1


async def test_a_takeover_recovers_only_its_cameras(database: Database, tmp_path: Path) -> None:
    """In a cluster the recordings directory is shared: an instance taking over tax-1 must
    leave alone what tax-2's owner is writing, and tax-2's index."""
    config = site(tmp_path)
    first = RecordingIndex(database, config)
    first.start()
    infos = [segment(config, camera, T0, 60) for camera in ("tax-1", "tax-2")]
    for info in infos:
        first.on_output_event(info.camera_id, SegmentClosed(info))
    await indexed(first, database, 2)
    await first.stop()
    for info in infos:
        info.path.unlink()
    writing = infos[1].path.with_name("12-00-00-000000.mp4.part")  # tax-2's owner writes it now
    writing.write_bytes(b"being written")

    report = await RecordingIndex(database, config).recover({"tax-1"})
    assert report.missing_files == {"tax-1": 1}
    assert writing.read_bytes() == b"being written"
    assert await rows(database) == 1, "tax-2's row is its owner's to reconcile"


async def test_a_recording_failure_is_one_alarm_until_it_resumes(database: Database, tmp_path: Path) -> None:
    config = site(tmp_path)
    alarms = AlarmCentre(config)
    index = RecordingIndex(database, config, alarms)
    for _ in range(3):
        index.on_output_event("tax-1", RecordingFailed("tax-1", "main", "the disk is full"))
    index.on_output_event("tax-1", RecordingResumed("tax-1", "main"))
    raised = alarms.alarms({"tax"})
    assert [a.kind for a in raised] == ["recording_resumed", "recording_failed"]
    failed = raised[1]
    assert failed.message == "recording stopped: the disk is full" and failed.unacknowledged
    assert raised[0].resolves == (failed.id,) and raised[0].informational


async def test_the_disk_limit_deletes_the_oldest_segments_of_any_camera_and_raises_an_alarm(
    database: Database, tmp_path: Path
) -> None:
    config = site(tmp_path, "  min_free_bytes: 0")
    alarms = AlarmCentre(config)
    index = RecordingIndex(database, config, alarms)
    made = [
        segment(config, "tax-2", T0, 60),  # the oldest, another camera's
        segment(config, "tax-1", T0 + timedelta(minutes=1), 60),
        segment(config, "tax-1", T0 + timedelta(minutes=2), 60),
        segment(config, "tax-2", T0 + timedelta(minutes=3), 60),
    ]
    index.start()
    try:
        for info in made:
            index.on_output_event(info.camera_id, SegmentClosed(info))
        await indexed(index, database, 4)
        assert await index.guard_disk() == 0  # no max_bytes, no free-space floor
        limited = site(tmp_path, f"  min_free_bytes: 0\n  max_bytes: {made[2].bytes + made[3].bytes}")
        index.config = limited
        assert await index.guard_disk() == 2
        assert await index.guard_disk() == 0  # within the limit now: the guard is quiet
    finally:
        await index.stop()
    assert [info.path.exists() for info in made] == [False, False, True, True]
    assert index.reclaimed == {"tax-2": 1, "tax-1": 1}
    assert sorted(a.kind for a in alarms.alarms({"tax"})) == ["recording_space", "recording_space"]
