"""``hallwatch recordings``: the index listed per camera, and ``--verify`` finding missing,
altered and unknown files against the real SQLite store."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from streams import SegmentClosed
from tests.vms.test_recording_index import T0, indexed, segment
from vms.cli import main
from vms.config import Config
from vms.config_loader import load_config
from vms.recordings import RecordingIndex
from vms.storage import Database, database_url

SITE = """
server:
  data_dir: {data}
recording:
  record: true
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
"""


async def _index(config: Config, count: int) -> list[Path]:
    db = Database(database_url(config))
    await db.start()
    index = RecordingIndex(db, config)
    index.start()
    try:
        made = [segment(config, "tax-1", T0 + timedelta(minutes=n), 60) for n in range(count)]
        for info in made:
            index.on_output_event(info.camera_id, SegmentClosed(info))
        await indexed(index, db, count)
    finally:
        await index.stop()
        await db.stop()
    return [info.path for info in made]


def test_it_lists_the_index_and_verify_finds_what_changed_on_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(SITE.format(data=tmp_path / "data"), encoding="utf-8")
    config = load_config(site)
    files = asyncio.run(_index(config, 4))

    assert main(["recordings", "--config", str(site), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "tax-1: 4 segments" in out and "all files match the index" in out

    files[0].unlink()
    with files[1].open("r+b") as f:  # one byte changed
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 1]))
    stray = segment(config, "tax-2", T0, 60).path  # a file nobody indexed

    assert main(["recordings", "--config", str(site)]) == 0  # listing only reads the index
    assert "tax-1: 4 segments" in capsys.readouterr().out
    assert main(["recordings", "--config", str(site), "--verify"]) == 1
    out = capsys.readouterr().out
    root = config.recordings_dir().resolve()
    assert f"missing: {files[0].relative_to(root).as_posix()}" in out
    assert f"altered (hash differs from the index): {files[1].relative_to(root).as_posix()}" in out
    assert f"not in the index: {stray.relative_to(root).as_posix()}" in out
    assert "3 problems" in out
    assert main(["recordings", "--config", str(site), "--camera", "tax-2", "--verify"]) == 1
    assert "no segment indexed for tax-2" in capsys.readouterr().out
