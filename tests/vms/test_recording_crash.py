"""The whole service killed with SIGKILL while it records: the next start closes the
open segment within about a second of the kill, indexes it, and records on."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import pytest
from sqlalchemy import select

from vms.recordings import from_ms
from vms.storage import Database
from vms.storage.tables import RecordingSegment

SITE = """
server:
  data_dir: {data}
  log_level: WARNING
recording:
  record: true
  segment_seconds: 2
halls:
  - id: tax
    name: 国家税务总局兴宁市税务局第一税务分厅办税服务厅
centres:
  - id: xingning
    name: 兴宁市政务服务中心
    halls: all
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: demo://tax-1?size=320x180&gop=25
"""


def serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {"HALLWATCH_ADMIN_PASSWORD_XINGNING": "Crash-test-passw0rd"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "vms", "serve", "--config", str(config), "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def files(root: Path, suffix: str) -> list[Path]:
    return sorted(root.glob(f"tax-1/*/*{suffix}"))


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def until(
    predicate: Callable[[], object], within: float, what: str, proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what}; the service said:\n{tail(log)}")
        await asyncio.sleep(0.1)


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


async def test_a_kill_loses_at_most_about_a_second_and_recording_goes_on(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "site.yaml"
    config.write_text(SITE.format(data=data), encoding="utf-8")
    log = tmp_path / "service.log"
    root = data / "recordings"

    first = serve(config, log)
    try:
        await until(
            lambda: len(files(root, ".mp4")) >= 2 and files(root, ".part"), 60, "no segments", first, log
        )
        await asyncio.sleep(1.5)  # well into the open segment
        killed_at = datetime.now(UTC)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    [open_part] = files(root, ".part")
    closed_before = files(root, ".mp4")

    second = serve(config, log)
    try:
        await until(lambda: not open_part.exists(), 30, "the open segment was not recovered", second, log)
        await until(
            lambda: len(files(root, ".mp4")) >= len(closed_before) + 2, 30, "no new segment", second, log
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)

    recovered_file = open_part.with_suffix("")  # name.mp4.part -> name.mp4
    assert recovered_file.exists()
    assert decoded_frames(recovered_file) >= 25  # 1.5 s of a 25 fps camera, less what the kill cut

    db = Database(f"sqlite+aiosqlite:///{data / 'hallwatch.db'}")
    await db.start()
    try:
        async with db.session() as s:
            rows = list(await s.scalars(select(RecordingSegment).order_by(RecordingSegment.start_ms)))
    finally:
        await db.stop()
    [recovered] = [row for row in rows if row.recovered]
    assert recovered.path == recovered_file.relative_to(root).as_posix()
    end = from_ms(recovered.end_ms)
    assert killed_at - timedelta(seconds=1.5) <= end <= killed_at + timedelta(seconds=0.5)
    after = [row for row in rows if row.start_ms > recovered.start_ms]
    assert after, "recording did not go on in a new segment"
    assert all(not row.recovered for row in after)
    assert len(rows) == len(files(root, ".mp4"))  # every file indexed, none twice
