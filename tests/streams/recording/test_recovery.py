"""Crash recovery: a recording process killed with SIGKILL leaves a ``.part`` segment, which
``recover`` finishes: cut back to its last complete fragment, hashed, ending at the kill."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams import recover
from tests.rtsp_fixtures import RtspServerFactory
from tests.streams.recording.segment_checks import check_segment, now, part_files

pytestmark = pytest.mark.rtsp

ROOT = Path(__file__).resolve().parents[3]


def killed_while_recording(url: str, directory: Path, record_for: float) -> float:
    """Run the recording service, SIGKILL it ``record_for`` seconds after its segment
    appeared; the wall clock of the kill."""
    with recording_process(url, directory) as proc:
        time.sleep(record_for)
        proc.send_signal(signal.SIGKILL)
        killed = now()
        proc.wait(5)
        return killed


@contextlib.contextmanager
def recording_process(url: str, directory: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The recording service, once its first segment appeared; ended on the way out."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.streams.recording.crash_recorder", url, str(directory)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while not part_files(directory):
            assert proc.poll() is None, "the recording service died"
            assert time.monotonic() < deadline, "no segment was started"
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_killed_recording_is_recovered_up_to_the_kill(
    rtsp_server: RtspServerFactory, tmp_path: Path
) -> None:
    server = rtsp_server({"cam": "320x240@25,300k,gop=25"})
    killed = killed_while_recording(server.url("cam"), tmp_path, record_for=2.5)
    [part] = part_files(tmp_path)
    with part.open("ab") as file:  # as if the power went off in the middle of a fragment
        file.write(b"\x00\x00\x01\x00moof\x00\x00\x00\x10mfhd")

    [info] = recover(tmp_path, "cam", "main")

    assert info.recovered and info.camera_id == "cam" and info.stream == "main"
    assert info.path == part.with_name(part.name.removesuffix(".part")) and part_files(tmp_path) == []
    assert killed - 1.0 < info.end.timestamp() <= killed + 0.05, (killed, info)
    assert info.duration > 2.0
    assert info.codec.startswith("avc1.") and info.audio is None
    decoded = check_segment(info)  # decodes to its end; the sha256 is the file's
    assert decoded.frames >= 50
    assert recover(tmp_path, "cam", "main") == []  # nothing left to do


def test_a_recovery_while_the_writer_still_runs_keeps_its_writes_out_of_the_recovered_file(
    rtsp_server: RtspServerFactory, tmp_path: Path
) -> None:
    """A frozen recording process whose camera was taken over, woken: whatever it still
    writes or closes never reaches the recovered segment."""
    server = rtsp_server({"cam": "320x240@25,300k,gop=25"})
    with recording_process(server.url("cam"), tmp_path) as proc:
        time.sleep(1.5)
        proc.send_signal(signal.SIGSTOP)
        [part] = part_files(tmp_path)
        [info] = recover(tmp_path, "cam", "main")
        assert info.path == part.with_name(part.name.removesuffix(".part")) and not part.exists()
        proc.send_signal(signal.SIGCONT)
        time.sleep(2.0)  # it goes on appending to the file it had open
        assert proc.poll() is None
        proc.terminate()  # a clean stop closes its segment: it cannot take the recovered one's name
        proc.wait(10)
    assert info.path.stat().st_size == info.bytes
    assert hashlib.sha256(info.path.read_bytes()).hexdigest() == info.sha256
    assert sorted(p.name for p in info.path.parent.iterdir()) == [info.path.name]
    assert check_segment(info).frames >= 25


def test_a_part_file_without_a_complete_fragment_is_removed(tmp_path: Path) -> None:
    day = tmp_path / "2026-01-01"
    day.mkdir()
    (day / "00-00-00-000.mp4.part").write_bytes(b"\x00\x00\x00\x18ftypiso5")
    assert recover(tmp_path, "cam", "main") == []
    assert list(day.iterdir()) == []
    assert recover(tmp_path / "missing", "cam", "main") == []
