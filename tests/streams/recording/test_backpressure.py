"""A writer that falls behind: the recorder never waits for it, ends the segment, drops to the
next keyframe and counts what it dropped; every file written still decodes from its start."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from streams import CameraSpec, RecordingSpec, RelaySettings, SourceOptions
from streams.hub import Hub
from streams.outputs.base import StreamContext
from streams.recording import Recorder, SegmentClosed, SegmentInfo
from tests.media import encode_h264
from tests.streams.recording.segment_checks import check_segment


async def test_a_writer_that_falls_behind_drops_to_the_next_keyframe(tmp_path: Path) -> None:
    packets = encode_h264(150, gop=10)
    spec = CameraSpec(
        id="cam",
        source=SourceOptions(url="rtsp://127.0.0.1:9/unused"),
        recording=RecordingSpec(directory=tmp_path, segment_seconds=60),
    )
    hub = Hub("cam", queue_packets=1000)
    closed: list[SegmentInfo] = []
    context = StreamContext(
        name="cam",
        stream="main",
        hub=hub,
        audio_hub=None,
        spec=spec,
        settings=RelaySettings(),
        emit=lambda event: closed.append(event.info) if isinstance(event, SegmentClosed) else None,
    )
    largest = max(len(p.data) for p in packets)
    assert spec.recording is not None
    recorder = Recorder(context, spec.recording, max_pending=3 * largest)
    await recorder.start()
    switch = sys.getswitchinterval()
    # The writer thread may not run while the recorder cuts the batch into steps: it falls
    # behind as it would behind a slow disk, whatever this machine's pace.
    sys.setswitchinterval(5.0)
    try:
        for packet in packets:  # all at once: faster than any disk
            hub.publish(packet)
        await asyncio.sleep(0.8)  # the recorder takes what is queued every 0.5 s
    finally:
        sys.setswitchinterval(switch)
        await recorder.stop()
    assert recorder.dropped > 0
    assert recorder.statistics()["dropped"] == recorder.dropped
    assert closed and recorder.segments == len(closed)  # how many depends on the disk's pace
    for info in closed:
        check_segment(info)
