"""What every exported file must satisfy, checked on the file itself: ffprobe reads it without
a complaint, and its top-level boxes are one ``moov`` before the ``mdat``, no fragments."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from streams.recording.boxes import top_level_boxes


def probe(path: Path) -> dict[str, Any]:
    """ffprobe's format and streams of ``path``; fails on any error it reports."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    found: dict[str, Any] = json.loads(result.stdout)
    assert "mp4" in found["format"]["format_name"], found["format"]
    return found


def assert_fast_start(path: Path) -> None:
    with path.open("rb") as file:
        kinds = [box.kind for box in top_level_boxes(file, path.stat().st_size)]
    assert kinds.index(b"moov") < kinds.index(b"mdat") and b"moof" not in kinds, kinds
