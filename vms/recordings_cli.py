"""``hallwatch recordings``: what the recordings' index holds, and whether the disk agrees.

Lists, per camera, the segments indexed, their bytes and the time they cover. With
``--verify`` it reads every indexed file again and reports files that are missing
or whose SHA-256 no longer matches the index, and files the index does not know.
It only reads: the index and the files are left as they are, so it may run beside
the service. Exit status 1 when ``--verify`` found a problem.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from vms.config import Config
from vms.recordings import from_ms, segment_files
from vms.storage import Database, database_url
from vms.storage.tables import RecordingSegment


@dataclass(slots=True)
class Check:
    """What ``--verify`` found."""

    checked: int = 0
    missing: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return len(self.missing) + len(self.altered) + len(self.unknown)


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify_files(root: Path, rows: list[tuple[str, str]]) -> Check:
    """Compare ``(relative path, sha256)`` rows with the files below ``root``."""
    check = Check()
    for path, expected in rows:
        check.checked += 1
        file = root / path
        if not file.is_file():
            check.missing.append(path)
        elif sha256_of(file) != expected:
            check.altered.append(path)
    check.unknown = sorted(segment_files(root) - {path for path, _ in rows})
    return check


async def report(config: Config, camera_id: str | None, verify: bool) -> tuple[list[str], int]:
    """The lines to print and the exit status."""
    root = config.recordings_dir().resolve()
    db = Database(database_url(config), lock_wait=config.database.sqlite_lock_wait)
    await db.start()
    try:
        async with db.session() as s:
            query = select(
                RecordingSegment.camera_id,
                func.count(),
                func.sum(RecordingSegment.bytes),
                func.min(RecordingSegment.start_ms),
                func.max(RecordingSegment.end_ms),
            ).group_by(RecordingSegment.camera_id)
            if camera_id is not None:
                query = query.where(RecordingSegment.camera_id == camera_id)
            summary = (await s.execute(query.order_by(RecordingSegment.camera_id))).all()
            rows: list[tuple[str, str]] = []
            if verify:
                listed = select(RecordingSegment.path, RecordingSegment.sha256)
                if camera_id is not None:
                    listed = listed.where(RecordingSegment.camera_id == camera_id)
                rows = [(path, sha) for path, sha in await s.execute(listed)]
    finally:
        await db.stop()
    lines = [f"recordings in {root}"]
    for camera, count, size, first, last in summary:
        lines.append(
            f"  {camera}: {count} segments, {size / 1e6:.1f} MB, "
            f"{from_ms(first):%Y-%m-%d %H:%M:%S} .. {from_ms(last):%Y-%m-%d %H:%M:%S} UTC"
        )
    if not summary:
        lines.append("  no segment indexed" + (f" for {camera_id}" if camera_id else ""))
    if not verify:
        return lines, 0
    check = await asyncio.to_thread(verify_files, root, rows)
    if camera_id is not None:
        check.unknown = [path for path in check.unknown if path.split("/", 1)[0] == camera_id]
    lines.append(f"verified {check.checked} segments against their SHA-256")
    lines += [f"  missing: {path}" for path in check.missing]
    lines += [f"  altered (hash differs from the index): {path}" for path in check.altered]
    lines += [f"  not in the index: {path}" for path in check.unknown]
    lines.append("all files match the index" if not check.problems else f"{check.problems} problems")
    return lines, 1 if check.problems else 0
