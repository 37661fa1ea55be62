"""``bench/record.py --index``: listing one camera's spans out of a month-full index.

Fills a SQLite index (the default store) with ``cameras`` x ``days`` of segments
(one per ``segment_seconds``, with an outage every few hours so there are gaps),
then times :meth:`vms.recordings.RecordingIndex.spans` over the last 30 days of one
camera, and over one day, through the same code the API uses. Prints medians.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from vms.config_loader import parse_config
from vms.recordings import RecordingIndex, to_ms
from vms.storage import Database
from vms.storage.tables import RecordingSegment

SITE = """
server:
  data_dir: {data}
recording:
  record: true
  segment_seconds: {segment_seconds}
halls:
  - id: tax
    name: 税务大厅
centres:
  - id: xingning
    name: 兴宁市政务服务中心
    halls: all
cameras:
{cameras}
"""


def segment_row(
    camera: str,
    path: str,
    start_ms: int,
    end_ms: int,
    *,
    size: int = 150_000_000,
    codec: str = "avc1.640028",
    sha256: str = "0" * 64,
) -> dict[str, object]:
    """One row of ``recording_segments`` (the main stream, no sound)."""
    return {
        "camera_id": camera,
        "stream": "main",
        "path": path,
        "start_ms": start_ms,
        "end_ms": end_ms,
        "bytes": size,
        "codec": codec,
        "audio": None,
        "sha256": sha256,
        "recovered": False,
    }


def synthetic_rows(camera: str, days: int, segment_seconds: int, now: datetime) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    at = now - timedelta(days=days)
    step = timedelta(seconds=segment_seconds)
    rng = random.Random(camera)
    while at < now:
        if rng.random() < segment_seconds / (4 * 3600):  # an outage every ~4 h
            at += timedelta(minutes=rng.randint(1, 30))
            continue
        rows.append(
            segment_row(camera, f"{camera}/{at:%Y-%m-%d/%H-%M-%S-%f}.mp4", to_ms(at), to_ms(at + step))
        )
        at += step
    return rows


async def index_listing(cameras: int, days: int, segment_seconds: int, repeats: int = 20) -> None:
    with tempfile.TemporaryDirectory(prefix="hallwatch-index-") as tmp:
        ids = [f"cam{n:02d}" for n in range(cameras)]
        listed = "".join(f"  - id: {c}\n    name: {c}\n    hall: tax\n    url: demo://{c}\n" for c in ids)
        config = parse_config(
            SITE.format(data=tmp, segment_seconds=segment_seconds, cameras=listed), "bench.yaml"
        )
        db = Database(f"sqlite+aiosqlite:///{Path(tmp) / 'hallwatch.db'}")
        await db.start()
        try:
            now = datetime.now(UTC)
            began = time.perf_counter()
            total = 0
            for camera in ids:
                rows = synthetic_rows(camera, days, segment_seconds, now)
                async with db.session() as s, s.begin():
                    await s.execute(insert(RecordingSegment), rows)
                total += len(rows)
            print(
                f"index: {total} segments ({cameras} cameras x {days} days), filled in "
                f"{time.perf_counter() - began:.1f} s"
            )
            index = RecordingIndex(db, config)
            for label, span in (("30 days", timedelta(days=30)), ("1 day", timedelta(days=1))):
                times, found = [], None
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    found = await index.spans("cam07", "main", now - span, now)
                    times.append(time.perf_counter() - t0)
                assert found is not None
                print(
                    f"spans of one camera over {label}: median {statistics.median(times) * 1000:.1f} ms, "
                    f"max {max(times) * 1000:.1f} ms ({found.segments} segments, {len(found.spans)} spans, "
                    f"{len(found.gaps)} gaps)"
                )
        finally:
            await db.stop()
