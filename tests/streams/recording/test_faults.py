"""What the recorder does when the camera or the disk fails: a camera that goes offline and
comes back leaves a gap between two valid files; a full disk stops recording loudly (one event),
never the service, and recording resumes by itself once space is free."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams import IngestState, RecordingFailed, RecordingResumed, StreamManager
from tests.rtsp_fixtures import RtspServerFactory
from tests.streams.recording.segment_checks import Events, check_segment, recording_camera
from tests.streams.test_relay_rtsp import SETTINGS, until

pytestmark = pytest.mark.rtsp


async def test_a_camera_offline_and_back_leaves_a_gap_between_two_valid_files(
    rtsp_server: RtspServerFactory, tmp_path: Path
) -> None:
    server = rtsp_server({"cam": "320x240@25,300k,gop=25"})
    events = Events()
    manager = StreamManager(
        [recording_camera("cam", server.url("cam"), tmp_path, segment_seconds=30)], SETTINGS
    )
    manager.add_output_listener(events)
    await manager.start()
    try:
        await until(manager, "cam", IngestState.ONLINE, within=10)
        await asyncio.sleep(1.5)  # record a little
        server.stop()
        await events.wait(lambda: len(events.segments()) == 1, within=5)  # closed at the interruption
        server.start()
        await until(manager, "cam", IngestState.ONLINE, within=10)
        await asyncio.sleep(1.5)
    finally:
        await manager.stop()
    first, second = events.segments()
    assert (second.start - first.end).total_seconds() > 0.5
    for info in (first, second):
        assert check_segment(info).frames >= 25


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs, unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


async def test_a_full_disk_stops_recording_loudly_not_the_service_and_recording_resumes(
    rtsp_server: RtspServerFactory, small_disk: Path
) -> None:
    server = rtsp_server({"cam": "320x240@25,1000k,gop=25"})
    ballast = small_disk / "ballast"
    ballast.write_bytes(bytes(2 * 1024 * 1024 - 96 * 1024))  # leaves a second or two of this camera
    events = Events()
    directory = small_disk / "cam"
    manager = StreamManager(
        [recording_camera("cam", server.url("cam"), directory, segment_seconds=2)], SETTINGS
    )
    manager.add_output_listener(events)
    await manager.start()
    try:
        viewer = manager.hub("cam").subscribe()
        await events.wait(lambda: bool(events.of(RecordingFailed)), within=15)
        [failed] = events.of(RecordingFailed)
        assert failed == RecordingFailed("cam", "main", "the disk is full")

        # Retries fail quietly; the camera, its viewers and the service go on.
        await _wait_for(lambda: _stats(manager)["errors"] >= 2, within=10)
        assert len(events.of(RecordingFailed)) == 1 and _stats(manager)["recording"] is False
        assert manager.running and manager.stats("cam").state is IngestState.ONLINE
        before = viewer.delivered
        async with asyncio.timeout(5):
            for _ in range(25):
                await viewer.get()
        assert viewer.delivered >= before + 25
        viewer.close()
        recorded = len(events.segments())

        ballast.unlink()
        await events.wait(lambda: bool(events.of(RecordingResumed)), within=10)
        await events.wait(lambda: len(events.segments()) > recorded, within=10)
    finally:
        await manager.stop()
    assert events.of(RecordingResumed) == [RecordingResumed("cam", "main")]
    assert len(events.of(RecordingFailed)) == 1
    for info in events.segments():  # those cut short by the full disk too
        check_segment(info)


def _stats(manager: StreamManager) -> dict[str, object]:
    return dict(manager.output_statistics("cam")["main"]["recorder"])


async def _wait_for(done: object, within: float) -> None:
    assert callable(done)
    async with asyncio.timeout(within):
        while not done():
            await asyncio.sleep(0.05)
