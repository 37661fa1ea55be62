"""A recording service to kill: records one RTSP camera until it is killed (SIGTERM: a clean stop).

Run by the crash test as ``python -m tests.streams.recording.crash_recorder URL DIRECTORY``;
prints ``STARTED`` once the manager runs.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from streams import StreamManager
from tests.streams.recording.segment_checks import recording_camera
from tests.streams.test_relay_rtsp import SETTINGS


async def main(url: str, directory: Path) -> None:
    manager = StreamManager([recording_camera("cam", url, directory, segment_seconds=60)], SETTINGS)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await manager.start()
    print("STARTED", flush=True)
    await stopping.wait()  # until killed, or told to stop
    await manager.stop()  # the open segment is closed as in any clean stop


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
